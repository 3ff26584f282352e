"""Review that cannot leak by mistake (issue 16 item 4): removals undone until confirm and
acting on whole groups, leftover detections resolved before "needs review" clears, and the
blurred teaching copy."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from audit.models import Action, AuditEvent
from engine.pixels.grid import LEFTOVER_COLOUR
from imaging.jobs.processing import scan_process
from imaging.models import LeftoverDetection, Region, Scan, ScanStatus
from imaging.services import upload
from imaging.tests import factories
from imaging.tests.conftest import as_upload

pytestmark = pytest.mark.django_db


def one_line_detector(frame: np.ndarray) -> list[Any]:
    """Sees one line at a time: the verification pass finds the other."""
    return factories.bright_text_detector(frame)[:1]


@pytest.fixture
def leftover_scan(
    bright_detector: None,
    settings: Any,
    technician: Any,
    patient: Any,
    text_png: tuple[bytes, np.ndarray],
    django_capture_on_commit_callbacks: Any,
) -> Scan:
    """A scan whose verification pass found a line it did not fill (no extra round)."""
    with django_capture_on_commit_callbacks(execute=False):
        (scan,) = upload.scan_upload(
            patient=patient, uploads=[as_upload("a.png", text_png[0])], uploaded_by=technician
        )
    settings.IMAGING_DETECTOR = "imaging.tests.test_review_flow.one_line_detector"
    settings.IMAGING_VERIFY_ROUNDS = 0
    scan_process(scan_id=scan.pk)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.COMPLETED and scan.needs_review
    return scan


def _png(response: Any) -> np.ndarray:
    assert response.status_code == 200, response.content
    return np.asarray(
        Image.open(
            io.BytesIO(
                b"".join(response.streaming_content) if response.streaming else response.content
            )
        )
    )


# --- Removal: confirmation-free undo until the review is confirmed --------------------------


def test_a_technician_undoes_a_removal_request_until_confirming(
    api: Any, technician: Any, completed_scan: Scan
) -> None:
    target = completed_scan.regions.order_by("index").first()
    api.force_authenticate(technician)
    assert api.delete(f"/api/regions/{target.pk}/").status_code == 202

    response = api.delete(f"/api/regions/{target.pk}/removal/")

    assert response.status_code == 200, response.content
    assert response.json()["removal_pending"] is False
    assert not Region.objects.get(pk=target.pk).removal_pending
    event = AuditEvent.objects.filter(action=Action.REGIONS_EDITED).latest("id")
    assert event.details["change"] == "removal_withdrawn"
    assert event.details["requested_by"] == technician.username

    # Asked again and confirmed: now it is the doctor's to decide.
    assert api.delete(f"/api/regions/{target.pk}/").status_code == 202
    assert api.post(f"/api/images/{completed_scan.pk}/review/").status_code == 200
    response = api.delete(f"/api/regions/{target.pk}/removal/")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "review_confirmed"
    assert Region.objects.get(pk=target.pk).removal_pending


def test_a_doctor_may_not_withdraw_and_a_technician_may_not_approve(
    api: Any, technician: Any, doctor: Any, completed_scan: Scan
) -> None:
    target = completed_scan.regions.order_by("index").first()
    api.force_authenticate(technician)
    assert api.delete(f"/api/regions/{target.pk}/").status_code == 202
    assert (
        api.post(f"/api/regions/{target.pk}/removal/", {"approve": True}, format="json").status_code
        == 403
    )
    api.force_authenticate(doctor)
    assert api.delete(f"/api/regions/{target.pk}/removal/").status_code == 403
    assert Region.objects.get(pk=target.pk).removal_pending


def test_a_removal_asks_for_a_whole_group_and_a_doctor_approves_it_in_one(
    api: Any, technician: Any, doctor: Any, completed_dicom: tuple[Scan, Any]
) -> None:
    scan, _ = completed_dicom
    groups = api_groups(api, technician, scan)
    group = next(g for g in groups if len(g["regions"]) > 1)
    first = group["regions"][0]

    api.force_authenticate(technician)
    assert api.delete(f"/api/regions/{first}/?group=true").status_code == 202
    pending = set(
        Region.objects.filter(scan=scan, removal_requested_at__isnull=False).values_list(
            "pk", flat=True
        )
    )
    assert pending == set(group["regions"])
    # Undone for the whole group too.
    assert api.delete(f"/api/regions/{first}/removal/?group=true").status_code == 200
    assert not Region.objects.filter(scan=scan, removal_requested_at__isnull=False).exists()

    assert api.delete(f"/api/regions/{first}/?group=true").status_code == 202
    api.force_authenticate(doctor)
    response = api.post(
        f"/api/regions/{first}/removal/?group=true", {"approve": True}, format="json"
    )
    assert response.status_code == 204, response.content
    assert not Region.objects.filter(pk__in=group["regions"]).exists()
    approved = AuditEvent.objects.filter(action=Action.REGION_REMOVAL_APPROVED)
    assert approved.count() == len(group["regions"])


def api_groups(api: Any, user: Any, scan: Scan) -> list[dict]:
    api.force_authenticate(user)
    response = api.get(f"/api/images/{scan.pk}/region-groups/")
    assert response.status_code == 200
    return response.json()


# --- Leftover detections --------------------------------------------------------------------


def test_a_leftover_is_stored_drawn_and_blocks_the_confirmation(
    api: Any, technician: Any, leftover_scan: Scan
) -> None:
    (leftover,) = LeftoverDetection.objects.filter(scan=leftover_scan)
    api.force_authenticate(technician)
    rows = api.get(f"/api/images/{leftover_scan.pk}/leftovers/").json()
    assert rows == [
        {
            "id": leftover.pk,
            "frame": 0,
            "label": leftover.label,
            "confidence": pytest.approx(leftover.confidence),
            "box": list(leftover.box),
            "state": "open",
            "dismiss_reason": "",
            "dismissed_by": None,
            "dismissed_at": None,
        }
    ]
    # Drawn on the grid image, dashed in red, where it was found.
    grid = _png(api.get(f"/api/images/{leftover_scan.pk}/grid/"))
    x1, y1, x2, y2 = leftover.box
    assert (grid[y1 : y2 + 1, x1 : x2 + 1] == np.array(LEFTOVER_COLOUR)).all(axis=2).any()

    response = api.post(f"/api/images/{leftover_scan.pk}/review/")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "leftovers_unresolved"
    leftover_scan.refresh_from_db()
    assert leftover_scan.needs_review and leftover_scan.reviewed_at is None


def test_dismissing_a_leftover_needs_a_reason_and_then_confirm_clears_needs_review(
    api: Any, technician: Any, doctor: Any, leftover_scan: Scan
) -> None:
    (leftover,) = LeftoverDetection.objects.filter(scan=leftover_scan)
    url = f"/api/leftovers/{leftover.pk}/dismissal/"
    api.force_authenticate(doctor)
    assert api.post(url, {"reason": "ruler markings"}, format="json").status_code == 403
    api.force_authenticate(technician)
    response = api.post(url, {"reason": "  no "}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "reason_required"

    response = api.post(url, {"reason": "Scale bar, no text"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["state"] == "dismissed"
    event = AuditEvent.objects.filter(action=Action.REGIONS_EDITED).latest("id")
    assert event.details["change"] == "leftover_dismissed"
    assert event.details["reason"] == "Scale bar, no text"
    assert api.post(url, {"reason": "again, twice"}, format="json").status_code == 409

    response = api.post(f"/api/images/{leftover_scan.pk}/review/")
    assert response.status_code == 200, response.content
    leftover_scan.refresh_from_db()
    assert leftover_scan.needs_review is False and leftover_scan.reviewed_at is not None
    confirmed = AuditEvent.objects.filter(action=Action.REGIONS_EDITED).latest("id")
    assert confirmed.details["needs_review_cleared"] is True


def test_a_region_over_the_leftover_resolves_it(
    api: Any, technician: Any, leftover_scan: Scan
) -> None:
    (leftover,) = LeftoverDetection.objects.filter(scan=leftover_scan)
    x1, y1, x2, y2 = leftover.box
    api.force_authenticate(technician)
    response = api.post(
        f"/api/images/{leftover_scan.pk}/regions/",
        {"x1": max(0, x1 - 2), "y1": max(0, y1 - 2), "x2": x2 + 2, "y2": y2 + 2},
        format="json",
    )
    assert response.status_code == 201, response.content
    rows = api.get(f"/api/images/{leftover_scan.pk}/leftovers/").json()
    assert [r["state"] for r in rows] == ["covered"]
    # The rebuilt grid no longer draws it: the box is filled and outlined as a region.
    grid = _png(api.get(f"/api/images/{leftover_scan.pk}/grid/"))
    assert not (grid[y1:y2, x1:x2] == np.array(LEFTOVER_COLOUR)).all(axis=2).any()
    assert api.post(f"/api/images/{leftover_scan.pk}/review/").status_code == 200
    leftover_scan.refresh_from_db()
    assert leftover_scan.needs_review is False


def test_leftovers_filled_by_a_later_round_are_covered_and_confirm_clears_needs_review(
    api: Any,
    technician: Any,
    settings: Any,
    patient: Any,
    text_png: Any,
    django_capture_on_commit_callbacks: Any,
    bright_detector: None,
) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        (scan,) = upload.scan_upload(
            patient=patient, uploads=[as_upload("a.png", text_png[0])], uploaded_by=technician
        )
    settings.IMAGING_DETECTOR = "imaging.tests.test_review_flow.one_line_detector"
    settings.IMAGING_VERIFY_ROUNDS = 2
    scan_process(scan_id=scan.pk)
    scan.refresh_from_db()
    assert scan.needs_review  # the detector needed a second look
    api.force_authenticate(technician)
    rows = api.get(f"/api/images/{scan.pk}/leftovers/").json()
    assert rows and {r["state"] for r in rows} == {"covered"}
    assert api.post(f"/api/images/{scan.pk}/review/").status_code == 200
    scan.refresh_from_db()
    assert scan.needs_review is False


# --- Blurred teaching copy ------------------------------------------------------------------


def test_the_blurred_copy_paints_over_regions_only_and_downloads(
    api: Any,
    technician: Any,
    doctor: Any,
    completed_scan: Scan,
    text_png: tuple[bytes, np.ndarray],
) -> None:
    completed_scan.refresh_from_db()
    assert not completed_scan.needs_review
    api.force_authenticate(doctor)
    redacted = _png(api.get(f"/api/images/{completed_scan.pk}/redacted/"))
    blurred = _png(api.get(f"/api/images/{completed_scan.pk}/blurred/"))
    assert blurred.shape == redacted.shape
    inside = np.zeros(redacted.shape[:2], bool)
    for r in completed_scan.regions.all():
        inside[r.y1 : r.y2, r.x1 : r.x2] = True
    assert np.array_equal(blurred[~inside], redacted[~inside])
    assert not np.array_equal(blurred[inside], redacted[inside])
    # Nothing of the original text: no inked pixel survives inside a region.
    assert (blurred[inside].min(axis=-1) < factories.INK_THRESHOLD).all()

    api.force_authenticate(technician)
    response = api.get(f"/api/images/{completed_scan.pk}/blurred/?download=true")
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    event = AuditEvent.objects.filter(action=Action.SCAN_VIEWED).latest("id")
    assert event.details == {"view": "blurred", "frame": 0, "download": True}
    assert event.actor == technician


def test_the_blurred_copy_waits_for_the_review(
    api: Any, technician: Any, leftover_scan: Scan
) -> None:
    api.force_authenticate(technician)
    response = api.get(f"/api/images/{leftover_scan.pk}/blurred/")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "needs_review"
    assert api.get(f"/api/images/{leftover_scan.pk}/blurred/?frame=3").status_code in (400, 409)


# --- The review page ------------------------------------------------------------------------


def test_the_page_lists_leftovers_asks_before_removing_and_reads_manual(
    client: Any, api: Any, technician: Any, leftover_scan: Scan
) -> None:
    (leftover,) = LeftoverDetection.objects.filter(scan=leftover_scan)
    x1, y1, x2, y2 = 2, 2, 12, 12
    api.force_authenticate(technician)
    assert (
        api.post(
            f"/api/images/{leftover_scan.pk}/regions/",
            {"x1": x1, "y1": y1, "x2": x2, "y2": y2},
            format="json",
        ).status_code
        == 201
    )
    client.force_login(technician)

    page = client.get(f"/scans/{leftover_scan.pk}/").content.decode()

    assert f'data-leftover-id="{leftover.pk}" data-state="open"' in page
    assert "Cover with a region" in page and "data-dismiss-leftover" in page
    # Removing asks first (a dialog), and the hand-drawn box reads "manual", not "–".
    assert "data-remove-dialog" in page and "Remove…" in page
    assert '<td class="mono">manual</td>' in page
    # No blurred copy while the scan needs review.
    assert "image-blurred" not in page and "/blurred/" not in page
    assert "offered once the review is confirmed" in page


def test_a_cine_lists_one_row_per_box_with_its_frames(
    client: Any, technician: Any, completed_dicom: tuple[Scan, Any]
) -> None:
    scan, _ = completed_dicom
    groups = {}
    for region in scan.regions.all():
        groups.setdefault((region.label, region.box), []).append(region.frame)
    assert any(len(frames) == 2 for frames in groups.values())
    client.force_login(technician)
    page = client.get(f"/scans/{scan.pk}/").content.decode()
    assert page.count("data-region ") == len(groups)
    assert "frames 1-2" in page
    assert page.count("Remove…") == len(groups)


def test_the_series_option_is_offered_only_for_a_series(
    client: Any, doctor: Any, completed_dicom: tuple[Scan, Any]
) -> None:
    scan, _ = completed_dicom
    client.force_login(doctor)
    page = client.get(f"/scans/{scan.pk}/").content.decode()
    assert "data-segmentation-series" not in page


def test_a_long_region_list_shows_its_first_rows_and_a_show_all_button(
    client: Any, technician: Any, completed_scan: Scan
) -> None:
    start = completed_scan.regions.count()
    last = completed_scan.regions.order_by("-index").first().index
    # Metadata rows only (the page lists them; nothing is decrypted to render it).
    Region.objects.bulk_create(
        Region(
            scan=completed_scan,
            index=last + 1 + i,
            label="phi_text",
            confidence=0.5,
            x1=10 * i,
            y1=200,
            x2=10 * i + 8,
            y2=210,
            ciphertext=b"x",
            dtype="uint8",
        )
        for i in range(20)
    )
    total = start + 20
    client.force_login(technician)
    page = client.get(f"/scans/{completed_scan.pk}/").content.decode()
    assert page.count("data-region ") == total
    assert page.count("data-region-more hidden") == total - 12
    assert f"Show all {total} regions" in page


@pytest.fixture
def leftover_cine(
    bright_detector: None,
    settings: Any,
    technician: Any,
    patient: Any,
    django_capture_on_commit_callbacks: Any,
) -> Scan:
    """A 3-frame DICOM whose verification pass left the same line on every frame."""
    data, _ = factories.dicom16_text(frames=3)
    with django_capture_on_commit_callbacks(execute=False):
        (scan,) = upload.scan_upload(
            patient=patient, uploads=[as_upload("cine.dcm", data)], uploaded_by=technician
        )
    settings.IMAGING_DETECTOR = "imaging.tests.test_review_flow.one_line_detector"
    settings.IMAGING_VERIFY_ROUNDS = 0
    scan_process(scan_id=scan.pk)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.COMPLETED and scan.needs_review
    return scan


def test_a_cines_leftovers_are_one_row_and_one_cover_resolves_every_frame(
    api: Any, client: Any, technician: Any, leftover_cine: Scan
) -> None:
    leftovers = list(LeftoverDetection.objects.filter(scan=leftover_cine))
    boxes = {(x.label, x.box) for x in leftovers}
    client.force_login(technician)
    page = client.get(f"/scans/{leftover_cine.pk}/").content.decode()
    assert page.count("data-leftover ") == len(boxes) < len(leftovers)
    assert "frames 1-3" in page

    # One POST covers a box on every frame it was found on (one rebuild).
    label, box = next(iter(boxes))
    frames = sorted(x.frame for x in leftovers if (x.label, x.box) == (label, box))
    assert frames == [0, 1, 2]
    x1, y1, x2, y2 = box
    api.force_authenticate(technician)
    before = Region.objects.filter(scan=leftover_cine).count()
    response = api.post(
        f"/api/images/{leftover_cine.pk}/regions/",
        {"x1": max(0, x1 - 2), "y1": max(0, y1 - 2), "x2": x2 + 2, "y2": y2 + 2, "frames": frames},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert Region.objects.filter(scan=leftover_cine).count() == before + 3
    states = {
        r["frame"]: r["state"]
        for r in api.get(f"/api/images/{leftover_cine.pk}/leftovers/").json()
        if r["box"] == list(box)
    }
    assert states == {0: "covered", 1: "covered", 2: "covered"}


def test_a_cines_leftovers_are_dismissed_together(
    api: Any, technician: Any, leftover_cine: Scan
) -> None:
    first = LeftoverDetection.objects.filter(scan=leftover_cine).order_by("id").first()
    same = LeftoverDetection.objects.filter(
        scan=leftover_cine, label=first.label, x1=first.x1, y1=first.y1, x2=first.x2, y2=first.y2
    )
    api.force_authenticate(technician)
    response = api.post(
        f"/api/leftovers/{first.pk}/dismissal/?group=true",
        {"reason": "Scanner's scale labels"},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert same.count() == 3 and all(x.dismissed for x in same)
    dismissed = AuditEvent.objects.filter(
        action=Action.REGIONS_EDITED, details__change="leftover_dismissed"
    )
    assert dismissed.count() == 3


def test_confirming_a_flagged_dicom_rewrites_its_deidentified_copy_as_clean(
    bright_detector: None,
    settings: Any,
    api: Any,
    technician: Any,
    doctor: Any,
    patient: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """While text may be left the copy says Burned In Annotation YES without 113101; the
    technician's confirmation is the word that every frame is clean, and the copy then says so."""
    import pydicom

    data, _ = factories.dicom16_text(frames=1)
    with django_capture_on_commit_callbacks(execute=False):
        (scan,) = upload.scan_upload(
            patient=patient, uploads=[as_upload("a.dcm", data)], uploaded_by=technician
        )
    settings.IMAGING_DETECTOR = "imaging.tests.test_review_flow.one_line_detector"
    settings.IMAGING_VERIFY_ROUNDS = 0
    scan_process(scan_id=scan.pk)
    scan.refresh_from_db()
    assert scan.needs_review and scan.deid_report["pixels"]["burned_in_annotation"] == "YES"
    api.force_authenticate(technician)
    for leftover in LeftoverDetection.objects.filter(scan=scan):
        response = api.post(
            f"/api/leftovers/{leftover.pk}/dismissal/",
            {"reason": "checked: a ruler"},
            format="json",
        )
        assert response.status_code == 200, response.content

    assert api.post(f"/api/images/{scan.pk}/review/").status_code == 200

    scan.refresh_from_db()
    assert not scan.needs_review and scan.reviewed_at is not None
    assert scan.deid_report["pixels"]["burned_in_annotation"] == "NO"
    event = AuditEvent.objects.filter(action=Action.REGIONS_EDITED).latest("id")
    assert event.details["deidentified_copy_rewritten"] is True
    api.force_authenticate(doctor)
    response = api.get(f"/api/images/{scan.pk}/export/")
    assert response.status_code == 200, response.content
    body = b"".join(response.streaming_content) if response.streaming else response.content
    exported = pydicom.dcmread(io.BytesIO(body))
    assert exported.BurnedInAnnotation == "NO"
    assert "113101" in [i.CodeValue for i in exported.DeidentificationMethodCodeSequence]
