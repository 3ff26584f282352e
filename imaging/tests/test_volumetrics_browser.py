"""The doctor's segmentation panel in Chromium with a brain MR series: run the shipped
brain-tissue model on the whole series, see the tissue volumes, the z-scores with their
published references, the atrophy grade and the decision-support caveat."""

from __future__ import annotations

from typing import Any

import pytest

from imaging.jobs import segmentation as segmentation_jobs
from imaging.models import JobStatus, SegmentationJob
from imaging.tests.test_volumetrics import MODELS, upload_series
from medimg.tests.test_browser import CHROMIUM, SCREENSHOTS, Session


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
@pytest.mark.django_db(transaction=True)
def test_a_doctor_sees_brain_volumetrics_and_the_atrophy_grade(
    serial_live_server: Any,
    chromium: Any,
    doctor: Any,
    password: str,
    settings: Any,
    bright_detector: None,
    upload: Any,
) -> None:
    pytest.importorskip("nilearn")
    settings.SEGMENTATION_MODELS_DIR = MODELS
    segmentation_jobs._segmenter.cache_clear()
    scans, _ = upload_series(upload, 0.3, "left")

    doc = Session(chromium, serial_live_server.url, viewport={"width": 1440, "height": 1400})
    page = doc.page
    doc.log_in(doctor.username, password)
    page.goto(f"/scans/{scans[0].pk}/")
    panel = page.locator("[data-segmentation]")
    select = panel.get_by_label("Model")
    select.locator("option", has_text="brain").first.wait_for(state="attached")
    select.select_option("brain-tissue")
    panel.get_by_label("Whole series as one volume", exact=False).check()
    panel.get_by_role("button", name="Run segmentation").click()
    box = panel.locator("[data-volumetrics]")
    box.wait_for(state="visible", timeout=120_000)

    job = SegmentationJob.objects.get()
    assert job.status == JobStatus.COMPLETED, job.failure_reason
    atrophy = job.results["atrophy"]
    text = box.inner_text()
    assert "Brain parenchymal fraction (graded)" in text
    bpf = atrophy["measures"]["bpf"]
    assert f"{bpf['z']:.2f}" in text and "Yamada" in text
    assert f"{bpf['reference']['mean']:.3f}" in text  # the reference mean and range
    assert "70-79 reference (age from dicom)" in text
    assert "Decision support, not a diagnosis" in text
    grade = box.locator("[data-volumetrics-grade]")
    assert grade.get_attribute("data-grade") == atrophy["grade"]
    # The left hemisphere was shrunk: a flagged region on the left is listed.
    flagged = box.locator("[data-volumetrics-flagged] li")
    assert flagged.count() == len(atrophy["flagged"]) >= 1
    assert any(", left:" in flagged.nth(i).inner_text() for i in range(flagged.count()))
    volumes = job.results["volumetrics"]["volumes_ml"]
    assert f"{volumes['grey_matter']:.1f}" in text
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    box.scroll_into_view_if_needed()
    box.screenshot(path=str(SCREENSHOTS / "i18-volumetrics-panel.png"))
    assert doc.console_errors() == []
    doc.close()
