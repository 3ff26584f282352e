"""Issue 16's smaller page defects, in Chromium: what a person sees on each page."""

from __future__ import annotations

from typing import Any

import pytest

from imaging.tests.test_worklist_paging import _scans
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
    _scans(technician)
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
    tech.shot("26-worklist-last-page")
    assert tech.console_errors() == []
    tech.close()


@pytest.mark.django_db(transaction=True)
def test_a_technician_corrects_a_name_and_moves_an_image(
    serial_live_server: Any, chromium: Any, technician: Any, password: str
) -> None:
    scan = _scans(technician, 1)[0]  # under "Worklist Patient", MRN-WL
    right = Patient.objects.create(id="MRN-RIGHT", name="Grace Hoper", age=85)
    tech = Session(chromium, serial_live_server.url, viewport={"width": 1440, "height": 900})
    page = tech.page
    tech.log_in(technician.username, password)

    page.goto(f"/patients/{right.pk}/")
    page.get_by_role("link", name="Edit name or age").click()
    page.get_by_label("Full name").fill("Grace Hopper")
    tech.shot("27-patient-edit")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"**/patients/{right.pk}/")
    page.get_by_text("The patient's details were saved.").wait_for()
    assert page.get_by_role("heading", name="Grace Hopper").is_visible()

    page.goto(f"/scans/{scan.pk}/move/")
    field = page.get_by_label("Patient ID (hospital number) the image belongs to")
    field.fill("MRN-NOPE")
    page.get_by_role("button", name="Move").click()
    page.get_by_text("No patient with this ID that you can see").wait_for()
    tech.shot("28-scan-move-refused")
    field.fill(right.pk)
    page.get_by_role("button", name="Move").click()
    page.wait_for_url(f"**/patients/{right.pk}/")
    page.get_by_text(
        "The image was moved from Worklist Patient (MRN-WL) to Grace Hopper"
    ).wait_for()
    assert page.get_by_role("link", name=scan.original_filename).is_visible()
    tech.shot("29-scan-moved")
    # The refused move is a 400 page, as a form with errors should be.
    assert tech.console_errors("HTTP 400", "status of 400") == []
    tech.close()
