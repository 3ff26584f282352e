"""Processing, from the request side: queue a scan's processing after commit, requeue scans
stuck in uploaded/processing, reprocess failed ones. The work itself is a job
(imaging.jobs.processing), run by the imaging.tasks.process_scan task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction

from audit.models import Action
from audit.services import audit_record
from imaging.jobs.processing import scans_stuck
from imaging.models import Scan, ScanStatus
from imaging.tasks import process_scan


def scan_process_on_commit(scan_id: int) -> None:
    """Queue processing once the transaction commits (in-process mode: run it then).

    robust: a broker outage must not turn a committed upload into a 500 (the scan stays
    "uploaded" and `scans_requeue` picks it up), nor, in-process, a processing error (the
    task has already failed the scan with its reason). A lambda and not functools.partial:
    Django names a failing robust hook by its __qualname__, which a partial lacks, and that
    AttributeError was the 500.
    """
    transaction.on_commit(lambda: process_scan.delay(scan_id=scan_id), robust=True)


def scans_requeue(*, older_than_seconds: int | None = None) -> list[int]:
    """Enqueue scans stuck in uploaded/processing (a lost message or a dead worker); those
    already tried IMAGING_MAX_ATTEMPTS times are failed (too_many_attempts) instead."""
    ids = scans_stuck(older_than_seconds=older_than_seconds)
    for scan_id in ids:
        process_scan.delay(scan_id=scan_id)
    return ids


def scans_reprocess(*, scan_ids: Sequence[int], actor: Any = None) -> list[int]:
    """Put failed or stuck scans back to "uploaded" and queue them after commit. A person
    decided to try again: the attempt count starts afresh."""
    with transaction.atomic():
        scans = list(
            Scan.objects.select_for_update()
            .filter(pk__in=scan_ids)
            .exclude(status=ScanStatus.COMPLETED)
        )
        for scan in scans:
            scan.status = ScanStatus.UPLOADED
            scan.failure_reason = ""
            scan.attempts = 0
            scan.save(update_fields=["status", "failure_reason", "attempts", "updated_at"])
            audit_record(
                action=Action.ADMIN_CHANGE,
                actor=actor,
                target=scan,
                details={"change": "requeued"},
            )
            scan_process_on_commit(scan.id)
    return [scan.id for scan in scans]
