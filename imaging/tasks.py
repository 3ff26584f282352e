"""Celery tasks: thin, take ids, enqueued on commit. The work is in imaging.jobs (processing,
segmentation); imaging.services enqueue these tasks."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError

from imaging.jobs.classification import classification_run
from imaging.jobs.erasure import retention_erase_expired
from imaging.jobs.processing import scan_mark_failed, scan_process, scans_stuck
from imaging.jobs.segmentation import segmentation_run
from imaging.models import FailureReason

logger = logging.getLogger(__name__)

# Worth another try: the disk or object store hiccuped, the database connection dropped.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, OperationalError, InterfaceError)
RETRY_BACKOFF_FACTOR = 2
RETRY_BACKOFF_MAX = 300


def failure_reason_for(exc: BaseException) -> FailureReason:
    if isinstance(exc, OSError):
        return FailureReason.STORAGE_FAILED
    if isinstance(exc, DatabaseError):
        return FailureReason.DATABASE_FAILED
    return FailureReason.PROCESSING_ERROR


def _give_up(scan_id: int, exc: BaseException) -> None:
    logger.error("processing scan %s failed for good: %r", scan_id, exc)
    try:
        scan_mark_failed(scan_id=scan_id, reason=failure_reason_for(exc))
    except DatabaseError:
        # The database is what failed; the scan stays "processing" and is requeued later.
        logger.exception("could not mark scan %s failed", scan_id)


@shared_task(bind=True, max_retries=settings.IMAGING_TASK_MAX_RETRIES, acks_late=True)
def process_scan(self: Task, *, scan_id: int) -> str | None:
    """Detect, encrypt and redact one scan. Idempotent: a re-run never duplicates regions.

    Transient errors are retried with exponential backoff and jitter (the same policy as
    Celery's autoretry_for, written out because in-process mode needs it too: there, with no
    broker to hold a delayed retry, the attempt is repeated at once). When retries run out,
    or on any other error, the scan is marked failed with a reason and the error re-raised.
    """
    while True:
        try:
            scan = scan_process(scan_id=scan_id)
            return scan.status if scan is not None else None
        except TRANSIENT_ERRORS as exc:
            if self.request.retries >= self.max_retries:
                _give_up(scan_id, exc)
                raise
            logger.warning("scan %s: transient error %r, retrying", scan_id, exc)
            if not self.request.is_eager:
                countdown = get_exponential_backoff_interval(
                    factor=RETRY_BACKOFF_FACTOR,
                    retries=self.request.retries,
                    maximum=RETRY_BACKOFF_MAX,
                    full_jitter=True,
                )
                raise self.retry(exc=exc, countdown=countdown) from exc
            self.request.retries += 1
        except Exception as exc:
            _give_up(scan_id, exc)
            raise


@shared_task(acks_late=True)
def run_segmentation(*, job_id: int) -> str | None:
    """Run one segmentation job (imaging.jobs.segmentation); a failure marks it failed."""
    job = segmentation_run(job_id=job_id)
    return job.status if job is not None else None


@shared_task(acks_late=True)
def run_classification(*, classification_id: int) -> str | None:
    """Run one classifier on one scan (imaging.jobs.classification); a failure marks it failed."""
    row = classification_run(classification_id=classification_id)
    return row.status if row is not None else None


@shared_task
def requeue_stuck_scans(*, older_than_seconds: int | None = None) -> int:
    """For celery beat: re-enqueue scans whose message was lost or whose worker died (those
    out of attempts are failed instead). imaging.services.processing.scans_requeue does the
    same for a person."""
    ids = scans_stuck(older_than_seconds=older_than_seconds)
    for scan_id in ids:
        process_scan.delay(scan_id=scan_id)
    return len(ids)


@shared_task(acks_late=True)
def erase_expired_scans() -> int:
    """For celery beat: erase completed scans older than MEDIMG_RETENTION_DAYS (none when it is
    not set), each audited as scan_erased by the system (imaging.jobs.erasure)."""
    return len(retention_erase_expired())


@shared_task(name="imaging.tasks.sweep_orphan_files")
def sweep_orphan_files() -> int:
    """Beat: delete stored folders that no scan points at (imaging.jobs.orphans)."""
    from imaging.jobs.orphans import orphans_sweep

    return len(orphans_sweep()["folders"])
