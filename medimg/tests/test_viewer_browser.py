"""The Cornerstone viewer (frontend/viewer/, docs/viewer.md) in a real headless Chromium.

Mouse and keyboard as in OHIF: left drag changes the window (the readout follows), the wheel
changes frames of a multi-frame DICOM, right drag zooms, a length measurement reads in mm from
Pixel Spacing, full screen fills the window, and the doctor's restored original is the stored
values (window/level on real values). Screenshots at 1440x900 and 1920x1080 go to
var/screenshots/ (MEDIMG_SCREENSHOT_DIR overrides).

Needs the built bundle (static/vendor/viewer/viewer.js: `make install`, or `npm ci && npm run
build`); the test fails with that instruction when it is missing.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.conf import settings as django_settings

from audit.models import Action, AuditEvent
from imaging.models import ScanStatus
from patients.models import Patient

CHROMIUM = Path("/usr/bin/chromium")
BUNDLE = Path(django_settings.BASE_DIR) / "static" / "vendor" / "viewer" / "viewer.js"
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


@pytest.fixture
def server(serial_live_server: Any, eager_tasks: None, settings: Any) -> Any:
    settings.IMAGING_DETECTOR = "imaging.tests.factories.bright_text_detector"
    return serial_live_server


def until(page: Any, script: str, arg: Any = None, timeout_ms: int = TIMEOUT_MS) -> Any:
    """Poll `script` (a JS function) until truthy; not wait_for_function (the CSP forbids eval)."""
    waited = 0
    while True:
        value = page.evaluate(script, arg)
        if value:
            return value
        if waited >= timeout_ms:
            raise AssertionError(f"timed out waiting for {script}")
        page.wait_for_timeout(100)
        waited += 100


def _dicom_scan(technician: Any, *, frames: int = 3) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from imaging.services.upload import scan_upload
    from imaging.tests import factories

    patient = Patient.objects.create(id="MRN-CS-1", name="Grace Hopper", age=60)
    data, pixels = factories.dicom16_text(frames=frames)
    # A CT: stored values with a rescale to Hounsfield units, and a Pixel Spacing.
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Modality = "CT"
    ds.PixelSpacing = [0.5, 0.5]
    ds.RescaleSlope = 1
    ds.RescaleIntercept = -1024
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    upload = SimpleUploadedFile("series.dcm", buffer.getvalue(), content_type="application/dicom")
    (scan,) = scan_upload(patient=patient, uploads=[upload], uploaded_by=technician)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.COMPLETED and scan.frames == frames
    scan.test_pixels = pixels
    return scan


# A browser without WebGL (headless Chromium has WebGL 2 through SwiftShader, even with
# --disable-gpu): no canvas hands out a WebGL context, so the viewer takes Cornerstone's CPU path.
NO_WEBGL = """
(() => {
  const getContext = HTMLCanvasElement.prototype.getContext;
  HTMLCanvasElement.prototype.getContext = function (kind, ...rest) {
    return /webgl/i.test(kind) ? null : getContext.call(this, kind, ...rest);
  };
})();
"""


def _open(
    chromium: Any,
    server: Any,
    user: Any,
    password: str,
    path: str,
    size: tuple,
    *,
    webgl: bool = True,
) -> Any:
    assert BUNDLE.exists(), "the viewer is not built: `make install` (npm ci && npm run build)"
    context = chromium.new_context(
        base_url=server.url, viewport={"width": size[0], "height": size[1]}
    )
    context.set_default_timeout(TIMEOUT_MS)
    if not webgl:
        context.add_init_script(NO_WEBGL)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto("/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}/")
    page.goto(path)
    try:
        until(page, "() => document.querySelector('[data-viewer][data-cs-ready]')")
    except AssertionError as failed:
        raise AssertionError(f"the Cornerstone viewer did not start: {errors}") from failed
    page.errors = errors  # type: ignore[attr-defined]
    return page


def _close(page: Any) -> None:
    """Close once the viewer's background requests (series, regions, labelmaps) are answered:
    a request still running when the test database is flushed would lock it."""
    page.wait_for_load_state("networkidle")
    page.context.close()


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)


def _centre(page: Any) -> tuple[float, float, dict]:
    box = page.locator("[data-cs-element=main]").bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box


WL = (
    "() => { const r = document.querySelector('[data-wl-readout]'); return r && r.dataset.ww"
    " ? [Number(r.dataset.ww), Number(r.dataset.wc), r.textContent] : null; }"
)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("render", ["webgl", "cpu"])
def test_the_doctor_reads_a_multiframe_dicom_with_ohif_mouse_bindings(
    server: Any, chromium: Any, render: str, technician: Any, doctor: Any, password: str
) -> None:
    scan = _dicom_scan(technician)
    path, size = f"/scans/{scan.id}/", (1440, 900)
    page = _open(chromium, server, doctor, password, path, size, webgl=render == "webgl")
    assert page.locator("[data-viewer]").get_attribute("data-cs-render") == render
    x, y, box = _centre(page)

    # The image fills the space beside the side panel: far more than the old 610 px box.
    _shot(page, f"cs-01-doctor-viewer-1440-{render}")
    assert box["width"] > 800 and box["height"] > 600, box

    # Left drag: window/level, and the readout follows.
    before = until(page, WL)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 120, y + 60, steps=6)
    page.mouse.up()
    after = until(page, f"() => {{ const v = ({WL})(); return v && v[0] !== {before[0]} && v; }}")
    assert after[0] != before[0] and after[1] != before[1], (before, after)

    # Wheel: the next frame (the slider's label follows).
    page.mouse.move(x, y)
    page.mouse.wheel(0, 120)
    page.locator("[data-frame-label]").get_by_text("Frame 2 of 3").wait_for()
    assert "Im 2/3" in page.locator("[data-cs-corner=tr]").inner_text()
    page.keyboard.press("ArrowDown")
    page.locator("[data-frame-label]").get_by_text("Frame 3 of 3").wait_for()

    # Right drag: zoom (the corner readout changes).
    zoom_before = page.locator("[data-cs-corner=br]").inner_text()
    page.mouse.move(x, y)
    page.mouse.down(button="right")
    page.mouse.move(x, y - 150, steps=6)
    page.mouse.up(button="right")
    corner = "document.querySelector('[data-cs-corner=br]').innerText"
    until(page, f"() => {corner} !== {zoom_before!r}")

    # Length in mm (the CT carries a Pixel Spacing of 0.5 mm).
    page.get_by_role("button", name="Length").click()
    page.mouse.move(x - 100, y)
    page.mouse.down()
    page.mouse.move(x + 100, y, steps=8)
    page.mouse.up()
    text = until(
        page,
        "() => { const t = [...document.querySelectorAll('[data-cs-element=main] svg text')]"
        ".map((n) => n.textContent).join(' '); return /mm/.test(t) ? t : null; }",
    )
    assert "mm" in text
    _shot(page, f"cs-02-doctor-length-1440-{render}")

    # Probe: the value under the cursor in HU (the CT's rescale applies).
    page.get_by_role("button", name="Probe").click()
    page.mouse.click(x + 20, y + 40)
    probe = until(
        page,
        "() => { const t = [...document.querySelectorAll('[data-cs-element=main] svg text')]"
        ".map((n) => n.textContent).join(' '); return /HU/.test(t) ? t : null; }",
    )
    assert "HU" in probe

    # Cine: Play steps through the frames on its own; Stop stops.
    page.get_by_label("fps").fill("20")
    page.get_by_role("button", name="Play").click()
    seen = set()
    for _ in range(40):
        seen.add(page.locator("[data-cs-corner=tr]").inner_text())
        page.wait_for_timeout(50)
    page.get_by_role("button", name="Stop").click()
    assert len(seen) >= 2, seen

    # Full screen fills the window.
    page.get_by_role("button", name="Full screen").click()
    until(page, "() => document.fullscreenElement !== null")
    until(
        page,
        "() => { const b = document.querySelector('[data-cs-element=main]')"
        ".getBoundingClientRect(); return b.width > window.innerWidth * 0.9"
        " && b.height > window.innerHeight * 0.75; }",
    )
    _shot(page, f"cs-03-doctor-fullscreen-1440-{render}")
    page.keyboard.press("Escape")
    assert page.errors == [], page.errors  # type: ignore[attr-defined]
    _close(page)


@pytest.mark.django_db(transaction=True)
def test_the_restored_original_is_the_stored_values_beside_the_redacted(
    server: Any, chromium: Any, technician: Any, doctor: Any, password: str
) -> None:
    scan = _dicom_scan(technician, frames=2)
    page = _open(chromium, server, doctor, password, f"/scans/{scan.id}/", (1920, 1080))
    _shot(page, "cs-04-doctor-viewer-1920")
    page.get_by_label("Reason for viewing the original").fill("compare with the requisition")
    page.get_by_role("button", name="Restore original").click()
    until(page, "() => document.querySelector('[data-viewer][data-cs-source=original]')")
    # One sealed restore, as DICOM: every frame with its stored values.
    event = AuditEvent.objects.get(action=Action.SCAN_RESTORED, actor=doctor)
    assert event.details.get("format") == "dicom", event.details
    # Window/level acts on real values: Cornerstone holds the modality value (the stored
    # value through the rescale, as its own DICOM loader does): stored - 1024 HU, exactly.
    y, x = 100, 128
    value = page.evaluate(
        "([x, y]) => document.querySelector('[data-viewer]').medimgViewer.cs.valueAt(x, y)", [x, y]
    )
    stored = int(scan.test_pixels[0, y, x])
    assert value["stored"] == stored and value["value"] == stored - 1024, value
    assert "HU" in page.locator("[data-wl-readout]").inner_text()
    page.get_by_label("Compare original and redacted").select_option("side")
    until(page, "() => !document.querySelector('[data-cs-pane=other]').hidden")
    page.locator("[data-cs-stage]").scroll_into_view_if_needed()
    _shot(page, "cs-05-doctor-side-by-side-1920")
    # Blink: the two panes take turns in the same place.
    page.get_by_label("Compare original and redacted").select_option("blink")
    shown = set()
    for _ in range(30):
        shown.add(page.evaluate("() => document.querySelector('[data-cs-pane=main]').hidden"))
        page.wait_for_timeout(100)
    assert shown == {True, False}
    page.get_by_label("Compare original and redacted").select_option("")

    # The tag browser lists the de-identified header: the modality, not the patient's name.
    tags = page.locator("[data-cs-tags]")
    tags.locator("summary").click()
    assert tags.locator("tr[data-tag='(0008,0060)']").inner_text().endswith("CT")
    assert "DOE^JANE" not in tags.inner_text()

    # "?" opens the shortcut sheet, Escape closes it.
    page.locator("[data-cs-stage]").focus()
    page.keyboard.press("?")
    page.get_by_role("dialog", name="Keyboard shortcuts").wait_for()
    page.keyboard.press("Escape")
    page.get_by_role("dialog", name="Keyboard shortcuts").wait_for(state="hidden")
    assert page.errors == [], page.errors  # type: ignore[attr-defined]
    _close(page)


@pytest.mark.django_db(transaction=True)
def test_the_technician_sees_the_redacted_image_in_the_same_viewer(
    server: Any, chromium: Any, technician: Any, password: str
) -> None:
    scan = _dicom_scan(technician, frames=2)
    page = _open(chromium, server, technician, password, f"/scans/{scan.id}/", (1440, 900))
    x, y, box = _centre(page)
    assert box["width"] > 700 and box["height"] > 600, box
    assert page.locator("[data-viewer]").get_attribute("data-cs-source") == "redacted"
    assert page.get_by_role("button", name="Restore original").count() == 0
    page.mouse.move(x, y)
    page.mouse.wheel(0, 120)
    page.locator("[data-frame-label]").get_by_text("Frame 2 of 2").wait_for()
    _shot(page, "cs-06-technician-viewer-1440")
    assert page.errors == [], page.errors  # type: ignore[attr-defined]
    _close(page)


@pytest.mark.django_db(transaction=True)
def test_the_segmentation_labelmap_lies_on_the_image_and_follows_zoom_and_opacity(
    server: Any, chromium: Any, technician: Any, doctor: Any, password: str
) -> None:
    """The shipped brain-tissue model's labels, drawn over the main viewport."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from rest_framework.test import APIClient

    from imaging.models import JobStatus, SegmentationJob
    from imaging.services.upload import scan_upload

    heldout = Path(django_settings.BASE_DIR) / "model/segmentation/brain-tissue/heldout/images"
    if not (heldout / "test-00000.png").exists():
        pytest.skip(f"needs the shipped brain-tissue model's held-out images in {heldout}")
    patient = Patient.objects.create(id="MRN-CS-2", name="Rosalind Franklin", age=37)
    upload = SimpleUploadedFile(
        "slice.png", (heldout / "test-00000.png").read_bytes(), content_type="image/png"
    )
    (scan,) = scan_upload(patient=patient, uploads=[upload], uploaded_by=technician)
    api = APIClient()
    api.force_authenticate(doctor)
    response = api.post(
        f"/api/images/{scan.id}/segmentations/",
        {"model": "brain-tissue", "pixel_spacing_mm": [1, 1]},
        format="json",
    )
    assert response.status_code == 202, response.content
    job = SegmentationJob.objects.get(pk=response.json()["id"])
    assert job.status == JobStatus.COMPLETED, job.failure_reason

    page = _open(chromium, server, doctor, password, f"/scans/{scan.id}/", (1440, 900))
    until(page, "() => !document.querySelector('[data-cs-seg]').closest('[hidden]')")
    page.get_by_label("Segmentation labelmap").select_option(str(job.id))
    canvas = "document.querySelector('[data-cs-labelmap]')"
    before = until(page, f"() => !{canvas}.hidden && {canvas}.dataset.transform")
    # Coloured pixels where the model found tissue (the labels are not all background).
    painted = (
        f"() => {{ const c = {canvas}; const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
        " for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"
    )
    covered = page.evaluate(painted)
    assert covered > 1000, covered
    _shot(page, "cs-07-doctor-labelmap-1440")

    # Zoom (right drag): the labelmap is drawn again under the new transform.
    x, y, _ = _centre(page)
    page.mouse.move(x, y)
    page.mouse.down(button="right")
    page.mouse.move(x, y - 200, steps=6)
    page.mouse.up(button="right")
    after = until(
        page, f"() => {{ const t = {canvas}.dataset.transform; return t !== {before!r} && t; }}"
    )
    scale_before = float(before.split(",")[0])
    scale_after = float(after.split(",")[0])
    assert scale_after != scale_before, (before, after)
    _shot(page, "cs-08-doctor-labelmap-zoomed-1440")

    # Opacity 0 leaves nothing drawn.
    page.get_by_label("Opacity").fill("0")
    until(page, f"() => ({painted})() === 0")
    assert page.errors == [], page.errors  # type: ignore[attr-defined]
    _close(page)


@pytest.mark.django_db(transaction=True)
def test_the_series_strip_steps_through_images_and_regions_are_outlined(
    server: Any, chromium: Any, technician: Any, doctor: Any, password: str
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from imaging.services.upload import scan_upload
    from imaging.tests import factories

    patient = Patient.objects.create(id="MRN-CS-3", name="Ada Lovelace", age=36)
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    uploads = []
    for number in (1, 2):
        data, _ = factories.dicom16_text(frames=1)
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, number
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        uploads.append(SimpleUploadedFile(f"i{number}.dcm", buffer.getvalue(), "application/dicom"))
    first, second = scan_upload(patient=patient, uploads=uploads, uploaded_by=technician)
    first.refresh_from_db()
    assert first.regions.count() > 0

    page = _open(chromium, server, doctor, password, f"/scans/{first.id}/", (1440, 900))
    # The redacted regions are outlined on the doctor's image (one per region of the frame).
    count = until(
        page,
        "() => { const c = document.querySelector('[data-cs-regions]').dataset.count;"
        " return c ? Number(c) : null; }",
    )
    assert count == first.regions.filter(frame=0).count()
    strip = page.locator("[data-cs-strip]")
    strip.wait_for()
    assert strip.locator(".cs-viewer__thumb").count() == 2
    assert strip.locator("[aria-current=page]").get_attribute("href") == f"/scans/{first.id}/"
    _shot(page, "cs-09-doctor-series-regions-1440")
    strip.get_by_role("link", name="Next image ›").click()
    page.wait_for_url(f"**/scans/{second.id}/")
    until(page, "() => document.querySelector('[data-viewer][data-cs-ready]')")
    assert page.errors == [], page.errors  # type: ignore[attr-defined]
    _close(page)
