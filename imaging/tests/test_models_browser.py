"""Models and drift in Chromium: a doctor sees which detector found the regions (the shipped
YOLO weights, version and digest) and which model made a segmentation (the shipped
brain-tissue model); an admin sees results per model version and a drifting week flagged on
the statistics page. Screenshots in var/screenshots/ (MEDIMG_SCREENSHOT_DIR): look at them."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from imaging.jobs.detector import weights_path
from imaging.models import JobStatus, ScanStatus, SegmentationJob
from imaging.services.upload import scan_upload
from imaging.tests import factories
from imaging.tests.test_drift import DETECTOR_V2, THIS_MONDAY, drift_scan, stable_weeks
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


def _signed_in(chromium: Any, server: Any, user: Any, width: int = 1280) -> Any:
    client = Client()
    client.force_login(user)
    context = chromium.new_context(base_url=server.url, viewport={"width": width, "height": 900})
    context.set_default_timeout(60_000)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    context.add_cookies(
        [{"name": cookie.key, "value": cookie.value, "url": server.url, "httpOnly": True}]
    )
    return context


def _errors(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return errors


def test_a_doctor_sees_the_detector_and_the_segmentation_model(
    serial_live_server: Any,
    chromium: Any,
    technician: Any,
    doctor: Any,
    settings: Any,
    eager_tasks: None,
) -> None:
    settings.IMAGING_DETECTOR = "imaging.jobs.detector.detect"
    settings.IMAGING_DETECTOR_BACKEND = "onnx"
    settings.IMAGING_SECOND_OPINION = "off"
    patient = Patient.objects.create(id="MRN-MODEL-1", name="Mona Modelle", age=58)
    patient.departments.add(*technician.departments.all())
    upload = SimpleUploadedFile(
        "head.png", factories.png_bytes(factories.text_image(640, 480)), "image/png"
    )
    (scan,) = scan_upload(patient=patient, uploads=[upload], uploaded_by=technician)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.COMPLETED, scan.failure_reason
    digest = hashlib.sha256(weights_path("onnx").read_bytes()).hexdigest()
    assert scan.metrics["model"]["sha256"] == digest

    api = APIClient()
    api.force_authenticate(doctor)
    response = api.post(
        f"/api/images/{scan.id}/segmentations/", {"model": "brain-tissue"}, format="json"
    )
    assert response.status_code == 202, response.content
    job = SegmentationJob.objects.get(pk=response.json()["id"])
    assert job.status == JobStatus.COMPLETED, job.failure_reason
    seg_digest = job.results["model"]["sha256"]

    context = _signed_in(chromium, serial_live_server, doctor)
    page = context.new_page()
    errors = _errors(page)
    page.goto(f"/scans/{scan.id}/")
    line = page.locator("[data-detector-model]")
    assert (
        line.inner_text() == f"Detector: detector/best.int8.onnx, version 1 · weights {digest[:12]}"
    )
    assert line.locator("abbr").get_attribute("title").endswith(digest)
    info = page.locator("[data-segmentation-model-info]")
    info.wait_for(state="visible")
    page.wait_for_function(
        "() => document.querySelector('[data-segmentation-model-info]').textContent.length > 0"
    )
    assert info.inner_text() == f"Model: brain-tissue, version 2 · weights {seg_digest[:12]}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#metrics-title").locator("xpath=..").screenshot(
        path=str(SCREENSHOTS / "i18-models-scan-metrics.png")
    )
    page.locator("[data-segmentation]").screenshot(
        path=str(SCREENSHOTS / "i18-models-segmentation-panel.png")
    )
    assert errors == []
    context.close()


def test_an_admin_sees_results_per_model_and_the_drifting_week(
    serial_live_server: Any, chromium: Any, admin: Any, patient: Any
) -> None:
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).date()
    this_monday = today - timedelta(days=today.weekday())
    shift = (THIS_MONDAY - this_monday).days // 7
    stable_weeks(patient, range(6 - shift, 1 - shift, -1))
    for _ in range(5):
        drift_scan(patient, weeks_ago=1 - shift, confidences=[0.45], model=DETECTOR_V2)
    week = "{}-W{:02d}".format(*(this_monday - timedelta(weeks=1)).isocalendar()[:2])

    context = _signed_in(chromium, serial_live_server, admin, width=1440)
    page = context.new_page()
    errors = _errors(page)
    page.goto("/manage/statistics/")
    warning = page.locator("[data-drift-warning]")
    assert week in warning.inner_text() and "25 %" in warning.inner_text()
    row = page.locator(f'tr[data-week="{week}"]')
    assert "Drift" in row.inner_text()
    assert re.search(r"0\.450\s+\(-44 %\)", row.inner_text()), row.inner_text()
    models = page.locator('[data-per-model="detectors"]').inner_text()
    assert "bbbbbbbbbbbb" in models and "aaaaaaaaaaaa" in models
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("[data-results-per-model]").screenshot(
        path=str(SCREENSHOTS / "i18-stats-per-model.png")
    )
    page.locator("[data-drift]").screenshot(path=str(SCREENSHOTS / "i18-stats-drift.png"))
    assert errors == []
    context.close()
