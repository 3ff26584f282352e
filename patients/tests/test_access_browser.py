"""Who sees a patient, and the investigator's search, as people see them in Debian's headless
Chromium: a Radiology doctor opens a patient's "Departments and care team", adds a Cardiology
colleague to the care team, is told a record keeps one department; an admin goes from the
audit log to "Find a patient's events by hospital id" and finds that patient's events by
reference. Screenshots go to var/screenshots/ (MEDIMG_SCREENSHOT_DIR overrides): access-01 to
access-04."""

from __future__ import annotations

from typing import Any

import pytest

from patients.models import Patient

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.own_departments,
]

browser_tests = pytest.importorskip("medimg.tests.test_browser")


def test_care_team_and_investigator_pages_in_a_browser(
    serial_live_server: Any,
    chromium: Any,
    doctor: Any,
    other_doctor: Any,
    technician: Any,
    admin: Any,
    department: Any,
    other_department: Any,
    password: str,
) -> None:
    patient = Patient.objects.create(id="H-5521-CT", name="Vera Quintero", age=58)
    patient.departments.set([department])
    doris = browser_tests.Session(chromium, serial_live_server.url)
    doris.log_in(doctor.username, password)

    doris.page.goto(f"/patients/{patient.id}/")
    doris.page.get_by_role("link", name="Departments and care team").click()
    doris.page.wait_for_url(f"**/patients/{patient.id}/access/")
    assert "Who sees Vera Quintero" in doris.page.inner_text("h1")
    doris.shot("access-01-page")

    doris.page.get_by_label("Add a technician or doctor").select_option("olga")
    doris.page.get_by_role("button", name="Add to care team").click()
    doris.page.wait_for_url(f"**/patients/{patient.id}/access/")
    main = doris.page.inner_text("main")
    assert "olga added to the care team." in main
    assert doris.page.locator('[data-team-member="olga"]').count() == 1
    assert "Cardiology" in doris.page.locator('[data-team-member="olga"]').inner_text()
    doris.shot("access-02-care-team")

    doris.page.get_by_label("Radiology").uncheck()
    doris.page.get_by_role("button", name="Save departments").click()
    error = doris.page.locator("[data-access-error]").inner_text()
    assert error == "A patient record must belong to at least one department."
    doris.shot("access-03-last-department")
    assert list(patient.departments.all()) == [department]
    assert list(patient.care_team.all()) == [other_doctor]
    expected_400 = f"HTTP 400 {serial_live_server.url}/patients/{patient.id}/access/"
    assert doris.console_errors(expected_400, "status of 400") == []
    doris.close()

    from accounts.tests.otp_codes import code, enrol

    device = enrol(admin)
    adm = browser_tests.Session(chromium, serial_live_server.url)
    adm.log_in(admin.username, password, otp=lambda: code(device))
    adm.page.goto("/manage/audit/")
    adm.page.get_by_role("link", name="Find a patient's events by hospital id").click()
    adm.page.wait_for_url("**/manage/audit/patient/")
    adm.page.get_by_label("Hospital patient id").fill(patient.id)
    adm.page.get_by_role("button", name="Find events").click()
    adm.page.wait_for_selector("[data-patient-events]")
    found = adm.page.inner_text("[data-patient-events]")
    assert patient.reference in found and "patient_care_team_changed" not in found
    assert "Patient Care Team Changed" in found and "from: none; to: olga" in found
    assert adm.page.locator("[data-audit-row]").count() >= 2
    assert patient.id not in adm.page.content() and patient.name not in adm.page.content()
    adm.shot("access-04-investigator")
    assert adm.console_errors() == []
    adm.close()
