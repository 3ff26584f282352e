"""A whole working day in a real headless Chromium, driven by Playwright against a live server.

- A technician signs in, creates a patient, uploads a real ultrasound with burned-in text
  (and a file that is refused, and one dropped on the upload area), watches processing
  finish, reviews the regions (draws a missed box, removes one, confirms), finds no restore
  control, and the restore URL refuses them.
- A doctor opens the patient, restores the original with a reason (the pixels on screen are
  the uploaded pixels), zooms, adds a note and downloads the original as PNG.
- An admin sees the statistics charts, filters the audit log and verifies the chain.
- The inactivity warning appears before sign-out, "Stay signed in" keeps the session, and
  the page signs out when the time is up.

Debian's Chromium (/usr/bin/chromium; `playwright install` cannot download browsers here),
headless, --no-sandbox. Processing runs in-process (eager Celery) with the project's real
YOLO detector. A screenshot of every page goes to var/screenshots/ (MEDIMG_SCREENSHOT_DIR
overrides), which CI keeps as artifacts.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.conf import settings as django_settings
from PIL import Image

from audit.models import Action, AuditEvent
from imaging.models import Region, RegionSource, Scan, ScanStatus
from patients.models import Patient

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 30_000
SCREENSHOTS = Path(
    os.environ.get("MEDIMG_SCREENSHOT_DIR")
    or Path(django_settings.BASE_DIR) / "var" / "screenshots"
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"
    ),
]

sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")


# --- Fixtures -------------------------------------------------------------------------------


@pytest.fixture
def in_process(eager_tasks: None, settings: Any) -> None:
    """Eager tasks and the project's real detector."""
    settings.IMAGING_DETECTOR = "imaging.jobs.detector.detect"


@pytest.fixture
def server(serial_live_server: Any) -> Any:
    return serial_live_server


class Session:
    """One signed-in browser tab, with screenshots and a record of console errors."""

    def __init__(self, browser: Any, base: str, *, viewport: dict[str, int] | None = None):
        self.base = base
        self.context = browser.new_context(
            base_url=base,
            viewport=viewport or {"width": 1280, "height": 900},
            accept_downloads=True,
        )
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on(
            "pageerror",
            lambda error: self.errors.append(
                f"pageerror: {error} at {self.page.url} {error.stack}"
            ),
        )
        self.page.on(
            "response",
            lambda response: (
                self.errors.append(f"HTTP {response.status} {response.url}")
                if response.status >= 400
                else None
            ),
        )
        self.page.on(
            "console",
            lambda message: self.errors.append(message.text) if message.type == "error" else None,
        )

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def log_in(self, username: str, password: str, otp: Any = None) -> None:
        self.page.goto("/login/")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Log in").click()
        if otp is not None:
            self.page.wait_for_url("**/login/otp/**")
            self.shot("17-admin-second-factor")
            self.page.get_by_label("Code from your authenticator app").fill(otp())
            self.page.get_by_role("button", name="Verify").click()
        self.page.wait_for_url(f"{self.base}/")

    def console_errors(self, *expected: str) -> list[str]:
        return [e for e in self.errors if not any(text in e for text in expected)]

    def close(self) -> None:
        self.context.close()


def until(page: Any, script: str, arg: Any = None, timeout_ms: int = TIMEOUT_MS) -> None:
    """Wait until `script` (a JS function) returns true. Not page.wait_for_function: that
    evaluates its predicate with eval(), which the site's Content-Security-Policy forbids."""
    waited = 0
    while not page.evaluate(script, arg):
        if waited >= timeout_ms:
            raise AssertionError(f"timed out waiting for {script}")
        page.wait_for_timeout(100)
        waited += 100


def _real_ultrasound() -> np.ndarray:
    """A real ultrasound (pydicom-data US1_UNCR.dcm) with burned-in text, RGB uint8."""
    import pydicom
    from pydicom.data import get_testdata_file

    return np.ascontiguousarray(pydicom.dcmread(get_testdata_file("US1_UNCR.dcm")).pixel_array)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


# Draws a small PNG on a canvas and drops it on the upload area as a file.
DROP_PNG = """
(name) => new Promise((resolve) => {
  const canvas = document.createElement("canvas");
  canvas.width = 64;
  canvas.height = 48;
  const context = canvas.getContext("2d");
  context.fillStyle = "#333";
  context.fillRect(0, 0, 64, 48);
  canvas.toBlob((blob) => {
    const transfer = new DataTransfer();
    transfer.items.add(new File([blob], name, { type: "image/png" }));
    const zone = document.querySelector("[data-dropzone]");
    for (const type of ["dragenter", "dragover", "drop"]) {
      zone.dispatchEvent(
        new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true })
      );
    }
    resolve();
  }, "image/png");
})
"""

# The RGB pixels of a box of the image on screen: the values the Cornerstone viewer holds
# (frontend/viewer/), or without it the <img> read back through a canvas.
READ_PIXELS = """
([x, y, w, h]) => {
  const viewer = document.querySelector("[data-viewer]").medimgViewer;
  if (viewer && viewer.cs) return viewer.cs.readPixels(x, y, w, h);
  const image = document.querySelector("[data-viewer-image]");
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const data = context.getImageData(x, y, w, h).data;
  const rgb = [];
  for (let i = 0; i < data.length; i += 4) rgb.push(data[i], data[i + 1], data[i + 2]);
  return rgb;
}
"""


def _drag_box(page: Any, box: tuple[int, int, int, int], size: tuple[int, int]) -> None:
    """Press "Draw a box" and drag over `box` (image pixels) with the mouse."""
    page.get_by_role("button", name="Draw a box").click()
    rect = page.locator("[data-viewer-image]").bounding_box()
    width, height = size

    def screen(x: int, y: int) -> tuple[float, float]:
        return rect["x"] + x * rect["width"] / width, rect["y"] + y * rect["height"] / height

    page.mouse.move(*screen(box[0], box[1]))
    page.mouse.down()
    page.mouse.move(*screen((box[0] + box[2]) // 2, (box[1] + box[3]) // 2), steps=4)
    page.mouse.move(*screen(box[2], box[3]), steps=4)
    page.mouse.up()


# --- The day ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_runs_a_technicians_doctors_and_admins_day(
    server: Any,
    chromium: Any,
    in_process: None,
    technician: Any,
    doctor: Any,
    admin: Any,
    password: str,
    tmp_path: Path,
) -> None:
    original = _real_ultrasound()
    height, width = original.shape[:2]
    upload_path = tmp_path / "ultrasound.png"
    upload_path.write_bytes(_png(original))
    bad_path = tmp_path / "notes.txt"
    bad_path.write_bytes(b"not an image at all")

    # --- Technician: sign in, create the patient, upload -------------------------------------
    tech = Session(chromium, server.url)
    page = tech.page
    page.goto("/login/")
    tech.shot("01-login")
    tech.log_in(technician.username, password)
    page.get_by_label("Patient ID (hospital number)").fill("MRN-4242")
    page.get_by_label("Full name").fill("Ada Lovelace")
    page.get_by_label("Age").fill("36")
    tech.shot("02-technician-home-new-patient")
    page.get_by_role("button", name="Create patient").click()
    page.get_by_text("Patient MRN-4242 created.").wait_for()
    page.get_by_label("Search by name or ID").fill("Lovelace")
    page.get_by_role("button", name="Search").click()
    tech.shot("03-technician-patient-search")
    page.get_by_role("link", name="Ada Lovelace").click()
    page.locator("#upload-title").wait_for()
    tech.shot("04-technician-patient-empty")
    assert page.locator("[data-restore]").count() == 0

    page.locator("input[type=file]").set_input_files([str(upload_path), str(bad_path)])
    # One row and one progress bar per file.
    page.locator("[data-upload] progress").nth(1).wait_for()
    page.locator("[data-upload].upload--failed").get_by_text("Refused").wait_for()
    page.locator("[data-upload][data-scan-id] [data-status-label]").get_by_text(
        "Completed"
    ).wait_for()
    # Drag and drop: a file dropped on the area (a DataTransfer, as a real drop carries).
    page.evaluate(DROP_PNG, "dropped.png")
    until(
        page,
        "() => document.querySelectorAll('[data-upload][data-scan-id] .badge--completed')"
        ".length == 2",
    )
    tech.shot("05-technician-uploaded")
    patient = Patient.objects.get(pk="MRN-4242")
    scans = {s.original_filename: s for s in Scan.objects.filter(patient=patient)}
    assert set(scans) == {"ultrasound.png", "dropped.png"}
    scan = scans["ultrasound.png"]
    assert scan.status == ScanStatus.COMPLETED and scan.regions.count() >= 3
    detected = scan.regions.count()
    row = page.locator(f'[data-upload][data-scan-id="{scan.id}"]')
    assert row.locator("progress").get_attribute("value") == "100"

    # --- Technician: review ------------------------------------------------------------------
    row.get_by_role("link", name="Open image").click()
    page.locator("#review-title").wait_for()
    until(page, "() => document.querySelector('[data-viewer-image]').naturalWidth > 0")
    # The Cornerstone viewer has started; "Draw a box" shows the plain image to draw on.
    until(page, "() => document.querySelector('[data-viewer][data-cs-ready]')")
    assert page.locator("[data-region]").count() == detected
    tech.shot("06-technician-review")

    # Draw a box the detector did not make, over the middle of the scan.
    free = (250, 200, 330, 240)
    assert not any(
        r.x1 < free[2] and free[0] < r.x2 and r.y1 < free[3] and free[1] < r.y2
        for r in scan.regions.all()
    )
    _drag_box(page, free, (width, height))
    drawn = [int(page.locator(f"#box-{n}").input_value()) for n in ("x1", "y1", "x2", "y2")]
    assert all(abs(a - b) <= 2 for a, b in zip(drawn, free, strict=True)), drawn
    tech.shot("07-technician-box-drawn")
    page.get_by_role("button", name="Add region").click()
    page.locator("[data-review-message]").get_by_text("added").wait_for()
    assert page.locator("[data-region]").count() == detected + 1
    manual = Region.objects.get(scan=scan, source=RegionSource.MANUAL)
    assert (manual.x1, manual.y1, manual.x2, manual.y2) == tuple(drawn)
    tech.shot("08-technician-region-added")

    # Ask for the first detected region (a false one, say) to be removed: a doctor decides,
    # and until then it stays in the list and filled in the image.
    first = scan.regions.filter(source=RegionSource.DETECTOR).order_by("index").first()
    page.get_by_role("button", name=f"Remove region {first.index + 1}", exact=True).click()
    # It asks first (issue 16): a dialog naming the region.
    page.locator("[data-remove-dialog]").get_by_role("button", name="Ask for removal").click()
    page.locator("[data-review-message]").get_by_text("requested").wait_for()
    assert page.locator("[data-region]").count() == detected + 1
    assert Region.objects.get(pk=first.pk).removal_pending
    page.get_by_text("Removal asked: undo until you confirm").wait_for()

    # Text the verification pass still found must be resolved before confirming: covered.
    covered = 0
    while page.locator("[data-cover-leftover]").count():
        page.locator("[data-cover-leftover]").first.click()
        page.locator("[data-review-message]").get_by_text("covered").wait_for()
        covered += 1
    page.get_by_role("button", name="Confirm regions").click()
    page.get_by_text(f"Confirmed by {technician.username}").wait_for()
    tech.shot("09-technician-confirmed")
    scan.refresh_from_db()
    assert scan.reviewed_by == technician
    changes = [
        e.details["change"]
        for e in AuditEvent.objects.filter(action=Action.REGIONS_EDITED).order_by("sequence")
    ]
    assert changes == ["added"] * (1 + covered) + ["confirmed"]
    assert AuditEvent.objects.filter(action=Action.REGION_REMOVAL_REQUESTED).count() == 1

    # Home: the worklist holds what is still unconfirmed (the dropped image), not this one.
    page.get_by_role("link", name="Home").click()
    worklist = page.locator("[data-worklist-item]")
    worklist.first.wait_for()
    assert worklist.count() == 1 and "dropped.png" in worklist.inner_text()
    tech.shot("09b-technician-worklist")
    page.go_back()
    page.locator("#review-title").wait_for()

    # No restore control anywhere, and the restore URL is refused.
    assert page.locator("[data-restore], [data-download]").count() == 0
    assert page.get_by_text("Restore original").count() == 0
    refused = page.request.get(f"/api/images/{scan.id}/restore/")
    assert refused.status == 403
    # The page refuses the text file by its first bytes before sending it (issue 13), so no
    # request of the day failed at all.
    assert tech.console_errors("status of 400", "HTTP 400") == []
    assert sum("HTTP 400" in e for e in tech.errors) == 0
    tech.close()

    # --- Doctor: patient, viewer, restore, note, download ------------------------------------
    doc = Session(chromium, server.url)
    page = doc.page
    doc.log_in(doctor.username, password)
    doc.shot("10-doctor-home")
    page.get_by_role("link", name="Ada Lovelace").click()
    thumb = page.locator(f'a[href="/scans/{scan.id}/"] .thumb__image')
    thumb.wait_for()
    until(page, "(img) => img.naturalWidth > 0", thumb.element_handle())
    doc.shot("11-doctor-patient")
    thumb.click()
    page.locator("[data-restore]").wait_for()
    until(page, "() => document.querySelector('[data-viewer][data-cs-source=redacted]')")
    doc.shot("12-doctor-viewer-redacted")
    # Redacted on screen: the technician's box is filled.
    x1, y1, x2, y2 = drawn
    shown = page.evaluate(READ_PIXELS, [x1, y1, x2 - x1, y2 - y1])
    assert set(shown) == {0}

    page.get_by_label("Reason for viewing the original").fill("Check the name on the requisition")
    page.get_by_role("button", name="Restore original").click()
    page.locator("[data-viewer][data-restored][data-cs-source=original]").wait_for()
    assert page.locator("[data-view-mode]").inner_text() == "Original (restored)"
    shown_size = "document.querySelector('[data-viewer]').medimgViewer.cs.valueAt(0, 0).width"
    assert page.evaluate(shown_size) == width
    # The pixels on screen are the uploaded ones, under the filled box too.
    shown = page.evaluate(READ_PIXELS, [x1, y1, x2 - x1, y2 - y1])
    assert shown == original[y1:y2, x1:x2].reshape(-1).tolist()
    restored = AuditEvent.objects.get(action=Action.SCAN_RESTORED, actor=doctor)
    assert restored.details["reason"] == "Check the name on the requisition"
    # One decrypted region, shown under its row (audited as region_decrypted).
    shown_region = scan.regions.order_by("index").first()
    page.get_by_role(
        "button", name=f"Show decrypted region {shown_region.index + 1}", exact=True
    ).click()
    crop = page.locator(f"#region-crop-{shown_region.id} img")
    until(page, "(img) => img.naturalWidth > 0", crop.element_handle())
    assert page.evaluate("(img) => img.naturalWidth", crop.element_handle()) == (
        shown_region.x2 - shown_region.x1
    )
    assert AuditEvent.objects.filter(action=Action.REGION_DECRYPTED, actor=doctor).count() == 1
    page.evaluate("window.scrollTo(0, 0)")
    doc.shot("13-doctor-viewer-restored")

    level = page.locator("[data-zoom-level]")
    before = level.inner_text()
    page.locator("[data-cs-stage]").focus()
    page.keyboard.press("+")
    until(page, f"() => document.querySelector('[data-zoom-level]').innerText !== {before!r}")

    with page.expect_download() as download_info:
        page.locator('[data-download="png"]').click()
    download = download_info.value
    downloaded = np.asarray(Image.open(download.path()))
    assert np.array_equal(downloaded, original)

    page.get_by_label("Add a note").fill("Restored for review; text matches the requisition.")
    page.locator("[data-notes-form] button[type=submit]").click()
    page.locator("[data-note]").get_by_text("requisition").wait_for()
    doc.shot("14-doctor-note-added")
    assert doc.console_errors() == []
    page.set_viewport_size({"width": 820, "height": 1180})  # A tablet in portrait.
    doc.shot("15-doctor-tablet")
    doc.close()

    # --- Admin: statistics, audit log, verify -------------------------------------------------
    # Admins give a second factor: a real TOTP code from their (test) authenticator.
    from accounts.tests.otp_codes import code, enrol

    device = enrol(admin)
    adm = Session(chromium, server.url)
    page = adm.page
    adm.log_in(admin.username, password, otp=lambda: code(device))
    adm.shot("18-admin-home")
    page.get_by_role("link", name="Open statistics").click()
    page.locator('[data-chart="daily"][data-chart-ready]').wait_for()
    adm.shot("19-admin-statistics")
    page.goto("/")
    page.get_by_role("link", name="Open the audit log").click()
    page.get_by_label("User", exact=True).fill(doctor.username)
    page.get_by_role("button", name="Filter").click()
    page.locator("[data-audit-row]").first.wait_for()
    assert "Scan Restored" in page.locator("table").inner_text()
    adm.shot("20-admin-audit-filtered")
    page.get_by_role("button", name="Verify chain").click()
    page.locator("[data-verify-result]").get_by_text("The chain is intact.").wait_for()
    adm.shot("21-admin-audit-verified")
    assert adm.console_errors() == []
    adm.close()


@pytest.mark.django_db(transaction=True)
def test_it_warns_before_signing_out_an_idle_session(
    server: Any, chromium: Any, in_process: None, doctor: Any, password: str
) -> None:
    idle = django_settings.SESSION_COOKIE_AGE
    doc = Session(chromium, server.url)
    page = doc.page
    page.clock.install()
    doc.log_in(doctor.username, password)
    page.locator("body[data-idle-ready]").wait_for()
    dialog = page.get_by_role("dialog")
    assert not dialog.is_visible()

    page.clock.run_for((idle - 50) * 1000)
    dialog.wait_for()
    assert "signed out in" in dialog.inner_text()
    doc.shot("22-session-idle-warning")
    page.get_by_role("button", name="Stay signed in").click()
    dialog.wait_for(state="hidden")

    page.clock.run_for((idle + 5) * 1000)
    page.wait_for_url("**/login/?idle=1")
    page.get_by_text("without activity").wait_for()
    doc.shot("23-session-signed-out")
    assert page.request.get("/api/auth/me/").status in (401, 403)
    doc.close()


@pytest.mark.django_db(transaction=True)
def test_it_scrolls_frames_and_changes_the_window_of_a_dicom(
    server: Any,
    chromium: Any,
    in_process: None,
    settings: Any,
    technician: Any,
    doctor: Any,
    password: str,
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from imaging.services.upload import scan_upload
    from imaging.tests import factories

    settings.IMAGING_DETECTOR = "imaging.tests.factories.bright_text_detector"
    patient = Patient.objects.create(id="MRN-7", name="Grace Hopper", age=60)
    data, pixels = factories.dicom16_text(frames=3)
    upload = SimpleUploadedFile("series.dcm", data, content_type="application/dicom")
    (scan,) = scan_upload(patient=patient, uploads=[upload], uploaded_by=technician)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.COMPLETED and scan.frames == 3

    doc = Session(chromium, server.url)
    page = doc.page
    doc.log_in(doctor.username, password)
    page.goto(f"/scans/{scan.id}/")
    until(page, "() => document.querySelector('[data-viewer][data-cs-source=redacted]')")
    page.locator("[data-cs-stage]").focus()
    page.keyboard.press("PageDown")
    page.locator("[data-frame-label]").get_by_text("Frame 2 of 3").wait_for()
    page.get_by_role("button", name="Next frame").click()
    page.locator("[data-frame-label]").get_by_text("Frame 3 of 3").wait_for()
    assert "Im 3/3" in page.locator("[data-cs-corner=tr]").inner_text()
    # A preset on a number key (OHIF's): the window readout says which.
    page.locator("[data-cs-stage]").focus()
    page.keyboard.press("2")
    until(
        page,
        "() => Number(document.querySelector('[data-wl-readout]').dataset.ww) === "
        "document.querySelector('[data-viewer]').medimgViewer.cs.presets[1].width",
    )
    doc.shot("16-doctor-dicom-frame-window")
    # Restoring fetches the original once, as DICOM (every frame, the stored values), and
    # shows the same frame.
    page.get_by_role("button", name="Restore original").click()
    page.locator("[data-viewer][data-restored][data-cs-source=original]").wait_for()
    assert "Im 3/3" in page.locator("[data-cs-corner=tr]").inner_text()
    event = AuditEvent.objects.get(action=Action.SCAN_RESTORED, actor=doctor)
    assert event.details["format"] == "dicom"
    assert doc.console_errors() == []
    doc.close()


@pytest.mark.django_db(transaction=True)
def test_it_serves_the_api_docs_without_a_cdn_under_the_policy(
    server: Any, chromium: Any, doctor: Any, password: str
) -> None:
    doc = Session(chromium, server.url)
    page = doc.page
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    doc.log_in(doctor.username, password)
    page.goto("/api/docs/")
    page.get_by_text("medimg API").first.wait_for()
    page.locator(".opblock-tag").first.wait_for()
    doc.shot("24-api-docs")
    assert all(url.startswith(server.url) for url in requests), requests
    assert doc.console_errors() == []
    doc.close()


@pytest.mark.django_db(transaction=True)
def test_it_segments_a_scan_and_shows_the_overlay_legend_and_sizes(
    server: Any,
    chromium: Any,
    in_process: None,
    technician: Any,
    doctor: Any,
    password: str,
) -> None:
    """A doctor runs the shipped brain-tissue model from the viewer and reads the result."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from imaging.models import JobStatus, SegmentationJob
    from imaging.services.upload import scan_upload

    heldout = Path(django_settings.BASE_DIR) / "model/segmentation/brain-tissue/heldout/images"
    data = (heldout / "test-00000.png").read_bytes()
    patient = Patient.objects.create(id="MRN-8", name="Rosalind Franklin", age=37)
    upload = SimpleUploadedFile("slice.png", data, content_type="image/png")
    (scan,) = scan_upload(patient=patient, uploads=[upload], uploaded_by=technician)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.COMPLETED

    doc = Session(chromium, server.url)
    page = doc.page
    doc.log_in(doctor.username, password)
    page.goto(f"/scans/{scan.id}/")
    panel = page.locator("[data-segmentation]")
    panel.get_by_label("Model").select_option("brain-tissue")
    panel.get_by_label("Pixel spacing").fill("1")
    panel.get_by_role("button", name="Run segmentation").click()
    panel.locator("[data-segmentation-status]").get_by_text("Done in").wait_for()
    overlay = panel.locator("[data-segmentation-overlay]")
    until(page, "(img) => img.complete && img.naturalWidth > 0", overlay.element_handle())
    legend = panel.locator("[data-segmentation-legend] li")
    assert sorted(legend.all_inner_texts()) == ["csf", "grey matter", "white matter"]
    # Areas in mm² from the spacing given, one row per class, as the job stored them.
    job = SegmentationJob.objects.get(scan=scan)
    assert job.status == JobStatus.COMPLETED
    areas = job.results["areas_mm2"]
    rows = panel.locator("[data-segmentation-table] tbody tr")
    assert rows.count() == 3
    assert panel.locator("[data-segmentation-unit]").inner_text() == "Area (mm²)"
    shown = {
        rows.nth(i).locator("td").nth(0).inner_text(): rows.nth(i).locator("td").nth(1).inner_text()
        for i in range(3)
    }
    assert float(shown["grey matter"]) == pytest.approx(areas["grey_matter"])
    assert areas["grey_matter"] > 0 and areas["white_matter"] > 0
    doc.shot("25-doctor-segmentation")
    # Hiding the overlay hides it; the request and every view are audited.
    panel.get_by_label("Show overlay").uncheck()
    assert overlay.is_hidden()
    assert AuditEvent.objects.filter(action=Action.SEGMENTATION_REQUESTED, actor=doctor).exists()
    assert doc.console_errors() == []
    doc.close()


# A folder dropped from a file manager, as Chromium hands it over: DataTransferItems whose
# webkitGetAsEntry() gives directory entries, read in batches. A script cannot build real
# entries, so these are look-alikes with the same methods, on a real drop event.
DROP_FOLDER = """
(files) => {
  const fileEntry = ([name, b64]) => ({
    isFile: true, isDirectory: false, name,
    file: (ok) => ok(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name)),
  });
  const folder = (name, children) => ({
    isFile: false, isDirectory: true, name,
    createReader: () => {
      // Two entries a batch, then an empty batch: readEntries must be called until empty.
      const batches = [];
      for (let i = 0; i < children.length; i += 2) batches.push(children.slice(i, i + 2));
      batches.push([]);
      return { readEntries: (ok) => setTimeout(() => ok(batches.shift()), 0) };
    },
  });
  const series = folder("series", [
    ...files.map(fileEntry),
    fileEntry(["DICOMDIR", btoa("not an image")]),
    fileEntry([".DS_Store", btoa("junk")]),
  ]);
  const transfer = {
    items: [{ kind: "file", webkitGetAsEntry: () => series }],
    files: [],
  };
  const zone = document.querySelector("[data-dropzone]");
  const drop = new DragEvent("drop", { bubbles: true, cancelable: true });
  Object.defineProperty(drop, "dataTransfer", { value: transfer });
  zone.dispatchEvent(drop);
}
"""

# A 25 MB "PNG" (the signature, then zeros): the page must refuse it without sending it.
DROP_LARGE_PNG = """
(size) => {
  const head = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const file = new File([head, new Uint8Array(size - head.length)], "huge.png");
  const transfer = new DataTransfer();
  transfer.items.add(file);
  const zone = document.querySelector("[data-dropzone]");
  zone.dispatchEvent(
    new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true })
  );
}
"""


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_too_large_file_before_sending_and_uploads_a_dropped_folder(
    server: Any,
    chromium: Any,
    in_process: None,
    settings: Any,
    technician: Any,
    password: str,
) -> None:
    import base64

    from imaging.tests import factories

    settings.IMAGING_DETECTOR = "imaging.tests.factories.bright_text_detector"
    patient = Patient.objects.create(id="MRN-13", name="Mary Somerville", age=48)
    tech = Session(chromium, server.url)
    page = tech.page
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    tech.log_in(technician.username, password)
    page.goto(f"/patients/{patient.id}/")
    picker = page.locator("input[type=file]")
    assert ".zip" in picker.get_attribute("accept").split(",")
    page.get_by_text("Up to 20.0 MB per JPEG or PNG image, 1.0 GB per DICOM file").wait_for()

    page.evaluate(DROP_LARGE_PNG, 25 * 1024 * 1024)
    refused = page.locator("[data-upload].upload--failed")
    refused.get_by_text("JPEG and PNG images may be at most 20.0 MB").wait_for()
    assert "25.0 MB" in refused.inner_text()
    assert not [url for url in posts if "/images/" in url]

    series = []
    for number in (1, 2, 3):
        data, _ = factories.dicom16_text(frames=1)
        series.append([f"IM000{number}", base64.b64encode(data).decode()])
    page.evaluate(DROP_FOLDER, series)
    until(
        page,
        "() => document.querySelectorAll('[data-upload][data-scan-id] .badge--completed')"
        ".length == 3",
    )
    tech.shot("24-technician-upload-limit-and-folder")
    names = sorted(Scan.objects.filter(patient=patient).values_list("original_filename", flat=True))
    assert names == ["IM0001", "IM0002", "IM0003"]
    assert len([url for url in posts if "/images/" in url]) == 3
    assert tech.console_errors() == []
    tech.close()
