"""The 3D view (pages/views/volume3d.py, frontend/brain3d/) in a real headless Chromium with
WebGL 2 through SwiftShader: a real brain series (MNI152 slices) uploaded, segmented as one
volume by the shipped brain-tissue model, opened from the segmentation panel's "3D view" link.
Checked from the pixels the browser composited (screenshots of the canvas): the volume renders
(not blank), the labelmap opacity and the clipping plane change the rendering, the view buttons
rotate it, and the regions the atrophy check flagged (results["atrophy"]["flagged"], with the
hemisphere split) are listed and drawn in the warning colour on the flagged side only.

Screenshots go to var/screenshots/brain3d-*.png (MEDIMG_SCREENSHOT_DIR overrides). Needs the
built bundle (static/vendor/brain3d/brain3d.js: `make install`)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.conf import settings as django_settings

from imaging.models import SegmentationJob
from imaging.selectors.segmentation import segmentation_mask

CHROMIUM = Path("/usr/bin/chromium")
BUNDLE = Path(django_settings.BASE_DIR) / "static" / "vendor" / "brain3d" / "brain3d.js"
TIMEOUT_MS = 90_000  # SwiftShader renders on the CPU
SCREENSHOTS = Path(
    os.environ.get("MEDIMG_SCREENSHOT_DIR")
    or Path(django_settings.BASE_DIR) / "var" / "screenshots"
)
# WebGL 2 on the CPU: ANGLE over SwiftShader (Debian's Chromium, headless).
WEBGL_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
]
WARNING_RGB = (255, 51, 204)  # frontend/brain3d/index.js WARNING
AXE = Path(django_settings.BASE_DIR) / "node_modules" / "axe-core" / "axe.min.js"
RUN_AXE = """
async () => (await axe.run(document, { resultTypes: ["violations"] })).violations.map(
  (v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.slice(0, 3).map((n) => n.html)})
)
"""
STATE = "document.querySelector('[data-brain3d]').dataset.state"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")


@pytest.fixture(scope="module")
def webgl_chromium() -> Any:
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=WEBGL_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


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
        page.wait_for_timeout(200)
        waited += 200


def _canvas(page: Any) -> np.ndarray:
    """The canvas as the browser composited it (RGB), from a screenshot of the element."""
    from PIL import Image

    # The page's screenshot cut to the canvas's box.
    box = page.locator("[data-brain3d-canvas]").bounding_box()
    whole = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
    x, y = int(round(box["x"])), int(round(box["y"]))
    return whole[y : y + int(box["height"]), x : x + int(box["width"])].astype(np.int16)


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels that differ by more than a little between two renderings."""
    return float((np.abs(a - b).max(axis=2) > 24).mean())


def _warning_pixels(image: np.ndarray) -> int:
    r, g, b = (image[..., i] for i in range(3))
    # Magenta-pink: red and blue high, green well below both (shading darkens all three).
    return int(((r > 120) & (b > 90) & (g < 0.6 * r) & (g < 0.75 * b)).sum())


def _segmented_series(technician: Any, doctor: Any, settings: Any) -> SegmentationJob:
    from django.core.files.uploadedfile import SimpleUploadedFile
    from rest_framework.test import APIClient

    from imaging.jobs import segmentation as segmentation_jobs
    from imaging.models import JobStatus, Scan
    from imaging.services.upload import scan_upload
    from imaging.tests.brain_series import mni_series
    from patients.models import Patient

    settings.SEGMENTATION_MODELS_DIR = Path(django_settings.BASE_DIR) / "model" / "segmentation"
    segmentation_jobs._segmenter.cache_clear()
    patient = Patient.objects.create(id="MRN-3D-1", name="Santiago Ramón y Cajal", age=58)
    files, _ = mni_series(slices=16, step_mm=6, first_z_mm=-42.0)
    uploads = [
        SimpleUploadedFile(f"slice-{i:02d}.dcm", data, content_type="application/dicom")
        for i, data in enumerate(files)
    ]
    scans = scan_upload(patient=patient, uploads=uploads, uploaded_by=technician)
    first = Scan.objects.filter(pk__in=[s.pk for s in scans]).order_by("instance_number")[0]
    api = APIClient()
    api.force_authenticate(doctor)
    response = api.post(
        f"/api/images/{first.id}/segmentations/",
        {"model": "brain-tissue", "series": True},
        format="json",
    )
    assert response.status_code == 202, response.content
    job = SegmentationJob.objects.get(pk=response.json()["id"])
    assert job.status == JobStatus.COMPLETED, job.failure_reason
    return job


@pytest.mark.django_db(transaction=True)
def test_the_doctor_turns_the_segmented_brain_in_3d(
    server: Any,
    webgl_chromium: Any,
    technician: Any,
    doctor: Any,
    password: str,
    settings: Any,
) -> None:
    assert BUNDLE.exists(), "the 3D view is not built: `make install` (npm ci && npm run build)"
    job = _segmented_series(technician, doctor, settings)
    # First without an atrophy assessment (the brain measures may have run with the job).
    brain = {k: job.results.pop(k) for k in ("atrophy", "volumetrics") if k in job.results}
    job.save(update_fields=["results"])
    context = webgl_chromium.new_context(
        base_url=server.url, viewport={"width": 1440, "height": 900}
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto("/login/")
    page.get_by_label("Username").fill(doctor.username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}/")

    # From the segmentation result on the scan page: the "3D view" link.
    page.goto(f"/scans/{job.scan_id}/")
    link = page.locator("[data-segmentation-3d]")
    link.wait_for(state="visible")
    link.click()
    page.wait_for_url(f"{server.url}/segmentations/{job.id}/3d/")
    try:
        until(
            page,
            f"() => ['ready', 'failed'].includes({STATE})",
        )
    except AssertionError as failed:
        raise AssertionError(f"the 3D view did not start: {errors}") from failed
    root = page.locator("[data-brain3d]")
    assert root.get_attribute("data-state") == "ready", page.locator(
        "[data-brain3d-status]"
    ).inner_text()
    assert root.get_attribute("data-webgl") == "webgl2"
    page.wait_for_timeout(1500)

    # Not blank: the rendering has structure (a black canvas has none).
    rendered = _canvas(page)
    lit = float((rendered.max(axis=2) > 40).mean())
    assert 0.05 < lit < 0.95, lit
    assert "no atrophy assessment" in page.locator("[data-brain3d-atrophy]").inner_text().lower()
    label = page.locator("[data-brain3d-canvas]").get_attribute("aria-label")
    assert "viewed from the left" in label and "60 % opacity" in label
    _shot(page, "brain3d-01-left-1440")

    # Labelmap opacity 0: the tissue colours go, the grey volume stays.
    page.get_by_label("Labelmap opacity").fill("0")
    page.wait_for_timeout(800)
    bare = _canvas(page)
    assert _changed(rendered, bare) > 0.02
    saturation = lambda im: float((im.max(axis=2) - im.min(axis=2)).mean())  # noqa: E731
    assert saturation(bare) < saturation(rendered) / 2, (saturation(bare), saturation(rendered))
    _shot(page, "brain3d-02-opacity-0")
    page.get_by_label("Labelmap opacity").fill("80")

    # A sagittal clipping plane, seen from the front: the cut removes one side of the brain
    # and shows the tissue inside; moving it moves the cut.
    page.get_by_role("button", name="Front").click()
    page.wait_for_timeout(800)
    whole = _canvas(page)
    page.get_by_label("Cut").select_option("sagittal")
    page.wait_for_timeout(800)
    clipped = _canvas(page)
    assert root.get_attribute("data-clip") == "sagittal:0"
    assert _changed(whole, clipped) > 0.01
    page.get_by_label("Position").fill("25")
    page.wait_for_timeout(800)
    moved = _canvas(page)
    _shot(page, "brain3d-03-clip-sagittal")
    assert _changed(clipped, moved) > 0.01
    page.get_by_label("Cut").select_option("off")

    # Rotation: the standard views and the arrow keys.
    page.get_by_role("button", name="Top").click()
    page.wait_for_timeout(800)
    top = _canvas(page)
    assert root.get_attribute("data-view") == "superior"
    assert _changed(_canvas_after(page, "Left"), top) > 0.05
    page.locator("[data-brain3d-canvas]").focus()
    page.keyboard.press("ArrowRight")
    assert root.get_attribute("data-view") == "custom"
    _shot(page, "brain3d-04-rotated")
    assert not [e for e in errors if "favicon" not in e], errors
    context.close()

    # The atrophy check flagged the left grey matter: listed, and drawn in the warning colour
    # on the left half only (split at the middle column; columns run to the patient's left).
    mask = segmentation_mask(job=job)
    job.results = {
        **job.results,
        **brain,
        "atrophy": {
            "flagged": [
                {
                    "label": 2,
                    "name": "grey_matter",
                    "side": "left",
                    "measure": "grey matter volume",
                    "z": -2.4,
                }
            ]
        },
        "volumetrics": {"hemisphere_split": {"axis": 2, "index": mask.shape[2] / 2}},
    }
    job.save(update_fields=["results"])
    # This visit also carries axe-core (bypass_csp: the CSP refuses the inline script that
    # brings it; the first visit ran under the site's CSP).
    context = webgl_chromium.new_context(
        base_url=server.url, viewport={"width": 1440, "height": 900}, bypass_csp=True
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto("/login/")
    page.get_by_label("Username").fill(doctor.username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}/")
    page.goto(f"/segmentations/{job.id}/3d/")
    until(page, f"() => {STATE} === 'ready'")
    root = page.locator("[data-brain3d]")
    page.add_script_tag(content=AXE.read_text())
    violations = page.evaluate(RUN_AXE)
    assert not [v for v in violations if v["impact"] in ("serious", "critical")], violations
    flagged = page.locator("[data-brain3d-flagged] li")
    assert flagged.count() == 1
    assert "grey matter" in flagged.inner_text() and "left side" in flagged.inner_text()
    # Every grey-matter voxel of the left half is marked, none of the right.
    left = int((mask[:, :, mask.shape[2] // 2 :] == 2).sum())
    assert int(root.get_attribute("data-marked")) == left > 0
    page.wait_for_timeout(1500)
    page.get_by_role("button", name="Left").click()
    page.wait_for_timeout(800)
    from_left = _canvas(page)
    page.get_by_role("button", name="Right").click()
    page.wait_for_timeout(800)
    from_right = _canvas(page)
    # Seen from the left, the flagged (left) cortex is in view; from the right it is not.
    warned = (_warning_pixels(from_left), _warning_pixels(from_right))
    assert warned[0] > 500 and warned[0] > 5 * warned[1], warned
    _shot(page, "brain3d-06-flagged-right-side")
    page.get_by_role("button", name="Left").click()
    page.wait_for_timeout(800)
    _shot(page, "brain3d-05-flagged-left-side")
    page.screenshot(path=str(SCREENSHOTS / "brain3d-07-flagged-list-full.png"), full_page=True)
    # Highlight off: no warning colour left.
    page.get_by_label("Highlight flagged regions").uncheck()
    page.wait_for_timeout(800)
    assert root.get_attribute("data-marked") == "0"
    assert _warning_pixels(_canvas(page)) < _warning_pixels(from_left) / 10
    context.close()


def _canvas_after(page: Any, button: str) -> np.ndarray:
    page.get_by_role("button", name=button).click()
    page.wait_for_timeout(800)
    return _canvas(page)
