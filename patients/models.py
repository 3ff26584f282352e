from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import Department
from audit.pseudonyms import patient_reference


class PatientQuerySet(models.QuerySet["Patient"]):
    def visible_to(self, user: Any) -> PatientQuerySet:
        """Every query for patient data starts here; this is the one place the rule lives.

        A clinical user (active technician or doctor) sees a patient when
        - they share a department with the patient, or
        - they are on the patient's care team, or
        - they hold an unexpired emergency (break-glass) grant for the patient.
        No one else sees any patient: admins, users without a role, inactive users.

        Each branch is its own subquery of primary keys, so the result has no duplicate rows
        and the caller's annotations (note counts) are not multiplied by joins.
        """
        if user is None or not getattr(user, "is_clinical", False):
            return self.none()
        by_department = Patient.departments.through.objects.filter(department__members=user).values(
            "patient_id"
        )
        by_care_team = Patient.care_team.through.objects.filter(user=user).values("patient_id")
        by_emergency = BreakGlassGrant.objects.active().filter(user=user).values("patient_id")
        return self.filter(
            models.Q(pk__in=by_department)
            | models.Q(pk__in=by_care_team)
            | models.Q(pk__in=by_emergency)
        )


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
    # Who may see the record: the clinical staff of these departments (set on creation to
    # the creating technician's departments; changed through patients.services) ...
    departments = models.ManyToManyField(Department, blank=True, related_name="patients")
    # ... and these named users, wherever they work.
    care_team = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="care_team_patients"
    )

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
        return patient_reference(self.id)


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


class BreakGlassGrantQuerySet(models.QuerySet["BreakGlassGrant"]):
    def active(self) -> BreakGlassGrantQuerySet:
        return self.filter(expires_at__gt=timezone.now(), ended_at__isnull=True)


class BreakGlassGrant(models.Model):
    """Emergency access: a clinical user opened a patient outside their departments and care
    teams, with a typed reason, until `expires_at`. While unexpired, the patient is visible to
    the user (PatientQuerySet.visible_to); an admin marks each grant reviewed afterwards.

    Grants are never deleted: they are the record of who broke the glass. Its user may end one
    early (`ended_at`; `expires_at` keeps the time it was granted until). The workflow is
    patients.emergency.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="break_glass_grants"
    )
    patient = models.ForeignKey(
        Patient, on_delete=models.CASCADE, related_name="break_glass_grants"
    )
    reason = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)

    objects = BreakGlassGrantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [models.Index(fields=["user", "expires_at"])]

    def __str__(self) -> str:
        # No hospital id: admins review these.
        return f"Emergency access {self.pk} to {self.patient}"

    @property
    def is_active(self) -> bool:
        return self.ended_at is None and self.expires_at > timezone.now()
