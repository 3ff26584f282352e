"""Celery tasks of the gateway: thin, take ids. The work is in gateway.forward."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.conf import settings
from django.db import transaction

from gateway.forward import forward_attempt, forwards_due, forwards_queue
from gateway.models import SendStatus

logger = logging.getLogger(__name__)


@shared_task(acks_late=True)
def queue_forwards(*, scan_id: int) -> list[int]:
    """Create the scan's send rows and start each new send."""
    send_ids = forwards_queue(scan_id=scan_id)
    for send_id in send_ids:
        forward_instance.delay(send_id=send_id)
    return send_ids


@shared_task(bind=True, acks_late=True, max_retries=None)
def forward_instance(self: Task, *, send_id: int) -> str | None:
    """One try of one send. A failed try is retried after its backoff (gateway.forward);
    in-process (no broker to hold a delayed message) the retry is left to
    `forward_due_sends`, which beat runs."""
    send = forward_attempt(send_id=send_id)
    if send is None:
        return None
    if send.status == SendStatus.RETRYING and not self.request.is_eager:
        countdown = max(int(settings.DICOM_FORWARD_BACKOFF_SECONDS), 1)
        if send.next_attempt_at is not None:
            countdown = max(int((send.next_attempt_at - send.updated_at).total_seconds()), 1)
        raise self.retry(countdown=countdown)
    return send.status


@shared_task(acks_late=True)
def forward_due_sends(*, late_by: float = 60.0) -> list[int]:
    """Beat: start sends whose retry is overdue (a lost message, a dead worker, or the
    in-process mode's retries)."""
    send_ids = forwards_due(late_by=late_by)
    for send_id in send_ids:
        transaction.on_commit(lambda send_id=send_id: forward_instance.delay(send_id=send_id))
    return send_ids
