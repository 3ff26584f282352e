"""The admin statistics page: processing counts and times, regions per image, detection
classes and failures. Numbers are rendered as tables (readable without JavaScript); the
same numbers feed the Chart.js charts through json_script (static/js/stats.js)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views import View

from accounts.mixins import AdminPageMixin
from imaging.models import FailureReason, ScanStatus
from imaging.selectors.panels import statistics_panels
from imaging.selectors.scans import processing_stats
from imaging.selectors.stats import (
    DRIFT_MEASURES,
    processing_by_day,
    regions_histogram,
    results_per_model,
    weekly_drift,
)

DAYS = 14
WEEKS = 12


def _charts(stats: dict[str, Any], daily: list[dict[str, Any]], histogram: dict[str, int]) -> dict:
    status_labels = dict(ScanStatus.choices)
    failure_labels = dict(FailureReason.choices)
    return {
        "daily": {
            "labels": [row["day"] for row in daily],
            "series": [
                {
                    "label": status_labels[s.value],
                    "key": s.value,
                    "data": [r[s.value] for r in daily],
                }
                for s in ScanStatus
            ],
        },
        "timings": {
            "labels": ["Total", "Detection", "Encryption"],
            "median": [stats[k]["median"] for k in ("total_ms", "detection_ms", "encryption_ms")],
            "p95": [stats[k]["p95"] for k in ("total_ms", "detection_ms", "encryption_ms")],
        },
        "regions": {"labels": list(histogram), "data": list(histogram.values())},
        "classes": {"labels": list(stats["classes"]), "data": list(stats["classes"].values())},
        "failures": {
            "labels": [failure_labels.get(k, k) for k in stats["failure_reasons"]],
            "data": list(stats["failure_reasons"].values()),
        },
    }


class StatisticsPageView(AdminPageMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        stats = processing_stats(since=None, until=None)
        daily = processing_by_day(days=DAYS)
        histogram = regions_histogram()
        status_labels = dict(ScanStatus.choices)
        failure_labels = dict(FailureReason.choices)
        context = {
            "stats": stats,
            "days": DAYS,
            "by_status": [(status_labels[k], k, v) for k, v in stats["by_status"].items()],
            "failures": sorted(
                ((failure_labels.get(k, k), v) for k, v in stats["failure_reasons"].items()),
                key=lambda row: -row[1],
            ),
            "classes": sorted(stats["classes"].items(), key=lambda row: -row[1]),
            "timings": [
                ("Total", stats["total_ms"]),
                ("Detection", stats["detection_ms"]),
                ("Encryption", stats["encryption_ms"]),
            ],
            "charts": _charts(stats, daily, histogram),
            # Cards other apps add (the DICOM gateway's health): imaging.selectors.panels.
            "panels": statistics_panels(),
            "per_model": results_per_model(),
            "drift": weekly_drift(weeks=WEEKS),
            "drift_measures": DRIFT_MEASURES,
        }
        return render(request, "stats/statistics.html", context)
