"""The second opinion reads (issue 14 item 3): PP-OCR recognition reads the text left after
redaction (and the detections of classes not redacted) and compares it with the DICOM header's
identifying values, as Presidio's use_metadata does; a match is PHI whatever the class: sealed,
filled and flagged for review, with only the field kind and the spot recorded."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pytest

from engine.crypto import envelope as crypto
from engine.detection import pipeline
from engine.detection.detector import Detection
from engine.detection.ocr import (
    Identifier,
    IdentifierMatcher,
    TextFinder,
    TextReader,
    date_variants,
    header_identifiers,
)
from engine.intake.validation import validate_upload
from imaging.models import LeftoverDetection, Region, Scan, ScanStatus
from imaging.tests import factories

pytestmark = [pytest.mark.second_opinion]

# Burned into the top margin of a noisy dark "scan"; the detector misses it.
BURNED = ("SMITH, JOHN   ID 4417829",)
SAME = [Identifier("name", "SMITH^JOHN"), Identifier("patient_id", "4417829")]
OTHER = [Identifier("name", "DOE^JANE"), Identifier("patient_id", "0012345")]


@pytest.fixture(scope="module")
def finder() -> TextFinder:
    return TextFinder()


@pytest.fixture(scope="module")
def reader() -> TextReader:
    return TextReader()


def _image(lines: tuple[str, ...] = BURNED) -> Any:
    pixels = factories.text_image(512, 384, lines=lines)
    return validate_upload(
        name="x.png", data=factories.png_bytes(pixels), max_bytes=10**8, max_pixels=10**8
    )


def _ink_rows(display: np.ndarray) -> np.ndarray:
    return np.nonzero((display.min(axis=2) >= factories.INK_THRESHOLD).any(axis=1))[0]


def _run(image: Any, finder: TextFinder, reader: TextReader, identifiers: list, **kw: Any) -> Any:
    return pipeline.pipeline_run(
        image=image,
        data_key=crypto.new_data_key(),
        scan_ref="x",
        detector=kw.pop("detector", lambda frame: []),
        second_opinion=finder.search,
        second_opinion_scope="margins",
        read_text=reader.read,
        match_identifiers=IdentifierMatcher(identifiers).match,
        **kw,
    )


def test_the_reader_reads_a_rendered_line(reader: TextReader) -> None:
    image = _image()
    rows = _ink_rows(image.display[0])
    box = (0, int(rows.min()) - 4, 400, int(rows.max()) + 5)
    (text,) = reader.read(image.display[0], [box])
    assert "SMITH" in text.upper() and "4417829" in text


def test_a_burned_in_name_equal_to_the_header_name_is_filled_and_flagged(
    finder: TextFinder, reader: TextReader
) -> None:
    image = _image()
    result = _run(image, finder, reader, SAME)
    matches = result.metrics["header_matches"]
    assert matches and {"name", "patient_id"} <= {k for m in matches for k in m["kinds"]}
    # PHI whatever the detector said (it said nothing): sealed and filled...
    sealed = [r for r in result.regions if r.box.label == pipeline.HEADER_MATCH_LABEL]
    assert sealed
    assert _ink_rows(result.redacted_display[0]).size == 0, "the name is still visible"
    # ...and the scan waits for a person, the spot named among the leftovers.
    assert result.needs_review
    assert any(b.label == pipeline.HEADER_MATCH_LABEL for b in result.leftovers)
    assert "header_match_ms" in result.timings
    # Only the kind and the box: neither the text nor the values are in the metrics.
    dumped = json.dumps(result.metrics)
    assert "SMITH" not in dumped and "4417829" not in dumped
    assert set(matches[0]) == {"frame", "kinds", "box"}


def test_a_burned_in_name_that_is_not_the_header_name_is_not_matched(
    finder: TextFinder, reader: TextReader
) -> None:
    result = _run(_image(), finder, reader, OTHER)
    assert result.metrics["header_matches"] == []
    assert not result.regions
    # The second opinion still names the unread spot for review, unfilled, as before.
    assert result.needs_review
    assert {b.label for b in result.leftovers} == {pipeline.OCR_LABEL}


def test_a_match_is_phi_whatever_the_detector_class(finder: TextFinder, reader: TextReader) -> None:
    image = _image()
    rows = _ink_rows(image.display[0])
    box = (8, int(rows.min()) - 2, 330, int(rows.max()) + 3)

    def calls_it_technical(frame: np.ndarray) -> list[Detection]:
        return [Detection(box=box, label="tech_text", confidence=0.6)]

    only_phi = ("phi_text",)
    kept = _run(image, finder, reader, SAME, detector=calls_it_technical, classes=only_phi)
    labels = [r.box.label for r in kept.regions]
    assert pipeline.HEADER_MATCH_LABEL in labels
    assert kept.metrics["header_matches"][0]["box"] == list(box)
    dropped = _run(image, finder, reader, OTHER, detector=calls_it_technical, classes=only_phi)
    # Not the header's: a technical label stays as the classes setting says (not redacted).
    assert not [r for r in dropped.regions if r.box.coords == box]


def test_nothing_is_logged_of_the_text_or_the_values(
    finder: TextFinder, reader: TextReader, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        _run(_image(), finder, reader, SAME)
    assert "SMITH" not in caplog.text and "4417829" not in caplog.text
    assert "SMITH" not in repr(SAME) and "4417829" not in repr(SAME)


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("SMITH, JOHN", ["name"]),
        ("Name: John Smith", ["name"]),
        ("SMITH^JOHN^Q", ["name"]),
        ("SMITHJOHN 12/03", ["name"]),  # the ^ dropped by the reader
        ("PID: 441-78-29", ["patient_id"]),
        ("ID:44I7829", ["patient_id"]),  # an I read for a 1
        ("DOB 31.01.1970", ["birth_date"]),
        ("Born 01/31/1970", ["birth_date"]),
        ("31-JAN-70", ["birth_date"]),
        ("Jan 31 1970", ["birth_date"]),
        ("ACC# A-99812", ["accession"]),
        ("WESTWAY MED CTR", ["institution"]),
        ("Westway Medical Center", ["institution"]),
        ("JONES, MARY  ID 5517829", []),
        ("MEDICAL CENTER", []),  # generic words identify nobody
        ("144178290", []),  # the ID inside a longer number
        ("TIS 0.4  MI 1.1", []),
    ],
)
def test_what_the_matcher_counts_as_the_header(text: str, kinds: list[str]) -> None:
    matcher = IdentifierMatcher(
        [
            Identifier("name", "SMITH^JOHN"),
            Identifier("patient_id", "4417829"),
            Identifier("birth_date", "19700131"),
            Identifier("accession", "A99812"),
            Identifier("institution", "WESTWAY MEDICAL CENTER"),
        ]
    )
    assert matcher.match(text) == kinds


def test_accents_and_case_do_not_hide_a_name() -> None:
    matcher = IdentifierMatcher([Identifier("name", "MÜLLER^JOSÉ")])
    assert matcher.match("Muller, Jose") == ["name"]
    assert matcher.match("MÜLLER JOSÉ") == ["name"]
    assert "31JAN1970" in date_variants("19700131")
    assert date_variants("1970") == [] and not IdentifierMatcher([Identifier("name", "")])


def test_header_identifiers_reads_the_five_fields() -> None:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "0012345"
    ds.PatientBirthDate = "19700101"
    ds.AccessionNumber = ""
    ds.InstitutionName = "WESTWAY MEDICAL CENTER"
    kinds = [i.kind for i in header_identifiers(ds)]
    assert kinds == ["name", "patient_id", "birth_date", "institution"]


@pytest.fixture
def missing_detector(settings: Any) -> None:
    settings.IMAGING_DETECTOR = "imaging.tests.test_header_match.no_detections"


def no_detections(frame: np.ndarray) -> list[Any]:
    return []


def _dicom_with(lines: tuple[str, ...]) -> bytes:
    """factories.dicom_bytes' header: PatientName DOE^JANE, PatientID 0012345."""
    grey = factories.text_image(512, 384, lines=lines, channels=1)
    return factories.dicom_bytes(grey[np.newaxis])


@pytest.mark.django_db
def test_an_upload_showing_its_header_name_has_it_filled_and_waits_for_review(
    missing_detector: None, upload: Any, settings: Any
) -> None:
    assert settings.IMAGING_SECOND_OPINION == "margins" and settings.IMAGING_SECOND_OPINION_MATCH
    response = upload(("scan.dcm", _dicom_with(("DOE^JANE  MRN 0012345",))))
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert scan.status == ScanStatus.COMPLETED, scan.failure_reason
    assert scan.needs_review
    kinds = {k for m in scan.metrics["header_matches"] for k in m["kinds"]}
    assert {"name", "patient_id"} <= kinds
    assert Region.objects.filter(scan=scan, label="header_match").exists()
    assert LeftoverDetection.objects.filter(scan=scan, label="header_match").exists()
    assert "DOE" not in json.dumps(scan.metrics) and "0012345" not in json.dumps(scan.metrics)


@pytest.mark.django_db
def test_an_upload_showing_another_name_is_flagged_but_not_matched(
    missing_detector: None, upload: Any
) -> None:
    response = upload(("scan.dcm", _dicom_with(BURNED)))
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert scan.status == ScanStatus.COMPLETED, scan.failure_reason
    assert scan.metrics["header_matches"] == []
    assert not Region.objects.filter(scan=scan).exists()
    assert scan.needs_review
    assert LeftoverDetection.objects.filter(scan=scan, label="ocr_text").exists()


@pytest.mark.django_db
def test_the_redact_command_fills_a_header_match(missing_detector: None, tmp_path: Any) -> None:
    import io

    from django.core.management import call_command

    source = tmp_path / "in.dcm"
    source.write_bytes(_dicom_with(("DOE^JANE  MRN 0012345",)))
    out = io.StringIO()
    call_command("redact", str(source), "--out", str(tmp_path / "out"), stdout=out)
    (line,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [r["class"] for r in line["regions"]] and all(
        r["class"] == "header_match" for r in line["regions"]
    )
    matched = [s for s in line["second_opinion"] if s.get("matched")]
    assert matched and "name" in matched[0]["matched"]
    assert "DOE" not in out.getvalue()
