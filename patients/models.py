from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils.crypto import salted_hmac


class PatientQuerySet(models.QuerySet["Patient"]):
    def visible_to(self, user: Any) -> PatientQuerySet:
        """Every query for patient data starts here: clinical roles see patients, no one else."""
        if user is None or not getattr(user, "is_clinical", False):
            return self.none()
        return self.all()


class Patient(models.Model):
    # The hospital's own patient identifier (MRN), kept as given.
    id = models.CharField(primary_key=True, max_length=64)
    name = models.CharField(max_length=200)
    age = models.PositiveSmallIntegerField(null=True, blank=True)
    note = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PatientQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "id"]
        # Sorting by name; the default order and the date filters. (Substring search cannot
        # use a B-tree index; add a trigram index on PostgreSQL if lists grow large.)
        indexes = [models.Index(fields=["name"]), models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        # Not the hospital id: str() ends up in admin pages, log lines and LogEntry rows,
        # which people without a clinical role read.
        return f"Patient {self.reference}"

    @property
    def reference(self) -> str:
        """A short keyed pseudonym of the id: stable, but not reversible without SECRET_KEY.

        A plain hash of a hospital id could be reversed by hashing every possible id. Rotating
        SECRET_KEY changes every reference; nothing stores them.
        """
        digest = salted_hmac("patients.Patient.reference", self.id, algorithm="sha256")
        return digest.hexdigest()[:12]


class PatientNote(models.Model):
    """A doctor's dated note on the record; notes are added, never edited."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"Note {self.pk}"
