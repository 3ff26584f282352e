"""The doctor's viewer restores sealed: X25519 and HKDF in WebCrypto, AES-GCM opened in the
page (static/js/sealed.js), the network carrying only the sealed body. Real Chromium."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.test import APIClient

from audit.models import Action, AuditEvent
from imaging.models import Scan, ScanStatus
from imaging.tests import factories
from patients.models import Patient

CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "correct-horse-battery-staple-42"  # conftest's personas

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")

# Runs in the page: the viewer's own restore path, the decrypted Blob back as base64.
FETCH_SEALED = """
async ([url, fields]) => {
  const blob = await window.MedimgSealed.fetchRestore(url, fields);
  const data = new Uint8Array(await blob.arrayBuffer());
  let raw = "";
  for (const b of data) raw += String.fromCharCode(b);
  return {type: blob.type, b64: btoa(raw)};
}
"""

FETCH_REGION = FETCH_SEALED.replace("fetchRestore", "fetchRegion")


@pytest.fixture
def server(serial_live_server: Any, eager_tasks: None, settings: Any) -> Any:
    settings.IMAGING_DETECTOR = "imaging.tests.factories.bright_text_detector"
    return serial_live_server


def test_it_decrypts_the_restored_original_only_in_the_browser(
    server: Any, chromium: Any, technician: Any, doctor: Any
) -> None:
    patient = Patient.objects.create(id="MRN-WEB-1", name="Ada Lovelace", created_by=technician)
    pixels = factories.text_image(200, 150, seed=5)
    api = APIClient()
    api.force_authenticate(technician)
    upload = SimpleUploadedFile("scan.png", factories.png_bytes(pixels), "image/png")
    assert api.post(f"/api/patients/{patient.id}/images/", {"files": [upload]}).status_code == 201
    scan = Scan.objects.get(patient=patient)
    assert scan.status == ScanStatus.COMPLETED

    context = chromium.new_context(base_url=server.url)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto("/login/")
    page.get_by_label("Username").fill(doctor.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}/")
    page.goto(f"/scans/{scan.pk}/")
    page.wait_for_function("() => window.MedimgSealed && window.MedimgSealed.supported()")

    with page.expect_response(lambda r: "/restore/" in r.url) as wire:
        result = page.evaluate(
            FETCH_SEALED, [f"/api/images/{scan.pk}/restore/", {"format": "png", "reason": "check"}]
        )

    assert result["type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["b64"]))))
    assert np.array_equal(shown, pixels)
    # What crossed the network was the sealed body, not the image.
    headers, body = wire.value.headers, wire.value.body()
    assert body.startswith(b"MSEAL") and b"\x89PNG" not in body
    assert headers["x-medimg-sealed"]
    exchange = AuditEvent.objects.get(action=Action.KEY_EXCHANGED, actor=doctor)
    assert exchange.details["key_id"] == headers["x-medimg-sealed"]

    # A decrypted region (the crop under a filled box) comes the same way, same session key.
    region = scan.regions.order_by("index").first()
    assert region is not None
    with page.expect_response(lambda r: "/api/regions/" in r.url) as wire:
        crop = page.evaluate(FETCH_REGION, [f"/api/regions/{region.pk}/", None])
    crop_pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(crop["b64"]))))
    assert np.array_equal(crop_pixels, pixels[region.y1 : region.y2, region.x1 : region.x2])
    assert wire.value.body().startswith(b"MSEAL")
    assert AuditEvent.objects.filter(action=Action.KEY_EXCHANGED, actor=doctor).count() == 1
    context.close()
