"""Every result knows its model: name, version and the SHA-256 of the weights that made it.

engine.model_identity on real files; the detector's identity for the shipped YOLO weights
(a real upload through the YOLO detector) and for a test detector named in IMAGING_DETECTOR;
a segmentation job with a tiny U-Net trained here; the API fields and the scan page's text.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from engine.model_identity import file_sha256, model_identity, model_version
from imaging.jobs import detector as detector_jobs
from imaging.jobs import segmentation as segmentation_jobs
from imaging.models import JobStatus, Scan, ScanStatus, SegmentationJob
from imaging.tests.conftest import BRIGHT_DETECTOR
from imaging.tests.test_segmentation_app import disc_dataset

SHIPPED_DETECTOR = Path(__file__).resolve().parents[2] / "model" / "detector"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- engine.model_identity -----------------------------------------------------------------


def test_it_names_versions_and_hashes_a_weights_file(tmp_path: Path) -> None:
    weights = tmp_path / "lesions" / "model.onnx"
    weights.parent.mkdir()
    weights.write_bytes(b"weights v1" * 1000)
    assert model_identity(weights) == {
        "name": "lesions",
        "version": "",  # nothing states one: never guessed
        "sha256": _sha(weights),
        "weights": "model.onnx",
    }
    (weights.parent / "train_summary.json").write_text(json.dumps({"version": 3}))
    assert model_version(weights.parent) == "3"
    (weights.parent / "config.json").write_text(json.dumps({"version": "2.1", "name": "x"}))
    assert model_version(weights.parent) == "2.1"  # config.json before train_summary.json
    (weights.parent / "VERSION").write_text("4.0\nnotes after the first line\n")
    assert model_identity(weights, name="lesion classifier")["version"] == "4.0"
    assert model_identity(weights, version="given")["version"] == "given"


def test_the_cached_digest_follows_a_rewritten_file(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"a" * 4096)
    first = file_sha256(weights)
    weights.write_bytes(b"b" * 4097)
    os.utime(weights, ns=(1, 1))  # a different mtime as well as size
    assert file_sha256(weights) == _sha(weights) != first


# --- the detector ----------------------------------------------------------------------------


def test_the_configured_yolo_detector_is_identified_by_its_weights_file(settings: Any) -> None:
    settings.IMAGING_DETECTOR = "imaging.jobs.detector.detect"
    for backend, name in (("onnx", "best.int8.onnx"), ("torch", "best.pt")):
        settings.IMAGING_DETECTOR_BACKEND = backend
        identity = detector_jobs.detector_identity()
        assert identity == {
            "name": f"detector/{name}",
            "version": (SHIPPED_DETECTOR / "VERSION").read_text().strip(),
            "sha256": _sha(SHIPPED_DETECTOR / name),
            "weights": name,
        }
    assert (SHIPPED_DETECTOR / "VERSION").read_text().strip() == "1"


def test_a_test_detector_is_recorded_by_its_dotted_name_without_a_digest(
    settings: Any,
) -> None:
    settings.IMAGING_DETECTOR = BRIGHT_DETECTOR
    assert detector_jobs.detector_identity() == {
        "name": BRIGHT_DETECTOR,
        "version": "",
        "sha256": "",
        "weights": "",
    }


@pytest.mark.django_db
def test_a_scan_stores_the_detector_and_the_api_and_page_show_it(
    completed_scan: Scan, api: Any, doctor: Any, technician: Any, client: Client
) -> None:
    assert completed_scan.metrics["model"]["name"] == BRIGHT_DETECTOR
    api.force_authenticate(doctor)
    body = api.get(f"/api/images/{completed_scan.id}/").json()
    assert body["model"] == {"name": BRIGHT_DETECTOR, "version": "", "sha256": ""}

    for user in (technician, doctor):
        client.force_login(user)
        html = client.get(f"/scans/{completed_scan.id}/").content.decode()
        line = re.search(r"data-detector-model>(.*?)</p>", html, re.S)
        assert line, html
        assert f"Detector: {BRIGHT_DETECTOR} (no version stated)" in line[1]
        assert "weights" not in line[1]  # no digest to show


@pytest.mark.django_db
def test_a_scan_processed_before_models_were_recorded_says_so(
    completed_scan: Scan, api: Any, doctor: Any, client: Client
) -> None:
    metrics = dict(completed_scan.metrics)
    del metrics["model"]
    Scan.objects.filter(pk=completed_scan.pk).update(metrics=metrics)
    api.force_authenticate(doctor)
    assert api.get(f"/api/images/{completed_scan.id}/").json()["model"] is None
    client.force_login(doctor)
    html = client.get(f"/scans/{completed_scan.id}/").content.decode()
    assert "Detector not recorded" in html


@pytest.mark.django_db
def test_a_real_upload_through_yolo_records_the_weights_sha256(
    settings: Any, upload: Any, text_png: tuple[bytes, Any], api: Any, doctor: Any
) -> None:
    settings.IMAGING_DETECTOR = "imaging.jobs.detector.detect"
    settings.IMAGING_DETECTOR_BACKEND = "onnx"
    settings.IMAGING_SECOND_OPINION = "off"
    response = upload(("scan.png", text_png[0]))
    assert response.status_code == 201, response.content
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert scan.status == ScanStatus.COMPLETED, scan.failure_reason
    weights = detector_jobs.weights_path("onnx")
    assert scan.metrics["model"] == {
        "name": "detector/best.int8.onnx",
        "version": "1",
        "sha256": _sha(weights),
        "weights": "best.int8.onnx",
    }
    api.force_authenticate(doctor)
    assert api.get(f"/api/images/{scan.id}/").json()["model"]["sha256"] == _sha(weights)


# --- segmentation ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def versioned_discs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory with `discs/` (a 2-class U-Net trained one epoch here) and a
    VERSION file saying 7."""
    from model.segmentation.train import TrainOptions, train

    root = tmp_path_factory.mktemp("seg-identity")
    data = disc_dataset(root / "data")
    models = root / "models"
    train(
        TrainOptions(
            data=data,
            model="unet",
            out=models / "discs",
            name="discs",
            epochs=1,
            batch_size=4,
            channels=(4, 8),
            threads=1,
        ),
        log=lambda line: None,
    )
    (models / "discs" / "VERSION").write_text("7\n")
    return models / "discs"


@pytest.mark.django_db
def test_a_segmentation_stores_its_model_and_the_api_returns_it(
    settings: Any,
    versioned_discs: Path,
    completed_scan: Scan,
    api: Any,
    doctor: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.SEGMENTATION_MODELS_DIR = versioned_discs.parent
    segmentation_jobs._segmenter.cache_clear()
    api.force_authenticate(doctor)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            f"/api/images/{completed_scan.id}/segmentations/", {"model": "discs"}, format="json"
        )
    assert response.status_code == 202, response.content
    job = SegmentationJob.objects.get(pk=response.json()["id"])
    assert job.status == JobStatus.COMPLETED, job.failure_reason
    onnx = versioned_discs / "model.onnx"  # what segmenter_for loads first
    assert job.results["model"] == {
        "name": "discs",
        "version": "7",
        "sha256": _sha(onnx),
        "weights": "model.onnx",
    }
    body = api.get(f"/api/segmentations/{job.id}/").json()
    assert (body["model"], body["model_version"], body["model_sha256"]) == (
        "discs",
        "7",
        _sha(onnx),
    )
    assert body["results"]["model"]["sha256"] == _sha(onnx)


@pytest.mark.django_db
def test_the_shipped_segmentation_model_is_identified_by_its_onnx_file() -> None:
    from imaging.services.segmentation import segmentation_models_register

    (model,) = [m for m in segmentation_models_register() if m.name == "brain-tissue"]
    directory = segmentation_jobs.weights_directory(model.weights_path)
    identity = segmentation_jobs.segmentation_model_identity(model)
    assert identity == {
        "name": "brain-tissue",
        "version": model_version(directory),
        "sha256": _sha(directory / "model.onnx"),
        "weights": "model.onnx",
    }
    assert identity["version"]  # the shipped directory states one
