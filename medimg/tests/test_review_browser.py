"""Review that cannot leak by mistake (issue 16 item 4), as a technician sees it in Chromium:
the leftover detection is listed and drawn, confirm is refused until it is resolved (a
dismissal needs a typed reason; here it is covered by a region), a removal asks first and
can be undone, and after confirming the blurred copy downloads with no text left in it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from imaging.models import LeftoverDetection, Region, Scan
from imaging.services import upload
from imaging.tests import factories
from imaging.tests.conftest import as_upload
from medimg.tests.test_browser import CHROMIUM, SCREENSHOTS, Session, until
from patients.models import Patient

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"
    ),
]


def _leftover_scan(settings: Any, technician: Any) -> Scan:
    """A processed PNG whose verification pass still found a line it did not fill."""
    patient = Patient.objects.create(id="MRN-7070", name="Ada Lovelace", age=36)
    data = factories.png_bytes(factories.text_image(320, 240))
    settings.IMAGING_DETECTOR = "imaging.tests.test_review_flow.one_line_detector"
    settings.IMAGING_VERIFY_ROUNDS = 0
    # Processed in-process on commit (eager tasks).
    (scan,) = upload.scan_upload(
        patient=patient, uploads=[as_upload("scan.png", data)], uploaded_by=technician
    )
    scan.refresh_from_db()
    assert scan.needs_review and scan.leftovers.count() == 1
    return scan


@pytest.mark.django_db(transaction=True)
def test_a_technician_resolves_the_leftover_undoes_a_removal_and_downloads_the_blurred_copy(
    serial_live_server: Any,
    chromium: Any,
    eager_tasks: None,
    settings: Any,
    technician: Any,
    password: str,
    tmp_path: Path,
) -> None:
    scan = _leftover_scan(settings, technician)
    tech = Session(chromium, serial_live_server.url, viewport={"width": 1440, "height": 900})
    page = tech.page
    tech.log_in(technician.username, password)
    page.goto(f"/scans/{scan.pk}/")
    page.locator("#review-title").wait_for()
    until(page, "() => document.querySelector('[data-viewer-image]').naturalWidth > 0")
    leftover = page.locator('[data-leftover][data-state="open"]')
    assert leftover.count() == 1
    assert page.get_by_text("Needs review").first.is_visible()
    tech.shot("30-review-leftover-open")

    # Confirm is refused while the leftover is open, with the reason in words.
    page.get_by_role("button", name="Confirm regions").click()
    page.locator(".review__message--error").get_by_text("leftover detection").wait_for()
    scan.refresh_from_db()
    assert scan.reviewed_at is None and scan.needs_review

    # A removal asks first: cancelling changes nothing.
    first = scan.regions.order_by("index").first()
    page.get_by_role("button", name="Remove region 1", exact=True).click()
    dialog = page.locator("[data-remove-dialog]")
    dialog.get_by_text("Ask to remove region 1?").wait_for()
    tech.shot("31-review-remove-asks")
    dialog.get_by_role("button", name="Cancel").click()
    page.get_by_text("Nothing changed").wait_for()
    assert not Region.objects.get(pk=first.pk).removal_pending
    # Asked for real, then undone.
    page.get_by_role("button", name="Remove region 1", exact=True).click()
    dialog.get_by_role("button", name="Ask for removal").click()
    page.get_by_text("Removal asked: undo until you confirm").wait_for()
    assert Region.objects.get(pk=first.pk).removal_pending
    tech.shot("32-review-removal-pending")
    page.get_by_role("button", name="Undo the removal of region 1").click()
    page.get_by_text("Removal request undone").wait_for()
    assert not Region.objects.get(pk=first.pk).removal_pending

    # Dismissing needs a typed reason (this one is real text, so it is covered instead).
    reason = page.get_by_placeholder("Why it is not identifying text")
    reason.fill("no")
    page.get_by_role("button", name="Dismiss").click()
    page.locator(".review__message--error").get_by_text("at least 5 characters").wait_for()
    assert not LeftoverDetection.objects.get(scan=scan).dismissed
    page.get_by_role("button", name="Cover with a region").click()
    page.locator('[data-leftover][data-state="covered"]').wait_for()
    (box,) = LeftoverDetection.objects.filter(scan=scan)
    assert Region.objects.filter(
        scan=scan, x1__lte=box.x1, y1__lte=box.y1, x2__gte=box.x2, y2__gte=box.y2
    ).exists()
    # The table and the image agree: a box drawn by a person reads "manual" in both.
    assert page.locator("[data-region] td.mono", has_text="manual").count() == 1

    page.get_by_role("button", name="Confirm regions").click()
    page.get_by_text(f"Confirmed by {technician.username}").wait_for()
    scan.refresh_from_db()
    assert scan.needs_review is False and scan.reviewed_by == technician
    assert page.locator("[data-status] .badge--warning", has_text="Needs review").count() == 0
    tech.shot("33-review-confirmed")

    # The blurred teaching copy, offered beside the grid image, downloads as a PNG.
    with page.expect_download() as info:
        page.locator("[data-blurred-offer]").get_by_role("link", name="download it").click()
    path = tmp_path / "blurred.png"
    info.value.save_as(path)
    blurred = np.asarray(Image.open(io.BytesIO(path.read_bytes())))
    assert blurred.shape[:2] == (scan.height, scan.width)
    # No burned-in text left anywhere: every line sits in a region, blurred over.
    assert not (blurred.min(axis=-1) >= factories.INK_THRESHOLD).any()
    Image.fromarray(blurred).save(SCREENSHOTS / "34-review-blurred-copy.png")
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.reload()
    page.locator("#review-title").wait_for()
    tech.shot("35-review-confirmed-1920")
    # Let the viewer's own requests finish before the database is torn down.
    page.wait_for_load_state("networkidle")
    tech.close()
    # The refused confirm (409) and the too-short reason (400) were expected; nothing else.
    assert tech.console_errors("status of 409", "HTTP 409", "status of 400", "HTTP 400") == []


@pytest.mark.django_db(transaction=True)
def test_a_doctor_approves_a_requested_removal_for_the_whole_group(
    serial_live_server: Any,
    chromium: Any,
    eager_tasks: None,
    settings: Any,
    technician: Any,
    doctor: Any,
    password: str,
) -> None:
    from imaging.services import review

    scan = _leftover_scan(settings, technician)
    target = scan.regions.order_by("index").first()
    review.region_removal_request(region=target, actor=technician, group=True)
    medic = Session(chromium, serial_live_server.url, viewport={"width": 1440, "height": 900})
    page = medic.page
    medic.log_in(doctor.username, password)
    page.goto(f"/scans/{scan.pk}/")
    page.get_by_text(f"Removal requested by {technician.username}").wait_for()
    medic.shot("36-review-doctor-removal-request")
    with page.expect_navigation():  # the page reloads after the decision
        page.get_by_role("button", name="Approve removal of region 1").click()
    page.locator("#regions-title").wait_for()
    assert page.locator("[data-removal-decision]").count() == 0
    assert not Region.objects.filter(pk=target.pk).exists()
    # Let the viewer's own requests finish before the database is torn down.
    page.wait_for_load_state("networkidle")
    medic.close()
    assert medic.console_errors() == []
