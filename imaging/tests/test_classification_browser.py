"""The doctor's Classifiers panel in Chromium: pick the shipped classifier, run it, see the
prediction, the probabilities, the model's version and SHA-256 and the research-use label."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command

from imaging.jobs import classification as classification_jobs
from imaging.models import Classification, ClassifierModel, JobStatus, Scan
from imaging.tests.test_classification import SHIPPED
from medimg.tests.test_browser import CHROMIUM, SCREENSHOTS, Session


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
@pytest.mark.django_db(transaction=True)
def test_a_doctor_runs_a_classifier_from_the_scan_page(
    serial_live_server: Any,
    chromium: Any,
    doctor: Any,
    password: str,
    completed_scan: Scan,
) -> None:
    call_command("register_classifier", str(SHIPPED))
    classification_jobs._classifier.cache_clear()
    model = ClassifierModel.objects.get()
    doc = Session(chromium, serial_live_server.url, viewport={"width": 1440, "height": 1000})
    page = doc.page
    doc.log_in(doctor.username, password)
    page.goto(f"/scans/{completed_scan.pk}/")
    panel = page.locator("[data-classification]")
    panel.get_by_text("Research use only — not for diagnosis.", exact=True).wait_for()
    select = panel.get_by_label("Classifier")
    # The list is filled by the panel's script once the classifiers API answers.
    select.locator("option", has_text=f"{model.name} {model.version}").wait_for(state="attached")
    assert select.locator("option").first.inner_text() == f"{model.name} {model.version}"
    panel.get_by_text("Demonstration of the classifier plug-in").wait_for()
    panel.get_by_role("button", name="Run classifier").click()
    row = panel.locator("[data-classification-result]").first
    row.wait_for()
    result = Classification.objects.get()
    assert result.status == JobStatus.COMPLETED
    text = row.inner_text()
    assert result.prediction in text and "Research use only — not for diagnosis" in text
    assert f"sha256 {model.weights_sha256[:12]}" in text
    assert "no_lesion:" in text and "lesion:" in text
    status = panel.locator("[data-classification-status]").inner_text()
    assert status == f"{model.name}: {result.prediction} (Research use only — not for diagnosis)."
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(SCREENSHOTS / "i18-classifier-panel.png"))
    assert doc.console_errors() == []
    doc.close()
