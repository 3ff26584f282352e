"""Ultrasound regions (0018,6011) on real deid-data ultrasounds: ink outside the data regions
is covered or flagged, and the viewer learns the physical size of a pixel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from django.urls import reverse

from engine.crypto import envelope as crypto
from engine.detection import pipeline
from engine.detection.detector import detect
from engine.dicom.ultrasound import INK_LEVEL, annotation_boxes, ultrasound_regions
from engine.intake.validation import validate_upload
from imaging.models import Scan, ScanStatus
from imaging.vault.pixels import scan_restore_pixels

deid_data = pytest.importorskip("deid_data")
FOLDER = Path(deid_data.__file__).parent / "data" / "ultrasounds"
GREYSCALE = FOLDER / "GREYSCALE_IMAGE.dcm"


def _decode(data: bytes) -> Any:
    return validate_upload(name="us.dcm", data=data, max_bytes=len(data), max_pixels=10**8)


def _outside(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    outside = np.ones(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        outside[y0:y1, x0:x1] = False
    return outside


def test_it_reads_the_data_regions_and_their_physical_units() -> None:
    (region,) = ultrasound_regions(pydicom.dcmread(GREYSCALE, stop_before_pixels=True))
    # RegionLocationMaxX1/Y1 are inclusive: 1010 and 758 become 1011 and 759.
    assert region.box == (14, 38, 1011, 759)
    assert region.units_x == region.units_y == "cm"
    assert region.delta_x == pytest.approx(0.0064904689685088305)
    assert ultrasound_regions(pydicom.Dataset()) == []


def test_it_seals_and_fills_ink_outside_the_data_regions_that_no_detection_covers() -> None:
    data = GREYSCALE.read_bytes()
    image = _decode(data)
    regions = [r.box for r in ultrasound_regions(pydicom.dcmread(GREYSCALE))]
    outside = _outside(image.display.shape[1:3], regions)
    ink = image.display[0].max(axis=2) >= INK_LEVEL
    assert (ink & outside).sum() > 100  # the scanner's text above the image

    # A detector that finds nothing: only the regions rule is left to cover the text.
    result = pipeline.pipeline_run(
        image=image,
        data_key=crypto.new_data_key(),
        scan_ref="us",
        detector=lambda frame: [],
        data_regions=regions,
    )
    assert result.metrics["annotation_boxes"] >= 1
    # Covered, so not flagged: the regions list shows the annotation regions.
    assert not result.needs_review
    assert {r.box.label for r in result.regions} == {"annotation"}
    assert not (result.redacted_display[0].max(axis=2) >= INK_LEVEL)[outside].any()
    # Inside the data region nothing was touched.
    x0, y0, x1, y1 = regions[0]
    inside = (slice(y0 + 30, y1), slice(x0, x1))
    np.testing.assert_array_equal(result.redacted_pixels[0][inside], image.pixels[0][inside])

    # Without the regions, the same detector leaves the text: the rule is what covers it.
    plain = pipeline.pipeline_run(
        image=image, data_key=crypto.new_data_key(), scan_ref="us", detector=lambda f: []
    )
    assert not plain.regions and not plain.needs_review


def test_annotation_boxes_skip_what_is_covered_or_inside() -> None:
    frame = np.zeros((100, 200, 3), dtype=np.uint8)
    frame[5:12, 10:60] = 255  # a line of "text" in the top margin
    frame[50:60, 50:150] = 255  # bright anatomy inside the data region
    assert annotation_boxes(frame, [(0, 30, 200, 100)], []) == [(9, 4, 61, 13)]
    assert annotation_boxes(frame, [(0, 30, 200, 100)], [(0, 0, 100, 20)]) == []
    assert annotation_boxes(frame, [], []) == []


def test_an_uploaded_ultrasound_keeps_no_ink_outside_its_regions_and_restores_exactly(
    upload: Any, settings: Any, api: Any, doctor: Any
) -> None:
    settings.IMAGING_DETECTOR = "imaging.jobs.detector.detect"
    data = GREYSCALE.read_bytes()
    response = upload(("us.dcm", data))
    assert response.status_code == 201, response.content
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert scan.status == ScanStatus.COMPLETED, scan.failure_reason
    image = _decode(data)
    regions = [r.box for r in ultrasound_regions(pydicom.dcmread(GREYSCALE))]
    redacted = image.display[0].copy()
    for region in scan.regions.all():
        x0, y0, x1, y1 = region.box
        redacted[y0:y1, x0:x1] = 0
    outside = _outside(redacted.shape[:2], regions)
    assert not (redacted.max(axis=2) >= INK_LEVEL)[outside].any()
    np.testing.assert_array_equal(scan_restore_pixels(scan=scan), image.pixels)

    api.force_authenticate(doctor)
    info = api.get(reverse("image-frames", args=[scan.pk])).json()
    (region,) = info["ultrasound_regions"]
    assert region["box"] == [14, 38, 1011, 759]
    assert region["units_x"] == "cm"
    assert region["delta_x"] == pytest.approx(0.0064904689685088305)


def test_a_real_cine_is_detected_again_only_where_its_annotation_changes(settings: Any) -> None:
    """deid-data's 30-frame cine: the sector reaches into any fixed margin, so the change
    test looks outside the data regions instead (and at the boxes)."""
    path = FOLDER / "ultrasound-multiframe.dcm"
    image = _decode(path.read_bytes())
    regions = [r.box for r in ultrasound_regions(pydicom.dcmread(path, stop_before_pixels=True))]
    result = pipeline.pipeline_run(
        image=image,
        data_key=crypto.new_data_key(),
        scan_ref="cine",
        detector=detect,
        classes=settings.IMAGING_REDACT_CLASSES,
        data_regions=regions,
    )
    assert image.frames == 30
    assert result.metrics["frames_detected"] <= 3
    # Every frame is still sealed and filled, and no ink is left outside the regions.
    assert {r.box.frame for r in result.regions} == set(range(30))
    outside = _outside(image.display.shape[1:3], regions)
    assert not (result.redacted_display.max(axis=3) >= INK_LEVEL)[:, outside].any()
