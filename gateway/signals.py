"""The forwarding hook: a post_save receiver on the audit log.

A scan's completion is written as a scan_processed event, and a technician's confirmed
review as regions_edited with change=confirmed (imaging.services); both are committed with
the change they describe. After that commit, the scan's de-identified instance is indexed for
QIDO-RS and its forwards are queued (gateway.forward decides whether it may leave yet). This
keeps imaging's processing code unaware of the gateway.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models.signals import post_save

from audit.models import Action, AuditEvent
from gateway.dicomweb_index import instance_index
from gateway.tasks import queue_forwards

logger = logging.getLogger(__name__)


def _completed_or_confirmed(event: AuditEvent) -> bool:
    if event.target_type != "scan" or not event.target_id.isdigit():
        return False
    if event.action == Action.SCAN_PROCESSED:
        return True
    details = event.details if isinstance(event.details, dict) else {}
    return event.action == Action.REGIONS_EDITED and details.get("change") == "confirmed"


def _after_commit(scan_id: int, processed: bool) -> None:
    if processed:
        try:
            instance_index(scan_id=scan_id)
        except Exception:  # noqa: BLE001 - the index is rebuilt on demand; never fail the scan
            logger.exception("indexing scan %s for DICOMweb failed", scan_id)
    queue_forwards.delay(scan_id=scan_id)


def on_audit_event(sender: Any, instance: AuditEvent, created: bool, **kwargs: Any) -> None:
    if not created or not _completed_or_confirmed(instance):
        return
    scan_id = int(instance.target_id)
    processed = instance.action == Action.SCAN_PROCESSED
    transaction.on_commit(lambda: _after_commit(scan_id, processed), robust=True)


post_save.connect(on_audit_event, sender=AuditEvent, dispatch_uid="gateway_forward_on_audit")
