"""Smoke tests of the redaction benchmark's own parts (the full run is `make bench`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.conf import settings

from bench.cases import generated_case, generated_frame, real_cases
from bench.redaction import ours_once, score
from engine.detection.detector import Detection
from engine.intake.validation import validate_upload
from imaging.jobs.detector import default_detector


def test_it_draws_generated_text_inside_its_truth_boxes() -> None:
    frame, boxes = generated_frame(512)
    ink = frame > 200  # the background stays at or below 190
    inside = np.zeros_like(ink)
    for b in boxes:
        inside[b.y0 : b.y1, b.x0 : b.x1] = True
    assert ink.sum() > 100
    assert ink[~inside].sum() == 0  # every bright text pixel lies in a truth box
    assert {b.text for b in boxes} >= {"JANE", "0012345", "01/01/1970"}


def test_it_builds_dicom_files_the_upload_validator_accepts() -> None:
    case = generated_case(512)
    image = validate_upload(
        name="x.dcm", data=case.dicom, max_bytes=len(case.dicom), max_pixels=10**8
    )
    assert image.kind == "dicom"
    assert image.display.shape[1:3] == (512, 512)
    real = real_cases()
    assert len(real) == 9
    first = validate_upload(
        name="x.dcm", data=real[0].dicom, max_bytes=len(real[0].dicom), max_pixels=10**8
    )
    assert first.display.shape[1:3] == real[0].shape


def test_it_scores_perfect_boxes_as_full_recall_and_none_as_zero() -> None:
    case = generated_case(512)
    truth = [Detection((b.x0, b.y0, b.x1, b.y1), "phi_text", 1.0) for b in case.truth.boxes]
    perfect = score([case], [{"ms": [1.0], "detections": truth}], padding=0)["all"]
    assert perfect["recall"] == 1.0 and perfect["false_regions"] == 0
    nothing = score([case], [{"ms": [1.0], "detections": []}], padding=0)["all"]
    assert nothing["recall"] == 0.0
    stray = [Detection((300, 300, 340, 320), "phi_text", 1.0)]
    assert (
        score([case], [{"ms": [1.0], "detections": stray}], padding=0)["all"]["false_regions"] == 1
    )


def test_it_scores_on_the_files_pixels_so_line_completion_reads_the_real_ink() -> None:
    """A line boxed short is grown over its own ink by the pipeline's padding; the scoring pads
    on the case's pixels too (not on an uninitialised array, which made it depend on memory)."""
    case = generated_case(512)
    line = max(case.truth.boxes, key=lambda b: b.x1 - b.x0)
    cut = line.x0 + (line.x1 - line.x0) * 3 // 4
    short = [Detection((line.x0, line.y0, cut, line.y1), "phi_text", 1.0)]
    rest = [b for b in case.truth.boxes if b is not line]
    others = [Detection((b.x0, b.y0, b.x1, b.y1), "phi_text", 1.0) for b in rest]
    result = score([case], [{"ms": [1.0], "detections": short + others}], padding=0)["all"]
    assert result["phi_found"] == result["phi_boxes"]


@pytest.mark.slow
def test_it_redacts_a_generated_scan_with_the_real_detector(tmp_path: Path) -> None:
    case = generated_case(512)
    detector = default_detector()
    ms, found = ours_once(case.dicom, detector, tmp_path / "out.dcm", "bench-test")
    assert ms > 0 and (tmp_path / "out.dcm").stat().st_size > 512 * 512
    report = score([case], [{"ms": [ms], "detections": found}], settings.IMAGING_BOX_PADDING)
    assert report["all"]["recall"] >= 0.9
