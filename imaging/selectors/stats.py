"""Reads for the admin statistics page: aggregates only, never patient data."""

from __future__ import annotations

import math
import statistics
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.db.models.fields.json import KT
from django.db.models.functions import TruncDate
from django.utils import timezone

from imaging.models import (
    JobStatus,
    Region,
    RegionSource,
    Scan,
    ScanStatus,
    SegmentationJob,
)

# The two weekly measures drift is judged on, with the page's labels.
DRIFT_MEASURES = {
    "confidence": "Median detector confidence",
    "regions": "Median regions per image",
}
BASELINE_WEEKS = 4


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


def _per_model(queryset: Any, field: str) -> list[dict[str, Any]]:
    rows = (
        queryset.annotate(
            model_name=KT(f"{field}__model__name"),
            model_version=KT(f"{field}__model__version"),
            model_sha256=KT(f"{field}__model__sha256"),
        )
        .values("model_name", "model_version", "model_sha256")
        .annotate(n=Count("id"))
        .order_by()
    )
    table = [
        {
            "name": row["model_name"] or "",
            "version": row["model_version"] or "",
            "sha256": row["model_sha256"] or "",
            "recorded": row["model_name"] is not None,
            "count": row["n"],
        }
        for row in rows
    ]
    # Most results first; results from before models were recorded last.
    return sorted(table, key=lambda r: (not r["recorded"], -r["count"], r["name"], r["version"]))


def results_per_model() -> dict[str, list[dict[str, Any]]]:
    """Completed scans per detector and completed segmentations per segmentation model, each
    row {"name", "version", "sha256", "recorded", "count"}: one row per distinct weights file,
    so a retrained model whose VERSION was not bumped still shows as a row of its own.
    `recorded` is False for results made before the model was stored with them."""
    return {
        "detectors": _per_model(Scan.objects.filter(status=ScanStatus.COMPLETED), "metrics"),
        "segmentations": _per_model(
            SegmentationJob.objects.filter(status=JobStatus.COMPLETED), "results"
        ),
    }


def _week_start(moment: datetime) -> date:
    day = moment.astimezone(UTC).date()
    return day - timedelta(days=day.weekday())


def _percent(change: float | None) -> int | None:
    return None if change is None or math.isinf(change) else round(change * 100)


def weekly_drift(
    *,
    weeks: int = 12,
    today: date | None = None,
    threshold: float | None = None,
    min_scans: int | None = None,
) -> dict[str, Any]:
    """Per ISO week (Monday to Sunday, UTC, by upload time) of the last `weeks` weeks, oldest
    first: completed images, the median confidence of their detector regions (all of the
    week's pooled; regions a technician drew are left out), the median number of detector
    regions per image, and the detector versions that made them.

    A week is judged against the mean over those of the BASELINE_WEEKS calendar weeks before it
    that have at least `min_scans` images (two such weeks at least, else no judgement; the
    query reaches BASELINE_WEEKS weeks before the first week shown, so it has a baseline too).
    A measure departs
    when |value - mean| > threshold * mean; from a mean of 0 any non-zero value departs.
    Weeks with fewer than `min_scans` images are shown but not judged."""
    threshold = settings.DRIFT_THRESHOLD if threshold is None else threshold
    min_scans = settings.DRIFT_MIN_SCANS if min_scans is None else min_scans
    today = today or timezone.now().date()
    this_week = today - timedelta(days=today.weekday())
    first = this_week - timedelta(weeks=weeks - 1 + BASELINE_WEEKS)
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    completed = Scan.objects.filter(status=ScanStatus.COMPLETED, created_at__gte=start)
    starts = [first + timedelta(weeks=i) for i in range(weeks + BASELINE_WEEKS)]
    table: dict[date, dict[str, Any]] = {
        w: {"counts": [], "confidences": [], "versions": set()} for w in starts
    }
    scans = (
        completed.annotate(
            # The detector's own regions: those a technician drew are not its output.
            n=Count("regions", filter=Q(regions__source=RegionSource.DETECTOR)),
            model_name=KT("metrics__model__name"),
            model_version=KT("metrics__model__version"),
        )
        .values_list("created_at", "n", "model_name", "model_version")
        .order_by()
    )
    for created_at, n, name, version in scans.iterator():
        row = table.get(_week_start(created_at))
        if row is not None:
            row["counts"].append(n)
            if name is not None:
                row["versions"].add(f"{name}, version {version}" if version else name)
    confidences = (
        Region.objects.filter(scan__in=completed, source=RegionSource.DETECTOR)
        .values_list("scan__created_at", "confidence")
        .order_by()
    )
    for created_at, confidence in confidences.iterator():
        row = table.get(_week_start(created_at))
        if row is not None:
            row["confidences"].append(confidence)

    series: list[dict[str, Any]] = []
    for w in starts:
        row = table[w]
        year, number, _ = w.isocalendar()
        enough = len(row["counts"]) >= min_scans
        series.append(
            {
                "week": f"{year}-W{number:02d}",
                "starts": w.isoformat(),
                "current": w == this_week,
                "scans": len(row["counts"]),
                "regions": len(row["confidences"]),
                "enough": enough,
                "values": {
                    "confidence": (
                        statistics.median(row["confidences"]) if row["confidences"] else None
                    ),
                    "regions": statistics.median(row["counts"]) if row["counts"] else None,
                },
                "versions": sorted(row["versions"]),
            }
        )
    for i, week in enumerate(series):
        baseline_rows = [w for w in series[max(0, i - BASELINE_WEEKS) : i] if w["enough"]]
        week["baseline"] = {}
        week["departures"] = {}
        for measure in DRIFT_MEASURES:
            values = [w["values"][measure] for w in baseline_rows]
            values = [v for v in values if v is not None]
            if len(values) < 2:
                week["baseline"][measure] = None
                continue
            mean = statistics.fmean(values)
            week["baseline"][measure] = mean
            value = week["values"][measure]
            if not week["enough"] or value is None:
                continue
            # From a mean of 0 a relative change is undefined: any non-zero value departs.
            change = (value - mean) / mean if mean else (0.0 if value == 0 else float("inf"))
            if abs(change) > threshold:
                week["departures"][measure] = change
        week["drift"] = bool(week["departures"])
        # The same numbers as rows, for a table: one per measure.
        week["measures"] = [
            {
                "key": measure,
                "label": label,
                "value": week["values"][measure],
                "baseline": week["baseline"][measure],
                "change": week["departures"].get(measure),
                # Whole percent; None from a mean of 0 (the page says "from 0").
                "change_percent": _percent(week["departures"].get(measure)),
                "departs": measure in week["departures"],
            }
            for measure, label in DRIFT_MEASURES.items()
        ]
    shown = series[BASELINE_WEEKS:]
    return {
        "weeks": shown,
        "threshold": threshold,
        "threshold_percent": round(threshold * 100),
        "min_scans": min_scans,
        "baseline_weeks": BASELINE_WEEKS,
        "drifting": [w["week"] for w in shown if w["drift"]],
    }
