"""Results per model version and weekly detector drift (imaging.selectors.stats), and the
admin statistics page that shows them.

Scans are rows made here with their created_at moved into past ISO weeks: the selector
reads only rows (status, created_at, metrics["model"], regions), never files.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from django.test import Client

from imaging.models import (
    JobStatus,
    Region,
    RegionSource,
    Scan,
    ScanStatus,
    SegmentationJob,
    SegmentationModel,
)
from imaging.selectors.stats import results_per_model, weekly_drift

pytestmark = pytest.mark.django_db

TODAY = date(2026, 12, 3)  # a Thursday in ISO week 2026-W49
THIS_MONDAY = date(2026, 11, 30)
DETECTOR_V1 = {"name": "detector/best.onnx", "version": "1", "sha256": "a" * 64, "weights": "x"}
DETECTOR_V2 = {"name": "detector/best.onnx", "version": "2", "sha256": "b" * 64, "weights": "x"}


def drift_scan(
    patient: Any,
    *,
    weeks_ago: int,
    confidences: list[float],
    model: dict[str, str] | None = DETECTOR_V1,
    status: str = ScanStatus.COMPLETED,
    drawn: int = 0,
) -> Scan:
    scan = Scan.objects.create(
        patient=patient,
        original_filename="x.png",
        format="png",
        size_bytes=1,
        width=64,
        height=64,
        pixel_dtype="uint8",
        pixels_sha256="0" * 64,
        status=status,
        original_path="nowhere",
        wrapped_key=b"k",
        key_id="k",
        metrics={"model": model} if model else {},
    )
    # Tuesday noon UTC of that week: far from the week's edges in any time zone.
    moment = datetime.combine(
        THIS_MONDAY - timedelta(weeks=weeks_ago) + timedelta(days=1), time(12), tzinfo=UTC
    )
    Scan.objects.filter(pk=scan.pk).update(created_at=moment)
    boxes = [(c, RegionSource.DETECTOR) for c in confidences]
    # Regions a technician drew (confidence 1.0): never part of the detector's figures.
    boxes += [(1.0, RegionSource.MANUAL)] * drawn
    Region.objects.bulk_create(
        Region(
            scan=scan,
            index=i,
            label="phi_text",
            confidence=c,
            source=source,
            x1=0,
            y1=0,
            x2=4,
            y2=4,
            ciphertext=b"c",
            dtype="uint8",
        )
        for i, (c, source) in enumerate(boxes)
    )
    return scan


def stable_weeks(patient: Any, weeks: range, *, per_week: int = 5) -> None:
    """Each week: `per_week` images with 2 regions at confidences near 0.80 (median 0.80)."""
    for w in weeks:
        for i in range(per_week):
            drift_scan(patient, weeks_ago=w, confidences=[0.78 + 0.01 * (i % 3), 0.80], drawn=i % 2)


def test_a_stable_series_raises_no_warning(patient: Any) -> None:
    stable_weeks(patient, range(7, -1, -1))
    drift = weekly_drift(weeks=8, today=TODAY, threshold=0.25, min_scans=5)
    weeks = drift["weeks"]
    assert [w["week"] for w in weeks][-1] == "2026-W49" and weeks[-1]["current"]
    assert len(weeks) == 8
    # The first weeks shown had only older weeks as baseline: the query reaches back 4 more.
    assert weeks[0]["baseline"]["confidence"] is None  # nothing before week 7 ago
    assert weeks[3]["baseline"]["confidence"] == pytest.approx(0.80)
    for week in weeks:
        assert week["scans"] == 5
        assert week["values"]["confidence"] == pytest.approx(0.80)
        assert week["values"]["regions"] == 2  # manual regions not counted
        assert week["versions"] == ["detector/best.onnx, version 1"]
    assert drift["drifting"] == []
    assert not any(w["drift"] for w in weeks)


def test_a_week_whose_confidence_falls_is_flagged_and_others_are_not(patient: Any) -> None:
    stable_weeks(patient, range(7, 1, -1))
    # Two weeks ago the detector changed: confidences near 0.5, one region per image.
    for _ in range(5):
        drift_scan(patient, weeks_ago=1, confidences=[0.50], model=DETECTOR_V2)
    drift = weekly_drift(weeks=8, today=TODAY, threshold=0.25, min_scans=5)
    by_week = {w["week"]: w for w in drift["weeks"]}
    drifting = by_week["2026-W48"]
    assert drift["drifting"] == ["2026-W48"]
    assert drifting["drift"]
    # (0.50 - 0.80) / 0.80 = -37.5 % confidence; regions 1 vs 2 = -50 %.
    assert drifting["departures"]["confidence"] == pytest.approx(-0.375)
    assert drifting["departures"]["regions"] == pytest.approx(-0.5)
    rows = {m["key"]: m for m in drifting["measures"]}
    assert rows["confidence"]["change_percent"] == -38 and rows["confidence"]["departs"]
    assert drifting["versions"] == ["detector/best.onnx, version 2"]
    # This week has no images: shown, not judged.
    assert by_week["2026-W49"]["scans"] == 0 and not by_week["2026-W49"]["drift"]
    # A threshold above the change: no warning.
    assert weekly_drift(weeks=8, today=TODAY, threshold=0.6, min_scans=5)["drifting"] == []


def test_a_small_drift_under_the_threshold_and_thin_weeks_are_not_flagged(
    patient: Any,
) -> None:
    stable_weeks(patient, range(7, 1, -1))
    # 0.70 vs 0.80 is -12.5 %: under 25 %.
    for _ in range(5):
        drift_scan(patient, weeks_ago=1, confidences=[0.70, 0.70])
    # Two images with very low confidence this week: fewer than min_scans, not judged.
    for _ in range(2):
        drift_scan(patient, weeks_ago=0, confidences=[0.1])
    drift = weekly_drift(weeks=8, today=TODAY, threshold=0.25, min_scans=5)
    assert drift["drifting"] == []
    current = drift["weeks"][-1]
    assert current["scans"] == 2 and not current["enough"]
    assert current["values"]["confidence"] == pytest.approx(0.1)


def test_a_rise_from_zero_regions_departs(patient: Any) -> None:
    for w in (5, 4, 3, 2):
        for _ in range(5):
            drift_scan(patient, weeks_ago=w, confidences=[])
    for _ in range(5):
        drift_scan(patient, weeks_ago=1, confidences=[0.9, 0.9, 0.9])
    drift = weekly_drift(weeks=6, today=TODAY, threshold=0.25, min_scans=5)
    week = drift["weeks"][-2]
    assert week["baseline"]["regions"] == 0 and week["departures"]["regions"] == float("inf")
    assert {m["key"]: m["change_percent"] for m in week["measures"]}["regions"] is None
    # No confidences in the baseline weeks: confidence is not judged.
    assert week["baseline"]["confidence"] is None
    assert drift["drifting"] == ["2026-W48"]


def test_it_counts_results_per_model_version_and_weights(patient: Any, admin: Any) -> None:
    for _ in range(3):
        drift_scan(patient, weeks_ago=1, confidences=[0.8])
    drift_scan(patient, weeks_ago=0, confidences=[0.8], model=DETECTOR_V2)
    drift_scan(patient, weeks_ago=0, confidences=[0.8], model=None)  # before models were recorded
    drift_scan(patient, weeks_ago=0, confidences=[0.8], status=ScanStatus.FAILED)
    seg_model = SegmentationModel.objects.create(name="brain-tissue")
    scan = Scan.objects.first()
    identity = {"name": "brain-tissue", "version": "1", "sha256": "c" * 64, "weights": "m"}
    for status, results in (
        (JobStatus.COMPLETED, {"model": identity}),
        (JobStatus.COMPLETED, {"model": identity}),
        (JobStatus.COMPLETED, {}),
        (JobStatus.FAILED, {"model": identity}),
    ):
        SegmentationJob.objects.create(scan=scan, model=seg_model, status=status, results=results)

    counts = results_per_model()
    assert counts["detectors"] == [
        {"name": "detector/best.onnx", "version": "1", "sha256": "a" * 64, "recorded": True,
         "count": 3},
        {"name": "detector/best.onnx", "version": "2", "sha256": "b" * 64, "recorded": True,
         "count": 1},
        {"name": "", "version": "", "sha256": "", "recorded": False, "count": 1},
    ]  # fmt: skip
    assert counts["segmentations"] == [
        {"name": "brain-tissue", "version": "1", "sha256": "c" * 64, "recorded": True,
         "count": 2},
        {"name": "", "version": "", "sha256": "", "recorded": False, "count": 1},
    ]  # fmt: skip


def test_the_statistics_page_shows_models_and_warns_of_the_drifting_week(
    client: Client, admin: Any, patient: Any, settings: Any
) -> None:
    settings.DRIFT_THRESHOLD = 0.25
    settings.DRIFT_MIN_SCANS = 5
    today = datetime.now(UTC).date()
    this_monday = today - timedelta(days=today.weekday())
    shift = (THIS_MONDAY - this_monday).days // 7  # the helper counts weeks from TODAY
    stable_weeks(patient, range(6 - shift, 1 - shift, -1))
    for _ in range(5):
        drift_scan(patient, weeks_ago=1 - shift, confidences=[0.4], model=DETECTOR_V2)
    drifting_week = "{}-W{:02d}".format(*(this_monday - timedelta(weeks=1)).isocalendar()[:2])

    client.force_login(admin)
    html = client.get("/manage/statistics/").content.decode()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    assert "Results per model version" in html
    assert re.search(r"detector/best\.onnx 1 aaaaaaaaaaaa 25\b", text), text
    assert re.search(r"detector/best\.onnx 2 bbbbbbbbbbbb 5\b", text)
    warning = re.search(r"data-drift-warning>(.*?)</p>", html, re.S)
    assert warning and drifting_week in warning[1] and "25 %" in warning[1]
    assert f'data-week="{drifting_week}" class="row--warning" data-drifting' in html
    assert 'data-departs="confidence"' in html
    assert "DRIFT_THRESHOLD = 0.25" in html
    assert html.count("data-drifting") == 1


def test_the_statistics_page_says_no_drift_for_a_stable_series(
    client: Client, admin: Any, patient: Any
) -> None:
    stable_weeks(patient, range(5, 1, -1))
    client.force_login(admin)
    html = client.get("/manage/statistics/").content.decode()
    assert "data-drift-ok" in html and "data-drift-warning" not in html
    assert "data-drifting" not in html
