"""Reads for the admin statistics page: aggregates only, never patient data."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from imaging.models import Scan, ScanStatus


def processing_by_day(*, days: int = 14, today: date | None = None) -> list[dict[str, Any]]:
    """Uploads per UTC day for the last `days` days (oldest first), split by final status."""
    today = today or timezone.now().date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    rows = (
        Scan.objects.filter(created_at__gte=start)
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    table = {first + timedelta(days=i): {s.value: 0 for s in ScanStatus} for i in range(days)}
    for row in rows:
        if row["day"] in table:
            table[row["day"]][row["status"]] = row["n"]
    return [{"day": day.isoformat(), **counts} for day, counts in table.items()]


def regions_histogram(*, top: int = 10) -> dict[str, int]:
    """How many completed images have 0, 1, ... regions (the last bucket is `top`+)."""
    counts = (
        Scan.objects.filter(status=ScanStatus.COMPLETED)
        .annotate(n=Count("regions"))
        .values_list("n", flat=True)
        .order_by()
    )
    buckets = {str(i): 0 for i in range(top)}
    buckets[f"{top}+"] = 0
    for n in counts.iterator():
        buckets[str(n) if n < top else f"{top}+"] += 1
    return buckets
