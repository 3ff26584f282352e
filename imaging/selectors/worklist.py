"""Worklists on the home pages.

Technicians: processed images nobody has confirmed yet, flagged ones first. Doctors: regions a
technician asked to remove, oldest request first (imaging.services.review: a removal shows pixels,
so
it waits for a doctor)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models import Count, QuerySet
from django.http import HttpRequest

from audit.models import Action
from audit.services import audit_record
from imaging.models import Region, Scan, ScanStatus

WORKLIST_SIZE = 10


def scan_review_worklist(
    *, user: Any, request: HttpRequest | None = None, limit: int = WORKLIST_SIZE
) -> tuple[Sequence[Scan], int]:
    """Up to `limit` completed, unconfirmed scans (needs-review and duplicates first, then the
    oldest), and how many there are in all. Audited: it names patients and their images."""
    pending: QuerySet[Scan] = Scan.objects.visible_to(user).filter(
        status=ScanStatus.COMPLETED, reviewed_at__isnull=True
    )
    total = pending.count()
    scans = list(
        pending.select_related("patient")
        .annotate(region_count=Count("regions"))
        .defer("wrapped_key", "identity_ciphertext", "metrics", "qc", "deid_report")
        .order_by("-needs_review", "-possible_duplicate", "created_at", "id")[:limit]
    )
    if scans:
        audit_record(
            action=Action.PATIENT_LISTED,
            actor=user,
            request=request,
            details={"view": "review worklist", "scans": [scan.pk for scan in scans]},
        )
    return scans, total


def region_removal_worklist(
    *, user: Any, request: HttpRequest | None = None, limit: int = WORKLIST_SIZE
) -> tuple[list[Region], int]:
    """Up to `limit` regions with a removal waiting for a decision (oldest request first) on
    scans `user` may see, and how many there are in all. Audited: it names patients."""
    pending = Region.objects.visible_to(user).filter(removal_requested_at__isnull=False)
    total = pending.count()
    regions = list(
        pending.select_related("scan__patient", "removal_requested_by")
        .defer("ciphertext", "scan__wrapped_key", "scan__identity_ciphertext", "scan__metrics")
        .order_by("removal_requested_at", "id")[:limit]
    )
    if regions:
        audit_record(
            action=Action.PATIENT_LISTED,
            actor=user,
            request=request,
            details={
                "view": "region removal worklist",
                "scans": sorted({region.scan_id for region in regions}),
            },
        )
    return regions, total
