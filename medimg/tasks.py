"""Scheduled checks of the installation (run by `celery -A medimg beat`)."""

from __future__ import annotations

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


def audit_chain_check(source: str) -> bool:
    """Verify the whole audit chain; on failure, log it and mail ALERT_EMAIL. True when intact."""
    from audit.selectors import audit_chain_verify
    from medimg.mail import alert_integrity_failure

    report = audit_chain_verify()
    if report.ok:
        logger.info("audit chain verified: %d events", report.events)
        return True
    where = f"first bad sequence {report.first_bad}: " if report.first_bad is not None else ""
    message = (
        f"The audit chain does not verify ({source}): after {report.events} good events, "
        f"{where}{report.message} [{report.reason}]. Run `manage.py audit_verify` to see it."
    )
    logger.error("audit chain FAILED: %s", message)
    alert_integrity_failure("audit chain", message)
    return False


@shared_task(acks_late=True)
def verify_audit_chain() -> bool:
    return audit_chain_check("scheduled check")
