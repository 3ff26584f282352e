"""Forwarding completed instances to the configured destinations.

    forwards_queue(*, scan_id) -> list[int]             # one row per enabled destination
    forward_attempt(*, send_id) -> ForwardSend | None    # one try, claimed; backoff on failure
    forwards_due(*, late_by=0) -> list[int]              # sends whose retry is due (beat)

What leaves is the de-identified, pixel-redacted DICOM that the export endpoint serves
(imaging.services.deid.scan_export, audited as scan_viewed view=export): never the original,
never before a required review is confirmed (scan_export refuses it, and forwards_queue
does not queue it). Each (scan, destination) has one ForwardSend row: a send already made is
never made again, and a send in progress is not started twice (the row is claimed under a
lock). A failed try waits DICOM_FORWARD_BACKOFF_SECONDS * 2**(attempts-1), at most
DICOM_FORWARD_BACKOFF_MAX_SECONDS; after DICOM_FORWARD_MAX_ATTEMPTS it is failed for good.
"""

from __future__ import annotations

import io
import logging
import uuid
from datetime import timedelta

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE

from audit.models import Outcome
from audit.services import audit_record
from engine.errors import EngineError
from gateway.config import destinations_seed
from gateway.models import (
    DestinationKind,
    ForwardDestination,
    ForwardSend,
    SendStatus,
)
from gateway.receive import ACTION_FORWARDED
from imaging.models import Scan, ScanFormat, ScanStatus
from imaging.services.deid import scan_export

logger = logging.getLogger(__name__)

# A send claimed longer ago than this is taken to be lost with its worker.
SENDING_STALE = timedelta(minutes=10)


class SendError(Exception):
    """The destination did not take the instance (worth another try)."""


def scan_forwardable(scan: Scan) -> bool:
    if scan.format != ScanFormat.DICOM or scan.status != ScanStatus.COMPLETED:
        return False
    return not (scan.needs_review and scan.reviewed_at is None)


def forwards_queue(*, scan_id: int) -> list[int]:
    """A send row per enabled destination for a completed (and, where required, reviewed)
    DICOM scan. Idempotent: returns the ids of the rows still to be sent (the caller,
    gateway.tasks, queues them)."""
    scan = Scan.objects.filter(pk=scan_id).first()
    if scan is None or not scan_forwardable(scan):
        return []
    destinations_seed()
    to_send = []
    for destination in ForwardDestination.objects.filter(enabled=True):
        send, _ = ForwardSend.objects.get_or_create(scan=scan, destination=destination)
        if send.status == SendStatus.PENDING:
            to_send.append(send.pk)
    return to_send


def _backoff(attempts: int) -> timedelta:
    base = settings.DICOM_FORWARD_BACKOFF_SECONDS
    seconds = min(settings.DICOM_FORWARD_BACKOFF_MAX_SECONDS, base * 2 ** max(attempts - 1, 0))
    return timedelta(seconds=seconds)


def _claim(send_id: int) -> ForwardSend | None:
    """The send, marked as being sent; None when it is sent, failed for good, or being sent."""
    with transaction.atomic():
        send = (
            ForwardSend.objects.select_for_update()
            .select_related("destination", "scan")
            .filter(pk=send_id)
            .first()
        )
        if send is None or send.status in (SendStatus.SENT, SendStatus.FAILED):
            return None
        now = timezone.now()
        if send.status == SendStatus.SENDING and send.updated_at > now - SENDING_STALE:
            return None
        send.status = SendStatus.SENDING
        send.attempts += 1
        send.save(update_fields=["status", "attempts", "updated_at"])
        return send


def _store_dimse(destination: ForwardDestination, dataset: Dataset) -> None:
    ae = AE(ae_title=settings.DICOM_AE_TITLE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.DICOM_FORWARD_TIMEOUT
    syntax = dataset.file_meta.TransferSyntaxUID
    ae.add_requested_context(dataset.SOPClassUID, [syntax])
    assoc = ae.associate(
        destination.host, int(destination.port or 104), ae_title=destination.ae_title
    )
    if not assoc.is_established:
        raise SendError("association_failed")
    try:
        status = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        raise SendError("no_response")
    # 0x0000 success; 0xB000, 0xB007, 0xB006 warnings: stored.
    if code != 0x0000 and code not in (0xB000, 0xB006, 0xB007):
        raise SendError(f"status_0x{code:04X}")


def _store_stow(destination: ForwardDestination, data: bytes) -> None:
    boundary = uuid.uuid4().hex
    body = b"".join(
        [
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    if settings.DICOM_FORWARD_STOW_AUTHORIZATION:
        headers["Authorization"] = settings.DICOM_FORWARD_STOW_AUTHORIZATION
    try:
        response = requests.post(
            destination.url, data=body, headers=headers, timeout=settings.DICOM_FORWARD_TIMEOUT
        )
    except requests.RequestException as exc:
        raise SendError(type(exc).__name__) from None
    if response.status_code not in (200, 202):
        raise SendError(f"http_{response.status_code}")


def _send(send: ForwardSend) -> None:
    try:
        data = scan_export(scan=send.scan, actor=None).content
    except EngineError as refusal:
        raise SendError(refusal.code) from None
    if send.destination.kind == DestinationKind.STOW:
        _store_stow(send.destination, data)
    else:
        _store_dimse(send.destination, dcmread(io.BytesIO(data)))


def forward_attempt(*, send_id: int) -> ForwardSend | None:
    """Try one send once. Returns the row as it ends (sent, retrying with next_attempt_at,
    or failed), or None when there was nothing to do."""
    send = _claim(send_id)
    if send is None:
        return None
    error = ""
    try:
        _send(send)
    except SendError as exc:
        error = str(exc)
    except (OSError, RuntimeError, ValueError) as exc:
        error = type(exc).__name__
    now = timezone.now()
    if not error:
        send.status, send.sent_at, send.next_attempt_at, send.last_error = (
            SendStatus.SENT,
            now,
            None,
            "",
        )
    elif send.attempts >= settings.DICOM_FORWARD_MAX_ATTEMPTS:
        send.status, send.next_attempt_at, send.last_error = SendStatus.FAILED, None, error
    else:
        send.status, send.last_error = SendStatus.RETRYING, error
        send.next_attempt_at = now + _backoff(send.attempts)
    with transaction.atomic():
        send.save(
            update_fields=["status", "sent_at", "next_attempt_at", "last_error", "updated_at"]
        )
        audit_record(
            action=ACTION_FORWARDED,
            target=send.scan,
            outcome=Outcome.SUCCESS if not error else Outcome.FAILURE,
            details={
                "destination": send.destination_id,
                "kind": send.destination.kind,
                "attempt": send.attempts,
                "status": send.status,
                **({"error": error} if error else {}),
            },
        )
    if error:
        logger.warning("forward %s (attempt %s) failed: %s", send.pk, send.attempts, error)
    return send


def forwards_due(*, late_by: float = 0.0) -> list[int]:
    """The sends to try now: retries due `late_by` seconds ago or more (a retry message
    lost with its broker), pending sends never tried, and sends claimed by a worker that
    died. Only ids: the caller queues them."""
    now = timezone.now()
    due = ForwardSend.objects.filter(
        status=SendStatus.RETRYING, next_attempt_at__lte=now - timedelta(seconds=late_by)
    )
    pending = ForwardSend.objects.filter(
        status=SendStatus.PENDING, created_at__lte=now - timedelta(seconds=late_by)
    )
    stale = ForwardSend.objects.filter(
        status=SendStatus.SENDING, updated_at__lte=now - SENDING_STALE
    )
    return sorted(
        set(due.values_list("pk", flat=True))
        | set(pending.values_list("pk", flat=True))
        | set(stale.values_list("pk", flat=True))
    )
