"""Per-scanner rules (issue 14 item 5): fixed boxes always redacted on one scanner model's
images, in the web pipeline and in `manage.py redact`, managed and suggested in Django admin."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client

from audit.models import Action, AuditEvent
from engine.crypto import envelope as crypto
from engine.detection import pipeline
from engine.intake.validation import validate_upload
from imaging.models import Region, RegionSource, Scan, ScannerRule, ScanStatus
from imaging.selectors.scanner_rules import rule_boxes, rule_suggestions
from imaging.tests import factories

pytestmark = pytest.mark.django_db

WIDTH, HEIGHT = 256, 192
# Where "the vendor" writes its text and the detector (deliberately) finds nothing: a dim
# line, below the bright-text detector's ink threshold.
RULE_BOX = [150, 160, 240, 180]


def _scanner_dicom(
    manufacturer: str = "ACME Medical", model: str = "Sono 1", frames: int = 3
) -> bytes:
    pixels = np.stack(
        [factories.text_image(WIDTH, HEIGHT, channels=1, seed=f, lines=()) for f in range(frames)]
    )
    pixels[:, 165:175, 155:235] = 150  # the vendor's dim "text"
    ds = pydicom.dcmread(io.BytesIO(factories.dicom_bytes(pixels)))
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _decode(data: bytes) -> Any:
    return validate_upload(name="x.dcm", data=data, max_bytes=10**9, max_pixels=10**9)


def _rule(**fields: Any) -> ScannerRule:
    values = {"manufacturer": "ACME Medical", "model_name": "Sono 1", "boxes": [RULE_BOX]}
    values.update(fields)
    rule = ScannerRule(**values)
    rule.full_clean()
    rule.save()
    return rule


def test_the_pipeline_seals_and_fills_a_rule_box_on_every_frame_and_restores_it() -> None:
    image = _decode(_scanner_dicom())
    key = crypto.new_data_key()
    result = pipeline.pipeline_run(
        image=image,
        data_key=key,
        scan_ref="rule",
        detector=lambda frame: [],  # the detector misses the vendor's text
        fixed_boxes=[RULE_BOX, [-10, -10, 5, 5], [900, 900, 950, 950]],
    )
    labels = [(r.box.frame, r.box.label, r.box.coords) for r in result.regions]
    # Clipped ([-10, -10, 5, 5] -> [0, 0, 5, 5]); the box outside the image is dropped.
    assert sorted(labels) == sorted(
        (f, "scanner_rule", c) for f in range(3) for c in ((0, 0, 5, 5), tuple(RULE_BOX))
    )
    assert result.metrics["rule_boxes"] == 6
    x0, y0, x1, y1 = RULE_BOX
    for f in range(3):
        inside = result.redacted_pixels[f, y0:y1, x0:x1]
        assert len(np.unique(inside)) == 1  # filled solid
        assert (image.pixels[f, y0:y1, x0:x1] == 150).any()
    # Sealed like any region: the original pixels come back exactly.
    for region in result.regions:
        crop = pipeline.open_region(
            ciphertext=region.ciphertext,
            data_key=key,
            scan_ref="rule",
            index=region.index,
            frame=region.box.frame,
            box=region.box.coords,
        )
        bx0, by0, bx1, by1 = region.box.coords
        assert np.array_equal(
            crop.reshape(by1 - by0, bx1 - bx0), image.pixels[region.box.frame, by0:by1, bx0:bx1]
        )


def test_a_detection_the_rule_already_covers_is_not_sealed_twice() -> None:
    image = _decode(_scanner_dicom(frames=1))

    def detector(frame: np.ndarray) -> list[factories.Detection]:
        return [factories.Detection(box=(160, 165, 230, 175), label="phi_text", confidence=0.9)]

    result = pipeline.pipeline_run(
        image=image, data_key=crypto.new_data_key(), scan_ref="x", detector=detector,
        fixed_boxes=[RULE_BOX], padding=0,
    )  # fmt: skip
    assert [r.box.label for r in result.regions] == ["scanner_rule", "phi_text"]
    assert result.metrics["rule_boxes"] == 1


@pytest.mark.parametrize(
    ("fields", "applies"),
    [
        ({}, True),
        ({"manufacturer": "acme medical ", "model_name": "SONO 1"}, True),  # case, spaces
        ({"model_name": ""}, True),  # every model of the manufacturer
        ({"width": WIDTH, "height": HEIGHT}, True),
        ({"width": 512, "height": 512}, False),  # another image size
        ({"model_name": "Sono 2"}, False),
        ({"manufacturer": "Other"}, False),
        ({"active": False}, False),
    ],
)
def test_a_rule_applies_to_its_scanner_model_and_size_only(
    bright_detector: None, upload: Any, fields: dict[str, Any], applies: bool
) -> None:
    _rule(**fields)
    response = upload(("scan.dcm", _scanner_dicom()))
    assert response.status_code == 201, response.content
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert scan.status == ScanStatus.COMPLETED, scan.failure_reason
    assert scan.metrics["scanner"] == {"manufacturer": "ACME Medical", "model": "Sono 1"}
    ruled = scan.regions.filter(label="scanner_rule")
    if applies:
        assert sorted(ruled.values_list("frame", flat=True)) == [0, 1, 2]
        assert {r.box for r in ruled} == {tuple(RULE_BOX)}
    else:
        assert not ruled.exists()


def test_png_uploads_have_no_scanner_and_no_rules(
    bright_detector: None, upload: Any, text_png: tuple[bytes, Any]
) -> None:
    _rule(model_name="")
    response = upload(("scan.png", text_png[0]))
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert "scanner" not in scan.metrics
    assert not scan.regions.filter(label="scanner_rule").exists()


def test_the_redact_command_fills_the_rule_boxes(bright_detector: None, tmp_path: Path) -> None:
    _rule()
    source = tmp_path / "in" / "us.dcm"
    source.parent.mkdir()
    source.write_bytes(_scanner_dicom())
    out = io.StringIO()
    call_command("redact", str(source), "--out", str(tmp_path / "out"), stdout=out)
    (line,) = [json.loads(x) for x in out.getvalue().splitlines()]
    ruled = [r for r in line["regions"] if r["class"] == "scanner_rule"]
    assert sorted(r["frame"] for r in ruled) == [0, 1, 2]
    redacted = pydicom.dcmread(line["output"]).pixel_array
    x0, y0, x1, y1 = RULE_BOX
    assert all(len(np.unique(redacted[f, y0:y1, x0:x1])) == 1 for f in range(3))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"boxes": []}, "at least one box"),
        ({"boxes": [[1, 2, 3]]}, "whole pixels"),
        ({"boxes": [[1, 2, 3.5, 4]]}, "whole pixels"),
        ({"boxes": [[10, 2, 3, 4]]}, "x1 must exceed x0"),
        ({"width": 100, "height": 100, "boxes": [[0, 0, 150, 10]]}, "outside a 100x100 image"),
        ({"width": 100}, "both the width and the height"),
    ],
)
def test_a_bad_rule_is_refused_with_a_reason(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _rule(**fields)


def _scan_with_manual_box(
    upload: Any, box: tuple[int, int, int, int], model: str = "Sono 1"
) -> Scan:
    response = upload(("scan.dcm", _scanner_dicom(model=model, frames=1)))
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    x0, y0, x1, y1 = box
    Region.objects.create(
        scan=scan, index=1000, frame=0, label="phi_text", confidence=1.0,
        source=RegionSource.MANUAL, x1=x0, y1=y0, x2=x1, y2=y1, ciphertext=b"sealed",
        dtype="uint8",
    )  # fmt: skip
    return scan


def test_three_hand_added_boxes_on_one_model_suggest_a_rule_that_admin_can_create(
    bright_detector: None, upload: Any, client: Client, admin: Any
) -> None:
    # Two scans: not yet a pattern.
    _scan_with_manual_box(upload, (20, 20, 120, 40))
    _scan_with_manual_box(upload, (22, 21, 121, 41))
    # Another model's box in the same place does not count towards this model's.
    _scan_with_manual_box(upload, (20, 20, 120, 40), model="Sono 2")
    assert rule_suggestions() == []

    _scan_with_manual_box(upload, (19, 22, 118, 42))
    (suggestion,) = rule_suggestions()
    assert (suggestion.manufacturer, suggestion.model_name) == ("ACME Medical", "Sono 1")
    assert (suggestion.width, suggestion.height, suggestion.scans) == (WIDTH, HEIGHT, 3)
    assert suggestion.box == (19, 20, 121, 42)  # covers all three

    client.force_login(admin)
    page = client.get("/admin/imaging/scannerrule/").content.decode()
    assert "Suggested rules" in page and "Create this rule" in page
    at = page.index("Create this rule")
    start = page.rindex('href="', 0, at) + len('href="')
    link = page[start : page.index('"', start)]
    link = link.replace("&amp;", "&")
    form = client.get(link).content.decode()
    assert "ACME Medical" in form and "[[19, 20, 121, 42]]" in form

    response = client.post(
        "/admin/imaging/scannerrule/add/",
        {
            "manufacturer": "ACME Medical",
            "model_name": "Sono 1",
            "width": WIDTH,
            "height": HEIGHT,
            "boxes": "[[19, 20, 121, 42]]",
            "note": "Suggested",
            "active": "on",
        },
    )
    assert response.status_code == 302, response.content
    rule = ScannerRule.objects.get()
    assert rule.created_by == admin
    assert rule_boxes(
        manufacturer="ACME MEDICAL", model_name="sono 1", width=WIDTH, height=HEIGHT
    ) == [(19, 20, 121, 42)]
    # Covered now: no longer suggested, and the change is in the audit log.
    assert rule_suggestions() == []
    assert (
        "None: no box was added by hand"
        in client.get("/admin/imaging/scannerrule/").content.decode()
    )
    assert AuditEvent.objects.filter(action=Action.ADMIN_CHANGE, target_type="scannerrule").exists()


def test_clinical_users_cannot_reach_the_rules(client: Client, technician: Any) -> None:
    client.force_login(technician)
    response = client.get("/admin/imaging/scannerrule/")
    assert response.status_code in (302, 403, 404)
    assert b"Suggested rules" not in response.content
