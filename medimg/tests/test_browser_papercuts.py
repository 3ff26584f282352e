"""Issue 16's smaller page defects, in Chromium: what a person sees on each page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imaging.tests.test_worklist_paging import completed_scans
from medimg.tests.test_browser import CHROMIUM, Session
from patients.models import Patient

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"
    ),
]


@pytest.mark.django_db(transaction=True)
def test_the_worklist_pages_through_every_image(
    serial_live_server: Any, chromium: Any, technician: Any, password: str
) -> None:
    completed_scans(technician)
    tech = Session(chromium, serial_live_server.url, viewport={"width": 1440, "height": 900})
    page = tech.page
    tech.log_in(technician.username, password)
    rows = page.locator("[data-worklist-item]")
    assert rows.count() == 10
    assert page.get_by_text("Showing 1–10 of 23").is_visible()
    pager = page.get_by_role("navigation", name="Review worklist pages")
    pager.get_by_role("link", name="Next").click()
    page.wait_for_url("**/?worklist=2")
    pager.get_by_role("link", name="Next").click()
    page.wait_for_url("**/?worklist=3")
    assert rows.count() == 3
    assert pager.get_by_text("Page 3 of 3").is_visible()
    tech.shot("i16-26-worklist-last-page")
    assert tech.console_errors() == []
    tech.close()


@pytest.mark.django_db(transaction=True)
def test_a_technician_corrects_a_name_and_moves_an_image(
    serial_live_server: Any, chromium: Any, technician: Any, password: str
) -> None:
    scan = completed_scans(technician, 1)[0]  # under "Worklist Patient", MRN-WL
    right = Patient.objects.create(id="MRN-RIGHT", name="Grace Hoper", age=85)
    tech = Session(chromium, serial_live_server.url, viewport={"width": 1440, "height": 900})
    page = tech.page
    tech.log_in(technician.username, password)

    page.goto(f"/patients/{right.pk}/")
    page.get_by_role("link", name="Edit name or age").click()
    page.get_by_label("Full name").fill("Grace Hopper")
    tech.shot("i16-27-patient-edit")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"**/patients/{right.pk}/")
    page.get_by_text("The patient's details were saved.").wait_for()
    assert page.get_by_role("heading", name="Grace Hopper").is_visible()

    page.goto(f"/scans/{scan.pk}/move/")
    field = page.get_by_label("Patient ID (hospital number) the image belongs to")
    field.fill("MRN-NOPE")
    page.get_by_role("button", name="Move").click()
    page.get_by_text("No patient with this ID that you can see").wait_for()
    tech.shot("i16-28-scan-move-refused")
    field.fill(right.pk)
    page.get_by_role("button", name="Move").click()
    page.wait_for_url(f"**/patients/{right.pk}/")
    page.get_by_text(
        "The image was moved from Worklist Patient (MRN-WL) to Grace Hopper"
    ).wait_for()
    assert page.get_by_role("link", name=scan.original_filename).is_visible()
    tech.shot("i16-29-scan-moved")
    # The refused move is a 400 page, as a form with errors should be.
    assert tech.console_errors("HTTP 400", "status of 400") == []
    tech.close()


@pytest.mark.django_db(transaction=True)
def test_the_audit_page_filters_by_scan_and_exports_what_it_shows(
    serial_live_server: Any, chromium: Any, admin: Any, doctor: Any, password: str
) -> None:
    from accounts.tests.otp_codes import code, enrol
    from audit.models import Action
    from audit.services import audit_record

    for scan in ("41", "41", "42"):
        audit_record(action=Action.SCAN_VIEWED, actor=doctor, target_type="scan", target_id=scan)
    audit_record(action=Action.SCAN_PROCESSED, target_type="scan", target_id="41")
    device = enrol(admin)
    adm = Session(chromium, serial_live_server.url, viewport={"width": 1440, "height": 900})
    page = adm.page
    adm.log_in(admin.username, password, otp=lambda: code(device))
    page.goto("/manage/audit/")
    page.get_by_label("Scan (image) number").fill("41")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/manage/audit/?*scan=41*")
    assert page.locator("[data-audit-row]").count() == 3
    assert page.locator("[data-actor-label]").all_inner_texts() == ["system"]
    adm.shot("i16-30-audit-filtered-by-scan")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export these 3 entries (CSV)").click()
    path = download_info.value.path()
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 and lines[0].startswith("sequence,created_at,actor")
    assert adm.console_errors() == []
    adm.close()


@pytest.mark.django_db(transaction=True)
def test_the_image_list_shows_finished_uploads_without_a_click(
    serial_live_server: Any,
    chromium: Any,
    technician: Any,
    password: str,
    eager_tasks: None,
    settings: Any,
    tmp_path: Path,
) -> None:
    import numpy as np
    from PIL import Image

    settings.IMAGING_DETECTOR = "imaging.jobs.detector.detect"
    patient = Patient.objects.create(id="MRN-LIST", name="Listed Patient", age=40)
    files = []
    for n in range(2):
        pixels = (np.indices((96, 128)).sum(axis=0) * (n + 1) % 256).astype(np.uint8)
        path = tmp_path / f"upload-{n}.png"
        Image.fromarray(pixels).save(path)
        files.append(str(path))
    tech = Session(chromium, serial_live_server.url, viewport={"width": 1440, "height": 900})
    page = tech.page
    tech.log_in(technician.username, password)
    page.goto(f"/patients/{patient.pk}/")
    card = page.locator("[data-scan-list-card]")
    assert card.get_by_text("No images yet.").is_visible()

    page.locator("input[type=file]").set_input_files(files)

    # No click: the list card is read again once the files are stored.
    card.get_by_role("link", name="upload-0.png").wait_for()
    card.get_by_role("link", name="upload-1.png").wait_for()
    assert card.get_by_text("No images yet.").count() == 0
    card.locator("[data-status-label].badge--completed").nth(1).wait_for()
    assert card.locator(".count").inner_text() == "2"
    tech.shot("i16-32-patient-list-follows-uploads")
    assert tech.console_errors() == []
    tech.close()
