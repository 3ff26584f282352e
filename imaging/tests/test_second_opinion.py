"""The second opinion (issue 14 item 3): PP-OCR's text detector, independent of the YOLO
detector, looks for text left after redaction; what it finds outside every region flags the
scan for review and names the spot."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine.crypto import envelope as crypto
from engine.detection import pipeline
from engine.detection.ocr import TextFinder
from engine.intake.validation import validate_upload
from imaging.models import LeftoverDetection, Scan, ScanStatus
from imaging.tests import factories

pytestmark = [pytest.mark.second_opinion]

# The name sits in the top margin; the "anatomy" below is noise.
LINES = ("SMITH, JOHN   ID 4417829",)


@pytest.fixture(scope="module")
def finder() -> TextFinder:
    return TextFinder()


def _image() -> Any:
    pixels = factories.text_image(512, 384, lines=LINES)
    return validate_upload(
        name="x.png", data=factories.png_bytes(pixels), max_bytes=10**8, max_pixels=10**8
    )


def _text_rows(image: Any) -> tuple[int, int]:
    ink = np.nonzero((image.display[0].min(axis=2) >= factories.INK_THRESHOLD).any(axis=1))[0]
    return int(ink.min()), int(ink.max()) + 1


def test_it_finds_text_the_detector_missed_and_flags_the_scan(finder: TextFinder) -> None:
    image = _image()
    result = pipeline.pipeline_run(
        image=image,
        data_key=crypto.new_data_key(),
        scan_ref="x",
        detector=lambda frame: [],  # the detector misses the name
        second_opinion=finder.search,
        second_opinion_scope="margins",
    )
    assert result.needs_review
    found = [b for b in result.leftovers if b.label == "ocr_text"]
    assert found and result.metrics["second_opinion_boxes"] == len(found)
    top, bottom = _text_rows(image)
    # It names the spot: a box over the name's line.
    assert any(b.y0 <= top + 2 and b.y1 >= bottom - 2 and b.x1 - b.x0 > 100 for b in found)
    assert "second_opinion_ms" in result.timings
    # Not filled: a person decides (it may be a scale or a caliper).
    assert not result.regions


def test_nothing_is_flagged_when_every_line_was_redacted(finder: TextFinder) -> None:
    image = _image()
    result = pipeline.pipeline_run(
        image=image,
        data_key=crypto.new_data_key(),
        scan_ref="x",
        detector=factories.bright_text_detector,
        second_opinion=finder.search,
        second_opinion_scope="full",
    )
    assert result.regions
    assert result.metrics["second_opinion_boxes"] == 0
    assert not result.needs_review


def test_bands_look_only_beside_what_was_filled(finder: TextFinder) -> None:
    # No region, so no band: with the "bands" scope the missed name is not looked at (which
    # is why "margins" is the default).
    result = pipeline.pipeline_run(
        image=_image(),
        data_key=crypto.new_data_key(),
        scan_ref="x",
        detector=lambda frame: [],
        second_opinion=finder.search,
        second_opinion_scope="bands",
    )
    assert result.metrics["second_opinion_boxes"] == 0


def test_the_windows_of_each_scope() -> None:
    shape = (400, 600)
    assert pipeline.opinion_windows(shape, [], "full") == [(0, 0, 600, 400)]
    # A 20-px box gives the rows 20 px above and below it, full width; overlaps merge.
    assert pipeline.opinion_windows(shape, [(10, 100, 50, 120), (300, 110, 400, 130)], "bands") == [
        (0, 80, 600, 150)
    ]
    margins = pipeline.opinion_windows(shape, [(10, 200, 50, 220)], "margins")
    assert (0, 0, 600, 60) in margins and (0, 340, 600, 400) in margins
    assert (0, 180, 600, 240) in margins
    assert (0, 0, 90, 400) in margins and (510, 0, 600, 400) in margins
    with pytest.raises(ValueError, match="second-opinion scope"):
        pipeline.pipeline_run(
            image=_image(),
            data_key=crypto.new_data_key(),
            scan_ref="x",
            detector=lambda frame: [],
            second_opinion_scope="everywhere",
        )


@pytest.fixture
def missing_detector(settings: Any) -> None:
    settings.IMAGING_DETECTOR = "imaging.tests.test_second_opinion.no_detections"


def no_detections(frame: np.ndarray) -> list[Any]:
    return []


@pytest.mark.django_db
def test_an_upload_with_missed_text_waits_for_review_with_the_spot_named(
    missing_detector: None, upload: Any, settings: Any
) -> None:
    assert settings.IMAGING_SECOND_OPINION == "margins"  # the production default
    pixels = factories.text_image(512, 384, lines=LINES)
    response = upload(("scan.png", factories.png_bytes(pixels)))
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert scan.status == ScanStatus.COMPLETED, scan.failure_reason
    assert scan.needs_review
    spots = LeftoverDetection.objects.filter(scan=scan, label="ocr_text")
    assert spots.exists()
    assert scan.metrics["second_opinion_boxes"] == spots.count()


@pytest.mark.django_db
def test_off_means_off(missing_detector: None, upload: Any, settings: Any) -> None:
    settings.IMAGING_SECOND_OPINION = "off"
    pixels = factories.text_image(512, 384, lines=LINES)
    response = upload(("scan.png", factories.png_bytes(pixels)))
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert not scan.needs_review
    assert "second_opinion_boxes" in scan.metrics and scan.metrics["second_opinion_boxes"] == 0


@pytest.mark.django_db
def test_the_redact_command_lists_what_the_second_opinion_found(
    missing_detector: None, tmp_path: Any
) -> None:
    import io
    import json

    from django.core.management import call_command

    source = tmp_path / "in.png"
    source.write_bytes(factories.png_bytes(factories.text_image(512, 384, lines=LINES)))
    out = io.StringIO()
    call_command("redact", str(source), "--out", str(tmp_path / "out"), stdout=out)
    (line,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["regions"] == []
    assert line["second_opinion"] and all(s["frame"] == 0 for s in line["second_opinion"])
    assert "second_opinion_ms" in line["stages_ms"]
