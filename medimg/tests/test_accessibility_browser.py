"""Accessibility of every page, checked by axe-core in a real headless Chromium (issue 16 item 6).

A technician, a doctor and an admin each visit every page their role reaches (and a signed-out
visitor the sign-in and password-reset pages); on each page axe-core (npm, node_modules/axe-core,
pinned in package-lock.json, injected into the page: no CDN) runs all its rules, and the test
fails on any violation of impact "serious" or "critical" (contrast, names of buttons and fields,
duplicate ids, the page's language, ...), listing the rule, the elements and axe's advice.
The same walk saves a screenshot of each page at 1440x900 and 1920x1080 to var/screenshots/
(MEDIMG_SCREENSHOT_DIR overrides), named a11y-<role>-<page>-<width>.png. docs/accessibility.md.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from imaging.models import ScanStatus
from medimg.tests.test_browser import CHROMIUM
from patients.models import Patient

AXE = Path(django_settings.BASE_DIR) / "node_modules" / "axe-core" / "axe.min.js"
TIMEOUT_MS = 30_000
SIZES = ((1440, 900), (1920, 1080))
SCREENSHOTS = Path(
    os.environ.get("MEDIMG_SCREENSHOT_DIR")
    or Path(django_settings.BASE_DIR) / "var" / "screenshots"
)
BLOCKING = {"serious", "critical"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")

# All of axe's rules; the page as a whole (iframes included). Returns only what the test reports.
RUN_AXE = """
async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => ({
      target: n.target.join(" "),
      html: n.html.slice(0, 160),
      summary: (n.failureSummary || "").slice(0, 300),
    })),
    count: v.nodes.length,
  }));
}
"""


@pytest.fixture
def server(serial_live_server: Any, eager_tasks: None, settings: Any) -> Any:
    settings.IMAGING_DETECTOR = "imaging.tests.factories.bright_text_detector"
    return serial_live_server


def _scan(technician: Any) -> Any:
    """A patient with one processed image (a PNG with burned-in text; the classical detector)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from imaging.services.upload import scan_upload
    from imaging.tests import factories

    patient = Patient.objects.create(id="MRN-A11Y-1", name="Ada Lovelace", age=36)
    upload = SimpleUploadedFile(
        "chest.png", factories.png_bytes(factories.text_image(640, 480)), "image/png"
    )
    (scan,) = scan_upload(patient=patient, uploads=[upload], uploaded_by=technician)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.COMPLETED, scan.processing_error
    return scan


def _signed_in_context(chromium: Any, server: Any, user: Any) -> Any:
    """A browser context carrying a session made by Django's test client (both factors for an
    admin: the conftest's force_login). The real login form is checked by the anonymous walk
    and the admin's two-step sign-in below."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    context = _context(chromium, server)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    context.add_cookies(
        [{"name": cookie.key, "value": cookie.value, "url": server.url, "httpOnly": True}]
    )
    return context


def _context(chromium: Any, server: Any) -> Any:
    # bypass_csp: the site's Content-Security-Policy (rightly) refuses the inline script that
    # carries axe; the pages themselves are unchanged.
    context = chromium.new_context(
        base_url=server.url, viewport={"width": SIZES[0][0], "height": SIZES[0][1]}, bypass_csp=True
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


def _settle(page: Any) -> None:
    page.wait_for_load_state("load")
    # A page that keeps polling is checked as it is after 10 s.
    with contextlib.suppress(sync_api.TimeoutError):
        page.wait_for_load_state("networkidle", timeout=10_000)
    page.wait_for_timeout(300)


def _audit(page: Any, axe: str) -> list[dict[str, Any]]:
    if not page.evaluate("() => typeof axe !== 'undefined'"):
        page.add_script_tag(content=axe)
    return page.evaluate(RUN_AXE)


def _walk(
    context: Any, role: str, pages: list[tuple[str, str]], axe: str, *, seen: dict[str, Any]
) -> None:
    """Visit each (name, path): it must answer below 400, then axe, then the screenshots."""
    page = context.new_page()
    for name, path in pages:
        response = page.goto(path)
        assert response is not None and response.status < 400, (role, path, response)
        _settle(page)
        key = f"{role} {name} ({page.url.removeprefix(context_base(page))})"
        seen[key] = [v for v in _audit(page, axe) if v["impact"] in BLOCKING]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(200)
            page.screenshot(
                path=str(SCREENSHOTS / f"a11y-{role}-{name}-{width}.png"), full_page=True
            )
        page.set_viewport_size({"width": SIZES[0][0], "height": SIZES[0][1]})
    page.close()


def context_base(page: Any) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(page.url)
    return f"{parts.scheme}://{parts.netloc}"


def _report(seen: dict[str, Any]) -> str:
    lines = []
    for where, violations in seen.items():
        for v in violations:
            lines.append(f"{where}: [{v['impact']}] {v['id']} — {v['help']} ({v['count']} nodes)")
            for node in v["nodes"]:
                lines.append(f"    {node['target']}  {node['html']}")
                lines.append(f"      {node['summary']}".replace("\n", " | "))
    return "\n".join(lines)


@pytest.mark.django_db(transaction=True)
def test_axe_finds_no_serious_violation_on_any_page_of_any_role(
    server: Any, chromium: Any, technician: Any, doctor: Any, admin: Any, password: str
) -> None:
    assert AXE.exists(), "axe-core is not installed: `make install` (npm ci)"
    axe = AXE.read_text()
    scan = _scan(technician)
    patient = scan.patient
    seen: dict[str, Any] = {}

    # Signed out: sign-in, password reset (request, sent, a real link, done).
    from django.contrib.auth.tokens import default_token_generator
    from django.urls import reverse
    from django.utils.encoding import force_bytes
    from django.utils.http import urlsafe_base64_encode

    uid = urlsafe_base64_encode(force_bytes(doctor.pk))
    token = default_token_generator.make_token(doctor)
    anonymous = _context(chromium, server)
    _walk(
        anonymous,
        "anonymous",
        [
            ("login", "/login/"),
            ("password-reset", reverse("password_reset")),
            ("password-reset-sent", reverse("password_reset_done")),
            ("password-reset-new", reverse("password_reset_confirm", args=[uid, token])),
            ("password-reset-complete", reverse("password_reset_complete")),
        ],
        axe,
        seen=seen,
    )
    # The check itself can fail: a page with a nameless button and grey-on-white text.
    page = anonymous.new_page()
    page.set_content(
        '<html lang="en"><body><main><button></button>'
        '<p style="color:#bbb;background:#fff">Faint</p></main></body></html>'
    )
    assert {v["id"] for v in _audit(page, axe) if v["impact"] in BLOCKING} >= {
        "button-name",
        "color-contrast",
    }
    page.close()
    anonymous.close()

    common = [
        ("home", "/"),
        ("emergency-access", "/emergency-access/"),
        ("two-step", "/account/2fa/"),
    ]
    tech = _signed_in_context(chromium, server, technician)
    _walk(
        tech,
        "technician",
        [
            *common,
            ("patient", f"/patients/{patient.pk}/"),
            ("patient-edit", f"/patients/{patient.pk}/edit/"),
            ("scan", f"/scans/{scan.pk}/"),
            ("scan-move", f"/scans/{scan.pk}/move/"),
            ("qc-clusters", f"/scans/{scan.pk}/clusters/"),
        ],
        axe,
        seen=seen,
    )
    tech.close()

    doc = _signed_in_context(chromium, server, doctor)
    _walk(
        doc,
        "doctor",
        [
            *common,
            ("patient", f"/patients/{patient.pk}/"),
            ("patient-access", f"/patients/{patient.pk}/access/"),
            ("scan", f"/scans/{scan.pk}/"),
            ("qc", "/qc/"),
            ("qc-clusters", f"/scans/{scan.pk}/clusters/"),
        ],
        axe,
        seen=seen,
    )
    doc.close()

    # The admin signs in through the form and the second-factor page (real TOTP codes).
    from accounts.tests.otp_codes import code, enrol

    device = enrol(admin)
    adm = _context(chromium, server)
    page = adm.new_page()
    page.goto("/login/")
    page.get_by_label("Username").fill(admin.username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/login/otp/**")
    _settle(page)
    seen["admin second factor (/login/otp/)"] = [
        v for v in _audit(page, axe) if v["impact"] in BLOCKING
    ]
    page.get_by_label("Code from your authenticator app").fill(code(device))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"{server.url}/")
    page.close()
    _walk(
        adm,
        "admin",
        [
            ("home", "/"),
            ("statistics", "/manage/statistics/"),
            ("qc", "/qc/"),
            ("audit-log", "/manage/audit/"),
            ("investigator", "/manage/audit/patient/?patient_id=" + patient.pk),
            ("erasure", "/manage/erasure/"),
            ("two-step", "/account/2fa/"),
            ("django-admin", "/admin/"),
        ],
        axe,
        seen=seen,
    )
    adm.close()

    assert len(seen) == 5 + 2 * len(common) + 5 + 5 + 1 + 8, sorted(seen)
    assert not any(seen.values()), "\n" + _report(seen)


def _check(page: Any, axe: str, seen: dict[str, Any], where: str, shot: str) -> None:
    _settle(page)
    seen[where] = [v for v in _audit(page, axe) if v["impact"] in BLOCKING]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"a11y-state-{shot}.png"), full_page=True)


@pytest.mark.django_db(transaction=True)
def test_axe_finds_no_serious_violation_in_states_a_click_opens(
    server: Any, chromium: Any, technician: Any, doctor: Any, password: str, tmp_path: Path
) -> None:
    """What the page walk does not see: a refused sign-in, a refused upload, the idle warning,
    the viewer's shortcut sheet and the restored original."""
    assert AXE.exists(), "axe-core is not installed: `make install` (npm ci)"
    axe = AXE.read_text()
    scan = _scan(technician)
    patient = scan.patient
    seen: dict[str, Any] = {}

    anonymous = _context(chromium, server)
    page = anonymous.new_page()
    page.goto("/login/")
    page.get_by_label("Username").fill(doctor.username)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    page.locator(".form-errors[role=alert]").wait_for()
    _check(page, axe, seen, "login refused", "login-refused")
    anonymous.close()

    tech = _signed_in_context(chromium, server, technician)
    page = tech.new_page()
    page.goto(f"/patients/{patient.pk}/")
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    page.locator("input[type=file]").set_input_files([str(bad)])
    page.locator("[data-upload].upload--failed").get_by_text("Refused").wait_for()
    _check(page, axe, seen, "technician upload refused", "upload-refused")
    page.evaluate("() => document.querySelector('[data-idle-dialog]').showModal()")
    _check(page, axe, seen, "technician idle warning", "idle-warning")
    tech.close()

    doc = _signed_in_context(chromium, server, doctor)
    page = doc.new_page()
    page.goto(f"/scans/{scan.pk}/")
    page.locator("[data-viewer]").wait_for()
    _settle(page)
    page.locator("[data-cs-stage]").focus()
    page.keyboard.press("?")
    sheet = page.get_by_role("dialog", name="Keyboard shortcuts")
    sheet.wait_for()
    _check(page, axe, seen, "doctor viewer shortcut sheet", "shortcut-sheet")
    page.keyboard.press("Escape")
    sheet.wait_for(state="hidden")
    page.get_by_label("Reason for viewing the original").fill("Check the requisition")
    page.get_by_role("button", name="Restore original").click()
    page.locator("[data-viewer][data-restored]").wait_for()
    _check(page, axe, seen, "doctor restored original", "restored")
    doc.close()

    assert len(seen) == 5, sorted(seen)
    assert not any(seen.values()), "\n" + _report(seen)
