"""Worklists on the home pages.

Technicians: processed images nobody has confirmed yet, flagged ones first. Doctors: regions a
technician asked to remove, oldest request first (imaging.services.review: a removal shows pixels,
so
it waits for a doctor)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.db.models import Count, QuerySet
from django.http import HttpRequest

from audit.models import Action
from audit.services import audit_record
from imaging.models import Region, Scan, ScanStatus

WORKLIST_SIZE = 10

T = TypeVar("T")


@dataclass(frozen=True)
class WorklistPage(Generic[T]):
    """One page of a worklist: its items, the page number (1-based) and how many in all."""

    items: Sequence[T]
    number: int
    total: int
    per_page: int

    @property
    def num_pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.num_pages

    @property
    def start(self) -> int:
        """The 1-based position of the first item shown (0 when empty)."""
        return (self.number - 1) * self.per_page + 1 if self.items else 0

    @property
    def end(self) -> int:
        return (self.number - 1) * self.per_page + len(self.items)


def page_number(value: Any) -> int:
    """A page number from a query string: anything that is not a positive integer is page 1."""
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return 1
    return max(1, number)


def _bounds(total: int, page: int, per_page: int) -> tuple[int, int]:
    # A page past the end (the list shrank since the link was made) shows the last page.
    last = max(1, -(-total // per_page))
    number = min(max(1, page), last)
    return number, (number - 1) * per_page


def scan_review_worklist(
    *,
    user: Any,
    request: HttpRequest | None = None,
    page: int = 1,
    per_page: int = WORKLIST_SIZE,
) -> WorklistPage[Scan]:
    """One page of the completed, unconfirmed scans (needs-review and duplicates first, then the
    oldest), and how many there are in all. Audited: it names patients and their images."""
    pending: QuerySet[Scan] = Scan.objects.visible_to(user).filter(
        status=ScanStatus.COMPLETED, reviewed_at__isnull=True
    )
    total = pending.count()
    number, offset = _bounds(total, page, per_page)
    scans = list(
        pending.select_related("patient")
        .annotate(region_count=Count("regions"))
        .defer("wrapped_key", "identity_ciphertext", "metrics", "qc", "deid_report")
        .order_by("-needs_review", "-possible_duplicate", "created_at", "id")[
            offset : offset + per_page
        ]
    )
    if scans:
        audit_record(
            action=Action.PATIENT_LISTED,
            actor=user,
            request=request,
            details={
                "view": "review worklist",
                "page": number,
                "scans": [scan.pk for scan in scans],
            },
        )
    return WorklistPage(items=scans, number=number, total=total, per_page=per_page)


def region_removal_worklist(
    *,
    user: Any,
    request: HttpRequest | None = None,
    page: int = 1,
    per_page: int = WORKLIST_SIZE,
) -> WorklistPage[Region]:
    """One page of the regions with a removal waiting for a decision (oldest request first) on
    scans `user` may see, and how many there are in all. Audited: it names patients."""
    pending = Region.objects.visible_to(user).filter(removal_requested_at__isnull=False)
    total = pending.count()
    number, offset = _bounds(total, page, per_page)
    regions = list(
        pending.select_related("scan__patient", "removal_requested_by")
        .defer("ciphertext", "scan__wrapped_key", "scan__identity_ciphertext", "scan__metrics")
        .order_by("removal_requested_at", "id")[offset : offset + per_page]
    )
    if regions:
        audit_record(
            action=Action.PATIENT_LISTED,
            actor=user,
            request=request,
            details={
                "view": "region removal worklist",
                "page": number,
                "scans": sorted({region.scan_id for region in regions}),
            },
        )
    return WorklistPage(items=regions, number=number, total=total, per_page=per_page)
