from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models.query import ModelIterable

from audit.pseudonyms import pseudonymised_fields


class Action(models.TextChoices):
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOGOUT = "logout"
    TOKEN_REFRESHED = "token_refreshed"
    USER_REGISTERED = "user_registered"
    USER_CREATED = "user_created"
    ADMIN_CHANGE = "admin_change"
    REQUEST_REFUSED = "request_refused"
    PATIENT_CREATED = "patient_created"
    PATIENT_VIEWED = "patient_viewed"
    PATIENT_LISTED = "patient_listed"
    PATIENT_UPDATED = "patient_updated"
    PATIENT_NOTE_ADDED = "patient_note_added"
    PATIENT_DEPARTMENTS_CHANGED = "patient_departments_changed"
    PATIENT_CARE_TEAM_CHANGED = "patient_care_team_changed"
    # A technician tried to create a patient whose hospital id is already a record they cannot
    # see (another department's): refused with a neutral 409; target the existing record.
    PATIENT_CREATE_REFUSED = "patient_create_refused", "Patient creation refused"
    AUDIT_EXPORTED = "audit_exported"
    AUDIT_PATIENT_SEARCHED = "audit_patient_searched"
    SCAN_UPLOADED = "scan_uploaded"
    SCAN_PROCESSED = "scan_processed"
    SCAN_FAILED = "scan_failed"
    SCAN_VIEWED = "scan_viewed"
    SCAN_RESTORED = "scan_restored"
    REGION_DECRYPTED = "region_decrypted"
    REGIONS_EDITED = "regions_edited"
    REGION_REMOVAL_REQUESTED = "region_removal_requested"
    REGION_REMOVAL_APPROVED = "region_removal_approved"
    REGION_REMOVAL_REJECTED = "region_removal_rejected"
    KEY_EXCHANGED = "key_exchanged"
    KEYS_ROTATED = "keys_rotated"
    SEGMENTATION_REQUESTED = "segmentation_requested"
    SEGMENTATION_COMPLETED = "segmentation_completed"
    SEGMENTATION_FAILED = "segmentation_failed"
    SEGMENTATION_VIEWED = "segmentation_viewed"
    # Classifier plug-ins (issue 18 item 5): a doctor runs a registered classifier on a scan.
    CLASSIFICATION_REQUESTED = "classification_requested"
    CLASSIFICATION_COMPLETED = "classification_completed"
    CLASSIFICATION_FAILED = "classification_failed"
    CLASSIFICATION_VIEWED = "classification_viewed"
    # The DICOM gateway (gateway/). An association: outcome success (accepted) or refused
    # (rejected). An instance by C-STORE or STOW-RS: success (stored, or a duplicate
    # answered) or refused (the DICOM status in details). A forward: success (sent) or
    # failure (the error in details).
    DICOM_ASSOCIATION = "dicom_association", "DICOM association"
    DICOM_RECEIVED = "dicom_received", "DICOM instance received"
    DICOM_FORWARDED = "dicom_forwarded", "DICOM forward"
    # DICOMweb reads: a QIDO-RS search (level and result count) and a WADO-RS metadata read
    # (one per instance). Pixels served by WADO-RS are the de-identified export, audited by
    # the export service as scan_viewed view=export.
    DICOMWEB_SEARCHED = "dicomweb_searched", "DICOMweb search"
    DICOMWEB_RETRIEVED = "dicomweb_retrieved", "DICOMweb retrieval"
    # Emergency (break-glass) access, patients.emergency: a grant opened (target the patient,
    # details the grant, reason and expiry), refused (an unknown id; details the id's keyed
    # hash), ended early by its user, and marked reviewed by an admin. Every other event by a
    # user who sees the patient only through a grant carries `break_glass: <grant id>`.
    BREAK_GLASS_OPENED = "break_glass_opened", "Emergency access opened"
    BREAK_GLASS_REFUSED = "break_glass_refused", "Emergency access refused"
    BREAK_GLASS_ENDED = "break_glass_ended", "Emergency access ended early"
    BREAK_GLASS_REVIEWED = "break_glass_reviewed", "Emergency access reviewed"
    # Erasure by crypto-shredding (imaging.jobs.erasure): target the patient (as its reference)
    # or the scan; details the scans' numbers, how (admin page, command, retention, re-applied
    # after a restore) and the reason's SHA-256. No name, hospital id or file name.
    PATIENT_ERASED = "patient_erased", "Patient erased"
    SCAN_ERASED = "scan_erased", "Scan erased"
    # Django's password reset (medimg.password_reset): details `stage` requested (a form sent;
    # the address only as a keyed hash) or completed (a new password set through the link).
    PASSWORD_RESET = "password_reset", "Password reset"


class Outcome(models.TextChoices):
    SUCCESS = "success"
    REFUSED = "refused"
    FAILURE = "failure"


class _PseudonymisedIterable(ModelIterable):
    """Events as an admin may read them: see AuditEventQuerySet.pseudonymised."""

    def __iter__(self) -> Iterator[Any]:
        for event in super().__iter__():
            event.target_id, event.details = pseudonymised_fields(
                event.target_type, event.target_id, event.details
            )
            event.shown_only = True
            yield event


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def pseudonymised(self) -> AuditEventQuerySet:
        """The events with patient references in place of hospital ids and keyed hashes in
        place of search terms, for events written before pseudonyms (audit.pseudonyms).

        The mapping happens in memory as rows are read; the stored rows, and so the chain,
        never change. Such an instance refuses to be saved.
        """
        clone = self.all()
        clone._iterable_class = _PseudonymisedIterable
        return clone


class AuditEvent(models.Model):
    """One append-only, hash-chained entry. Never updated or deleted (PostgreSQL enforces it)."""

    sequence = models.PositiveBigIntegerField(unique=True)
    created_at = models.DateTimeField()
    # No database constraint: deleting a user must never touch the log, and the log keeps
    # a copy of the username for when the user is gone.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_username = models.CharField(max_length=150, blank=True)
    role = models.CharField(max_length=16, blank=True)
    action = models.CharField(max_length=32, choices=Action.choices)
    target_type = models.CharField(max_length=32, blank=True)
    target_id = models.CharField(max_length=128, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCESS)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    details = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()
    # Set on instances read through `pseudonymised()`: their fields are not the stored ones.
    shown_only = False

    class Meta:
        ordering = ["sequence"]
        indexes = [
            models.Index(fields=["created_at"]),
            models.Index(fields=["action", "created_at"]),
            models.Index(fields=["target_type", "target_id"]),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} by {self.actor_username or '-'}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.shown_only:
            raise ValueError("An event read for display is not the stored event; never save it.")
        super().save(*args, **kwargs)


class AuditAnchor(models.Model):
    """The chain head, signed with a key kept outside the database.

    Deleting the newest events leaves a chain that still links; the anchor is how
    `audit_verify` notices the truncation. There is one row (pk=1), created by migration.
    """

    sequence = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64)
    mac = models.CharField(max_length=64, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"head #{self.sequence} {self.hash[:12]}"
