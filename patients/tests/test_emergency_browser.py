"""Emergency access as people see it, in Debian's headless Chromium: a Cardiology doctor meets
the 404 of a Radiology patient, follows it to the form, opens access (the banner with the time
left), ends it; an admin sees the review list. Screenshots go to var/screenshots/
(MEDIMG_SCREENSHOT_DIR overrides): emergency-01 to emergency-04."""

from __future__ import annotations

import re
from typing import Any

import pytest

from patients.models import BreakGlassGrant, Patient

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

browser_tests = pytest.importorskip("medimg.tests.test_browser")

REASON = "Unconscious in the emergency room, prior imaging needed now"


def test_emergency_access_in_a_browser(
    serial_live_server: Any,
    chromium: Any,
    technician: Any,
    other_doctor: Any,
    admin: Any,
    password: str,
) -> None:
    patient = Patient.objects.create(
        id="H-7731-ZQ", name="Zebedee Quux", age=70, created_by=technician
    )
    olga = browser_tests.Session(chromium, serial_live_server.url)
    olga.log_in(other_doctor.username, password)

    olga.page.goto(f"/patients/{patient.id}/")
    assert "No record you can see" in olga.page.inner_text("main")
    assert patient.name not in olga.page.content()
    olga.page.get_by_role("link", name="Request emergency access").click()
    olga.page.wait_for_url("**/emergency-access/?patient=H-7731-ZQ")
    assert olga.page.get_by_label(re.compile("Patient ID")).input_value() == patient.id
    olga.page.get_by_label("Clinical reason").fill(REASON)
    olga.page.get_by_label(re.compile("I have a clinical need")).check()
    olga.shot("emergency-01-form")

    olga.page.get_by_role("button", name="Open emergency access").click()
    olga.page.wait_for_url(f"**/patients/{patient.id}/")
    banner = olga.page.locator(".emergency-banner")
    text = banner.inner_text()
    assert "Emergency access to Zebedee Quux" in text
    assert re.search(r"(3 h 59|4 h 0) min left", text), text
    olga.shot("emergency-02-banner")

    banner.get_by_role("button", name="End emergency access now").click()
    olga.page.wait_for_url(f"{serial_live_server.url}/")
    assert olga.page.locator(".emergency-banner").count() == 0
    assert "Emergency access ended" in olga.page.inner_text("main")
    olga.shot("emergency-03-ended")
    # The 404 of the first visit is the one HTTP error expected (the console repeats it
    # without the address; the response list above names it).
    expected_404 = f"HTTP 404 {serial_live_server.url}/patients/{patient.id}/"
    assert [e for e in olga.errors if e.startswith("HTTP")] == [expected_404]
    assert olga.console_errors(expected_404, "status of 404 (Not Found)") == []
    olga.close()
    grant = BreakGlassGrant.objects.get()
    assert grant.ended_at is not None

    from accounts.tests.otp_codes import code, enrol

    device = enrol(admin)
    adm = browser_tests.Session(chromium, serial_live_server.url)
    adm.log_in(admin.username, password, otp=lambda: code(device))
    assert "1 emergency access waiting for review" in adm.page.inner_text("main")
    adm.page.get_by_role("link", name="Review emergency access").click()
    adm.page.wait_for_url("**/admin/patients/breakglassgrant/?reviewed=no")
    listing = adm.page.inner_text("#changelist")
    assert patient.reference in listing and "olga" in listing
    assert patient.id not in adm.page.content() and patient.name not in adm.page.content()
    adm.shot("emergency-04-admin-review")
    adm.close()
