"""Classifier plug-ins (issue 18 item 5): an admin registers an ONNX classifier, a doctor runs
it on a scan's de-identified pixels, the result is stored with its model and audited.

Admin validation uses tiny ONNX networks exported here with torch; the flow runs the shipped
example (model/classifier/lesion) through the API with in-process tasks.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from audit.models import Action, AuditEvent, Outcome
from engine.classification import Classifier, ClassifierConfig, ConfigError, sha256_hex
from imaging.admin_classification import ClassifierModelForm
from imaging.jobs import classification as classification_jobs
from imaging.models import Classification, ClassifierModel, JobStatus, Scan
from imaging.services.classification import RESEARCH_LABEL
from imaging.vault.pixels import scan_restore_pixels
from imaging.vault.redacted import scan_redacted_pixels

SHIPPED = Path(__file__).resolve().parents[2] / "model" / "classifier" / "lesion"


def _tiny_onnx(size: int = 32, channels: int = 1, classes: int = 2) -> bytes:
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, classes),
    ).eval()
    buffer = io.BytesIO()
    torch.onnx.export(
        net,
        (torch.zeros(1, channels, size, size),),
        buffer,
        input_names=["image"],
        output_names=["logits"],
        opset_version=17,
        dynamo=False,
    )
    return buffer.getvalue()


def _config(size: int = 32, classes: int = 2, **extra: Any) -> dict[str, Any]:
    return {
        "input": {"size": [size, size], "channels": 1},
        "preprocessing": {"clip": [0.5, 99.5], "normalise": "zscore"},
        "classes": ["a", "b", "c"][:classes],
        "threshold": 0.5,
        **extra,
    }


def _form(data: bytes, config: Any, name: str = "tiny") -> ClassifierModelForm:
    return ClassifierModelForm(
        data={
            "name": name,
            "version": "1",
            "config": json.dumps(config),
            "intended_use": "Testing",
            "model_card": "",
            "active": True,
        },
        files={"onnx_file": SimpleUploadedFile("m.onnx", data)},
    )


@pytest.fixture(scope="module")
def tiny() -> bytes:
    return _tiny_onnx()


@pytest.mark.django_db
def test_admin_saves_a_valid_classifier_with_its_sha256(tiny: bytes) -> None:
    form = _form(tiny, _config())
    assert form.is_valid(), form.errors
    model = form.save()
    assert model.weights_sha256 == sha256_hex(tiny)
    assert ClassifierModel.objects.get(pk=model.pk).onnx_file.read() == tiny


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "config", "message"),
    [
        (b"not an onnx file", _config(), "not a model onnxruntime can load"),
        (None, _config(size=64), "does not match the config"),
        (None, _config(classes=3), "the config lists 3 classes"),
        (None, {**_config(), "input": {"size": [32, 32], "channels": 2}}, "must be 1 (grey)"),
        (None, {**_config(), "classes": ["a"]}, "at least two different class names"),
        (None, {**_config(), "threshold": 1.5}, "between 0 and 1"),
        (
            None,
            {**_config(), "preprocessing": {"normalise": "meanstd"}},
            '"meanstd" needs "mean" and "std"',
        ),
    ],
)
def test_admin_refuses_a_broken_file_or_a_config_that_does_not_fit(
    tiny: bytes, data: bytes | None, config: dict[str, Any], message: str
) -> None:
    form = _form(data if data is not None else tiny, config)
    assert not form.is_valid()
    errors = " ".join(str(e) for e in form.non_field_errors())
    assert message in errors, errors
    assert not ClassifierModel.objects.exists()


def test_engine_config_round_trips_and_predicts_by_threshold() -> None:
    config = ClassifierConfig.from_dict(_config(threshold=0.8, positive_class="a"))
    assert ClassifierConfig.from_dict(config.to_dict()) == config
    from engine.classification import predict

    # Positive class "a" (index 0) needs P >= 0.8; 0.7 is not enough even though it is the max.
    assert predict(np.array([0.7, 0.3]), config) == (1, 0.3)
    assert predict(np.array([0.85, 0.15]), config) == (0, 0.85)
    with pytest.raises(ConfigError):
        ClassifierConfig.from_dict(_config(positive_class="z"))


@pytest.fixture
def shipped(db: Any) -> ClassifierModel:
    out = io.StringIO()
    call_command("register_classifier", str(SHIPPED), stdout=out)
    assert "Registered classifier" in out.getvalue()
    classification_jobs._classifier.cache_clear()
    return ClassifierModel.objects.get()


@pytest.fixture
def classify(api: Any, doctor: Any, django_capture_on_commit_callbacks: Any) -> Any:
    def _classify(scan: Scan, model: ClassifierModel, user: Any = None, **body: Any) -> Any:
        api.force_authenticate(user or doctor)
        with django_capture_on_commit_callbacks(execute=True):
            return api.post(
                f"/api/images/{scan.id}/classifications/",
                {"model": model.pk, **body},
                format="json",
            )

    return _classify


@pytest.mark.django_db
def test_register_command_is_idempotent_and_records_the_file_digest(
    shipped: ClassifierModel,
) -> None:
    assert shipped.weights_sha256 == sha256_hex((SHIPPED / "model.onnx").read_bytes())
    assert shipped.name == "synthetic-brain-lesion" and shipped.version
    assert "research use only" in shipped.intended_use.lower()
    assert "AUC" in shipped.model_card
    out = io.StringIO()
    call_command("register_classifier", str(SHIPPED), stdout=out)
    assert "Already registered" in out.getvalue()
    assert ClassifierModel.objects.count() == 1


@pytest.mark.django_db
def test_a_doctor_runs_the_shipped_classifier_on_the_redacted_pixels(
    api: Any, doctor: Any, shipped: ClassifierModel, completed_scan: Scan, classify: Any
) -> None:
    response = classify(completed_scan, shipped)
    assert response.status_code == 202, response.content
    assert response.json()["label"] == RESEARCH_LABEL
    # The task ran at commit (in-process); the result as the doctor polls it.
    body = api.get(f"/api/classifications/{response.json()['id']}/").json()
    assert body["status"] == "completed", body["failure_reason"]
    assert body["label"] == RESEARCH_LABEL == "Research use only — not for diagnosis"
    probs = body["probabilities"]
    assert set(probs) == {"no_lesion", "lesion"}
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
    assert body["prediction"] in probs
    assert body["confidence"] == pytest.approx(probs[body["prediction"]])
    assert body["prediction"] == ("lesion" if probs["lesion"] >= 0.5 else "no_lesion")
    assert body["model_name"] == "synthetic-brain-lesion"
    assert body["model_version"] == shipped.version
    assert body["model_sha256"] == sha256_hex((SHIPPED / "model.onnx").read_bytes())
    assert body["inference_ms"] > 0 and body["runtime_ms"] >= body["inference_ms"]

    # The same figures as the classifier on the REDACTED pixels outside the app, and not
    # those on the original (the burned-in text is there).
    config = ClassifierConfig.from_dict(shipped.config)
    outside = Classifier.from_bytes(config, (SHIPPED / "model.onnx").read_bytes())
    redacted = classification_jobs.frame_of(scan_redacted_pixels(completed_scan), 0, 1)
    original_pixels = classification_jobs.frame_of(scan_restore_pixels(scan=completed_scan), 0, 1)
    assert redacted.ndim == 3 and not np.array_equal(redacted, original_pixels)
    expected = outside.classify(redacted)
    assert probs["lesion"] == pytest.approx(expected.probabilities["lesion"], abs=1e-6)
    original = outside.classify(original_pixels)
    assert original.probabilities["lesion"] != pytest.approx(probs["lesion"], abs=1e-9)

    row = Classification.objects.get(pk=body["id"])
    assert row.status == JobStatus.COMPLETED and row.requested_by == doctor
    for action in (Action.CLASSIFICATION_REQUESTED, Action.CLASSIFICATION_COMPLETED):
        event = AuditEvent.objects.get(action=action)
        assert event.outcome == Outcome.SUCCESS and event.actor == doctor
        assert event.target_id == str(row.pk)

    listed = api.get(f"/api/images/{completed_scan.id}/classifications/").json()
    assert [r["id"] for r in listed] == [row.pk] and listed[0]["label"] == RESEARCH_LABEL
    detail = api.get(f"/api/classifications/{row.pk}/").json()
    assert detail["probabilities"] == probs
    assert AuditEvent.objects.filter(action=Action.CLASSIFICATION_VIEWED).count() == 3
    (offered,) = api.get("/api/classifiers/").json()
    assert offered["id"] == shipped.pk and offered["classes"] == ["no_lesion", "lesion"]
    assert offered["label"] == RESEARCH_LABEL


@pytest.mark.django_db
def test_only_doctors_of_the_department_may_run_or_read(
    api: Any,
    technician: Any,
    other_doctor: Any,
    shipped: ClassifierModel,
    completed_scan: Scan,
    classify: Any,
) -> None:
    row_id = classify(completed_scan, shipped).json()["id"]
    refused = classify(completed_scan, shipped, user=technician)
    assert refused.status_code == 403
    assert AuditEvent.objects.filter(
        action=Action.CLASSIFICATION_REQUESTED, outcome=Outcome.REFUSED, actor=technician
    ).exists()
    for path in (
        "/api/classifiers/",
        f"/api/images/{completed_scan.id}/classifications/",
        f"/api/classifications/{row_id}/",
    ):
        assert api.get(path).status_code == 403, path
    # A doctor of another department: the scan and its results do not exist for them.
    assert classify(completed_scan, shipped, user=other_doctor).status_code == 404
    api.force_authenticate(other_doctor)
    assert api.get(f"/api/images/{completed_scan.id}/classifications/").status_code == 404
    assert api.get(f"/api/classifications/{row_id}/").status_code == 404
    assert Classification.objects.count() == 1


@pytest.mark.django_db
def test_an_inactive_classifier_a_bad_frame_or_an_unknown_id_is_refused(
    shipped: ClassifierModel, completed_scan: Scan, classify: Any
) -> None:
    bad_frame = classify(completed_scan, shipped, frame=3)
    assert bad_frame.status_code == 400
    assert bad_frame.json()["error"]["code"] == "invalid_frame"
    shipped.active = False
    shipped.save()
    inactive = classify(completed_scan, shipped)
    assert inactive.status_code == 400
    assert inactive.json()["error"]["code"] == "unknown_model"
    assert not Classification.objects.exists()
    assert AuditEvent.objects.filter(
        action=Action.CLASSIFICATION_REQUESTED, outcome=Outcome.REFUSED
    ).exists()


@pytest.mark.django_db
def test_the_scan_page_shows_the_classifier_panel_to_doctors_only(
    client: Any, doctor: Any, technician: Any, completed_scan: Scan
) -> None:
    client.force_login(doctor)
    page = client.get(f"/scans/{completed_scan.id}/").content.decode()
    assert "data-classification" in page and "js/classification.js" in page
    assert f'data-results-url="/api/images/{completed_scan.id}/classifications/"' in page
    panel = page.split("data-classification", 1)[1].split("</section>", 1)[0]
    assert "Research use only — not for diagnosis" in panel
    assert "<script>" not in panel
    client.force_login(technician)
    assert "data-classification" not in client.get(f"/scans/{completed_scan.id}/").content.decode()
