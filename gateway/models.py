"""The DICOM gateway's configuration and bookkeeping.

    DicomPeer          a calling AE title and address allowed to associate (C-ECHO, C-STORE)
    ForwardDestination where completed, de-identified instances are sent (C-STORE or STOW-RS)
    ForwardSend        one instance to one destination: its state, attempts and last error
    DicomInstance      the de-identified instance's UIDs and query keys (QIDO-RS reads these)

Nothing here holds an identifying value: peers and destinations are machines, sends name the
scan by id, and DicomInstance keeps only the de-identified (remapped) UIDs and header values.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from accounts.models import Department
from imaging.models import Scan


class DicomPeer(models.Model):
    """A modality or PACS that may send to the listener. An association is accepted only
    from an enabled peer whose AE title and address both match."""

    ae_title = models.CharField(max_length=16)
    # An IP address or host name; "*" accepts the AE title from any address.
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(null=True, blank=True, help_text="informational")
    enabled = models.BooleanField(default=True)
    # The technician account the received instances are filed as: its departments decide
    # who sees the patients the peer creates.
    upload_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="technician account received instances are filed as",
    )
    # The department of care the peer's patients are filed in: a new patient belongs to it,
    # and an existing one joins it (gateway.receive). Empty: DICOM_DEFAULT_DEPARTMENT, else
    # the upload user's departments.
    department = models.ForeignKey(
        Department,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text=(
            "department the patients it sends belong to (empty: the DICOM_DEFAULT_DEPARTMENT "
            "setting, else the upload user's departments)"
        ),
    )
    description = models.CharField(max_length=200, blank=True)
    last_association_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["ae_title", "host"], name="gateway_peer_ae_host")
        ]
        ordering = ["ae_title", "host"]

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}"


class DestinationKind(models.TextChoices):
    DIMSE = "dimse", "C-STORE"
    STOW = "stow", "STOW-RS"


class ForwardDestination(models.Model):
    name = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=8, choices=DestinationKind.choices)
    ae_title = models.CharField(max_length=16, blank=True)
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    # STOW-RS: the service root's studies URL, e.g. https://pacs/dicom-web/studies
    url = models.URLField(max_length=500, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        if self.kind == DestinationKind.STOW:
            return f"{self.name} (STOW-RS {self.url})"
        return f"{self.name} ({self.ae_title}@{self.host}:{self.port})"


class SendStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    RETRYING = "retrying", "Retrying"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class ForwardSend(models.Model):
    """One instance to one destination, at most once: the row is the idempotency key."""

    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="forward_sends")
    destination = models.ForeignKey(
        ForwardDestination, on_delete=models.CASCADE, related_name="sends"
    )
    status = models.CharField(max_length=16, choices=SendStatus.choices, default=SendStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    # A status code or exception class and message; never a header value.
    last_error = models.CharField(max_length=500, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["scan", "destination"], name="gateway_send_scan_destination"
            )
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="gateway_send_due")]
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"scan {self.scan_id} -> {self.destination_id} ({self.status})"


class DicomInstance(models.Model):
    """The de-identified instance of a completed DICOM scan, as QIDO-RS finds it."""

    scan = models.OneToOneField(Scan, on_delete=models.CASCADE, related_name="dicom_instance")
    study_uid = models.CharField(max_length=64, db_index=True)
    series_uid = models.CharField(max_length=64, db_index=True)
    sop_instance_uid = models.CharField(max_length=64, unique=True)
    sop_class_uid = models.CharField(max_length=64)
    transfer_syntax_uid = models.CharField(max_length=64, blank=True)
    modality = models.CharField(max_length=16, blank=True)
    study_date = models.CharField(max_length=8, blank=True)
    instance_number = models.IntegerField(null=True, blank=True)
    # The de-identified header's QIDO attributes in DICOM JSON (PS3.18 F.2).
    study_json = models.JSONField(default=dict)
    series_json = models.JSONField(default=dict)
    instance_json = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["study_uid", "series_uid", "instance_number", "id"]

    def __str__(self) -> str:
        return f"instance of scan {self.scan_id}"


class ReceivedInstance(models.Model):
    """An instance already received, by a keyed hash of its SOP Instance UID as sent (the UID
    is an identifier: it is not kept in clear). A peer that sends the same instance again
    (a retry after a lost response, a PACS re-sending a study) is answered with success and
    nothing is stored twice. `scan` is empty while the first copy is being stored."""

    sop_hash = models.CharField(max_length=64, unique=True)
    scan = models.ForeignKey(
        Scan, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"received instance of scan {self.scan_id}"


class ListenerHeartbeat(models.Model):
    """A running `manage.py dicom_listener`, as it last reported itself: it writes `beat_at`
    every HEARTBEAT_SECONDS (gateway.health) and `stopped_at` when it stops cleanly. The
    statistics page calls a listener down when its beat is older than three intervals."""

    # AE title, host and port it listens on: one row per listener.
    name = models.CharField(max_length=300, unique=True)
    hostname = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    tls = models.BooleanField(default=False)
    started_at = models.DateTimeField()
    beat_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
