"""The admins' erasure page in Chromium: from the admin home, a refused try (the reason names
the patient), then the erasure with a fresh authenticator code; screenshots in
var/screenshots/ (MEDIMG_SCREENSHOT_DIR)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from accounts.tests.otp_codes import code, enrol
from imaging.models import Erasure, Scan
from imaging.tests import factories
from patients.models import Patient

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(
    os.environ.get("MEDIMG_SCREENSHOT_DIR")
    or Path(django_settings.BASE_DIR) / "var" / "screenshots"
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"
    ),
]

sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")


def test_an_admin_erases_a_scan_on_the_page(
    serial_live_server: Any,
    chromium: Any,
    technician: Any,
    admin: Any,
    password: str,
    settings: Any,
    eager_tasks: None,
) -> None:
    settings.IMAGING_DETECTOR = "imaging.tests.factories.bright_text_detector"
    Patient.objects.create(id="MRN-PAGE-5150", name="Paula Pagewright", age=47)
    api = APIClient()
    api.force_authenticate(technician)
    png = factories.png_bytes(factories.text_image(200, 160))
    response = api.post(
        "/api/patients/MRN-PAGE-5150/images/",
        {"files": [SimpleUploadedFile("paula.png", png)]},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    scan_id = response.json()[0]["id"]

    device = enrol(admin)
    context = chromium.new_context(
        base_url=serial_live_server.url, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto("/login/")
    page.get_by_label("Username").fill(admin.username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/login/otp/**")
    page.get_by_label("Code from your authenticator app").fill(code(device))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"{serial_live_server.url}/")
    page.get_by_role("link", name="Erase a patient or scan").click()
    page.wait_for_url("**/manage/erasure/")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "40-admin-erasure-form.png"), full_page=True)

    # The session is verified, yet the form wants a code typed now; the reason names the
    # patient, so it is refused and nothing is erased.
    page.get_by_label("One scan").check()
    page.get_by_label("Hospital id, patient reference or scan number").fill(str(scan_id))
    page.get_by_label("Reason (kept in the audit log; no names or hospital ids)").fill(
        "Paula Pagewright asked for it"
    )
    page.get_by_label("Current code from your authenticator app").fill(code(device, steps_ahead=1))
    page.get_by_label("I understand").check()
    page.get_by_role("button", name="Erase for good").click()
    page.get_by_text("leave out the patient's name").wait_for()
    page.screenshot(path=str(SCREENSHOTS / "41-admin-erasure-refused.png"), full_page=True)
    assert Scan.objects.filter(pk=scan_id).exists()

    device.refresh_from_db()
    device.last_t = -1  # The code was used by the refused try; let the next step's code count.
    device.save(update_fields=["last_t"])
    page.get_by_label("One scan").check()
    page.get_by_label("Hospital id, patient reference or scan number").fill(str(scan_id))
    page.get_by_label("Reason (kept in the audit log; no names or hospital ids)").fill(
        "Erasure request ticket PRIV-2026-118"
    )
    page.get_by_label("Current code from your authenticator app").fill(code(device, steps_ahead=1))
    page.get_by_label("I understand").check()
    page.get_by_role("button", name="Erase for good").click()
    page.locator("[data-erasure-done]").wait_for()
    page.screenshot(path=str(SCREENSHOTS / "42-admin-erasure-done.png"), full_page=True)
    text = page.locator("main").inner_text() if page.locator("main").count() else page.content()
    assert "Erased." in text and "MRN-PAGE-5150" not in text and "Paula" not in text
    assert not Scan.objects.filter(pk=scan_id).exists()
    assert Erasure.objects.get().scan_ids == [scan_id]
    # The refused form answered 400 on purpose; nothing else may have failed.
    assert [e for e in errors if "status of 400" not in e] == []
    context.close()
