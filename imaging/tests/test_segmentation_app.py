"""Segmentation in the app: a doctor runs a model on a scan, sees the overlay and the sizes.

A tiny U-Net is trained here for one epoch on generated discs (seconds), written as a model
directory the app registers on first use; the flow then runs through the API with in-process
tasks. The shipped brain-tissue model's own app test is in test_segmentation_shipped.py.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image

from audit.models import Action, AuditEvent, Outcome
from engine.crypto import envelope as crypto
from engine.dicom.seg import labels_from_seg
from engine.errors import CryptoError
from engine.segmentation.model import ModelConfig, Segmenter, build_network
from imaging.admin_segmentation import SegmentationModelForm
from imaging.jobs import segmentation as segmentation_jobs
from imaging.models import JobStatus, Scan, SegmentationJob, SegmentationModel
from imaging.selectors.segmentation import segmentation_mask
from imaging.tests import factories
from imaging.tests.deid_checks import dciodvfy_available, dciodvfy_errors
from imaging.vault.keys import open_data_key, open_original, unwrap_data_key
from imaging.vault.pixels import scan_restore_pixels
from imaging.vault.storage import storage_read

DISC_CLASSES = {0: "background", 1: "disc"}


def disc_dataset(root: Path, n: int = 12, size: int = 32) -> Path:
    import json

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.json").write_text(json.dumps({str(k): v for k, v in DISC_CLASSES.items()}))
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        cy, cx, r = rng.integers(8, size - 8), rng.integers(8, size - 8), rng.integers(4, 8)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        image = np.clip(60 + 120 * mask + rng.normal(0, 10, mask.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"c{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"c{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def disc_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding `discs/`: a 2-class U-Net trained one epoch (weights,
    ONNX, config, card) by the same code as `manage.py train_segmentation`."""
    from model.segmentation.train import TrainOptions, train

    root = tmp_path_factory.mktemp("seg")
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
    return models


@pytest.fixture
def discs(settings: Any, disc_models: Path) -> Path:
    settings.SEGMENTATION_MODELS_DIR = disc_models
    segmentation_jobs._segmenter.cache_clear()
    return disc_models / "discs"


@pytest.fixture
def segment(api: Any, doctor: Any, django_capture_on_commit_callbacks: Any) -> Any:
    """POST a segmentation request as the doctor, running the task as a commit would."""

    def _segment(scan: Scan, **body: Any) -> Any:
        api.force_authenticate(doctor)
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post(
                f"/api/images/{scan.id}/segmentations/", {"model": "discs", **body}, format="json"
            )
        return response

    return _segment


def _expected_labels(scan: Scan, model_dir: Path) -> np.ndarray:
    """What the model gives on the ORIGINAL pixels, computed outside the app."""
    pixels = scan_restore_pixels(scan=scan)
    grey = segmentation_jobs._grey(pixels)
    result = Segmenter.load(model_dir, backend="onnx", threads=1).segment(
        grey if grey.shape[0] > 1 else grey[0]
    )
    return result.labels if result.labels.ndim == 3 else result.labels[None]


@pytest.mark.django_db
def test_it_lists_models_found_on_disk_for_a_doctor(api: Any, doctor: Any, discs: Path) -> None:
    api.force_authenticate(doctor)
    response = api.get("/api/segmentation/models/")
    assert response.status_code == 200
    (model,) = response.json()
    assert model["name"] == "discs"
    assert model["classes"] == {"0": "background", "1": "disc"}
    assert model["network"]["kind"] == "unet"
    assert SegmentationModel.objects.get(name="discs").weights_path.endswith("discs")


@pytest.mark.django_db
def test_it_segments_a_png_on_its_original_pixels_and_stores_results_encrypted(
    api: Any, doctor: Any, discs: Path, completed_scan: Scan, segment: Any
) -> None:
    response = segment(completed_scan, pixel_spacing_mm=[0.5, 0.25])
    assert response.status_code == 202, response.content
    job = SegmentationJob.objects.get(pk=response.json()["id"])
    assert job.status == JobStatus.COMPLETED, job.failure_reason

    mask = segmentation_mask(job=job)
    assert mask.shape == (1, completed_scan.height, completed_scan.width)
    # The model ran on the original (text included), not on the redacted image.
    assert np.array_equal(mask, _expected_labels(completed_scan, discs))

    # Areas from the given spacing: pixels x 0.5 x 0.25 mm^2.
    body = api.get(f"/api/segmentations/{job.id}/").json()
    results = body["results"]
    assert body["status"] == "completed" and not body["has_dicom_seg"]
    assert results["pixels"]["disc"] == int((mask == 1).sum())
    assert results["areas_mm2"]["disc"] == round((mask == 1).sum() * 0.125, 2)
    assert "overlay_paths" not in results  # storage names stay internal

    # Stored files are ciphertext bound to this scan and job.
    raw = storage_read(job.mask_path)
    assert b"NUMPY" not in raw
    key = unwrap_data_key(bytes(completed_scan.wrapped_key), scan_ref=completed_scan.uid)
    with pytest.raises(CryptoError):
        crypto.decrypt_blob(
            key,
            raw,
            aad=crypto.segmentation_aad(
                scan_ref=completed_scan.uid, job=job.id + 1, part="mask", frame=0
            ),
        )

    overlay = api.get(f"/api/segmentations/{job.id}/overlay/")
    assert overlay.status_code == 200 and overlay["Content-Type"] == "image/png"
    assert overlay["Cache-Control"] == "no-store, private"
    image = Image.open(io.BytesIO(overlay.content))
    assert image.width == completed_scan.width and image.height > completed_scan.height
    assert b"\x89PNG" not in storage_read(job.overlay_path)

    seg = api.get(f"/api/segmentations/{job.id}/seg/")
    assert seg.status_code == 404 and seg.json()["error"]["code"] == "no_dicom_seg"

    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {
        Action.SEGMENTATION_REQUESTED,
        Action.SEGMENTATION_COMPLETED,
        Action.SEGMENTATION_VIEWED,
    } <= actions
    listed = api.get(f"/api/images/{completed_scan.id}/segmentations/").json()
    assert [item["id"] for item in listed] == [job.id]


def _spaced_dicom() -> bytes:
    """A single-frame 16-bit MR-like DICOM with a name on the header and in the pixels,
    pixel spacing 0.7 mm and the study attributes a real scanner writes."""
    data, _ = factories.dicom16_text(frames=1, width=96, height=64)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PixelSpacing = [0.7, 0.7]
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = "20240102"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.django_db
def test_it_writes_a_dicom_seg_of_the_mask_that_reads_back_with_highdicom(
    api: Any, discs: Path, bright_detector: None, upload: Any, segment: Any
) -> None:
    import highdicom as hd

    source = _spaced_dicom()
    response = upload(("mr.dcm", source))
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    job = SegmentationJob.objects.get(pk=segment(scan).json()["id"])
    assert job.status == JobStatus.COMPLETED, job.failure_reason
    mask = segmentation_mask(job=job)

    body = api.get(f"/api/segmentations/{job.id}/").json()
    assert body["has_dicom_seg"]
    assert body["results"]["spacing_mm"] == [0.7, 0.7]  # from the header
    assert body["results"]["areas_mm2"]["disc"] == round(float((mask == 1).sum()) * 0.49, 2)

    response = api.get(f"/api/segmentations/{job.id}/seg/")
    assert response.status_code == 200 and response["Content-Type"] == "application/dicom"
    seg = hd.seg.segread(io.BytesIO(response.content))
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [1]
    assert seg.SegmentSequence[0].SegmentLabel == "disc"
    # It references, and copies the patient module of, the DE-IDENTIFIED source.
    original = pydicom.dcmread(io.BytesIO(source))
    assert "DOE" not in str(seg.PatientName) and seg.PatientID != original.PatientID
    assert seg.StudyInstanceUID != original.StudyInstanceUID
    (referenced,) = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert referenced.ReferencedSOPInstanceUID != original.SOPInstanceUID
    back = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[referenced.ReferencedSOPInstanceUID], combine_segments=True
    )
    assert np.array_equal(np.asarray(back, dtype=np.uint8), mask)
    if dciodvfy_available():  # Debian dicom3tools; CI installs it (.ci/run)
        assert not dciodvfy_errors(response.content)


@pytest.mark.django_db
def test_it_segments_every_frame_and_gives_no_seg_without_patient_geometry(
    api: Any, discs: Path, completed_dicom: tuple[Scan, Any], segment: Any
) -> None:
    scan, _ = completed_dicom
    job = SegmentationJob.objects.get(pk=segment(scan).json()["id"])
    assert job.status == JobStatus.COMPLETED, job.failure_reason
    mask = segmentation_mask(job=job)
    assert mask.shape == (2, scan.height, scan.width)
    assert np.array_equal(mask, _expected_labels(scan, discs))
    results = api.get(f"/api/segmentations/{job.id}/").json()["results"]
    assert results["frames"] == 2 and results["spacing_mm"] is None
    assert any("no DICOM SEG" in note for note in results["notes"])
    assert api.get(f"/api/segmentations/{job.id}/overlay/?frame=1").status_code == 200
    bad = api.get(f"/api/segmentations/{job.id}/overlay/?frame=2")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_frame"
    assert api.get(f"/api/segmentations/{job.id}/seg/").status_code == 404


@pytest.mark.django_db
def test_it_refuses_every_role_but_doctor_and_audits_the_refusal(
    api: Any, technician: Any, discs: Path, completed_scan: Scan, segment: Any
) -> None:
    job = SegmentationJob.objects.get(pk=segment(completed_scan).json()["id"])
    api.force_authenticate(technician)
    refused = api.post(
        f"/api/images/{completed_scan.id}/segmentations/", {"model": "discs"}, format="json"
    )
    assert refused.status_code == 403
    assert AuditEvent.objects.filter(
        action=Action.SEGMENTATION_REQUESTED, outcome=Outcome.REFUSED, actor=technician
    ).exists()
    for path in (
        "/api/segmentation/models/",
        f"/api/images/{completed_scan.id}/segmentations/",
        f"/api/segmentations/{job.id}/",
        f"/api/segmentations/{job.id}/overlay/",
        f"/api/segmentations/{job.id}/seg/",
    ):
        assert api.get(path).status_code == 403, path
    api.force_authenticate(None)
    assert api.get(f"/api/segmentations/{job.id}/").status_code == 401
    assert SegmentationJob.objects.count() == 1


@pytest.mark.django_db
def test_it_refuses_unknown_models_unready_scans_and_bad_spacing(
    api: Any, doctor: Any, discs: Path, completed_scan: Scan, patient: Any, segment: Any
) -> None:
    api.force_authenticate(doctor)
    unknown = api.post(
        f"/api/images/{completed_scan.id}/segmentations/", {"model": "nope"}, format="json"
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_model"
    bad = segment(completed_scan, pixel_spacing_mm=[0, 1])
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_spacing"
    pending = Scan.objects.create(
        patient=patient,
        original_filename="p.png",
        format="png",
        size_bytes=1,
        width=8,
        height=8,
        pixel_dtype="uint8",
        pixels_sha256="0" * 64,
        original_path="x",
        wrapped_key=b"",
        key_id="dev",
    )
    not_ready = segment(pending)
    assert not_ready.status_code == 409 and not_ready.json()["error"]["code"] == "scan_not_ready"
    SegmentationModel.objects.filter(name="discs").update(enabled=False)
    disabled = segment(completed_scan)  # a disabled model is not offered at all
    assert disabled.status_code == 400 and disabled.json()["error"]["code"] == "unknown_model"
    assert not SegmentationJob.objects.exists()
    refusals = AuditEvent.objects.filter(
        action=Action.SEGMENTATION_REQUESTED, outcome=Outcome.REFUSED
    )
    assert sorted(e.details["error"] for e in refusals) == ["invalid_spacing", "scan_not_ready"]
    missing = api.get("/api/segmentations/999999/")
    assert missing.status_code == 404


@pytest.mark.django_db
def test_it_marks_a_job_failed_when_its_weights_are_gone(
    api: Any, doctor: Any, discs: Path, completed_scan: Scan, segment: Any, tmp_path: Path
) -> None:
    segment(completed_scan)  # registers the model
    SegmentationModel.objects.filter(name="discs").update(weights_path=str(tmp_path / "gone"))
    segmentation_jobs._segmenter.cache_clear()
    job = SegmentationJob.objects.get(pk=segment(completed_scan).json()["id"])
    assert job.status == JobStatus.FAILED and job.failure_reason == "model_unavailable"
    assert AuditEvent.objects.filter(action=Action.SEGMENTATION_FAILED).exists()
    assert api.get(f"/api/segmentations/{job.id}/overlay/").status_code == 409


@pytest.mark.django_db
def test_it_runs_an_admin_uploaded_onnx_or_torchscript_model(
    discs: Path, completed_scan: Scan, segment: Any
) -> None:
    import json

    import torch
    from django.core.files.uploadedfile import SimpleUploadedFile

    config = json.loads((discs / "config.json").read_text())
    expected = _expected_labels(completed_scan, discs)

    network = build_network(ModelConfig.from_dict(config).network)
    network.load_state_dict(torch.load(discs / "weights.pt", weights_only=True))
    network.eval()
    scripted = io.BytesIO()
    torch.jit.save(torch.jit.trace(network, torch.zeros(1, 1, 32, 32)), scripted)

    for name, weights in (
        ("uploaded-onnx", (discs / "model.onnx").read_bytes()),
        ("uploaded-script", scripted.getvalue()),
    ):
        form = SegmentationModelForm(
            data={"name": name, "title": name, "config": json.dumps(config), "enabled": True},
            files={"weights": SimpleUploadedFile(f"{name}.bin", weights)},
        )
        assert form.is_valid(), form.errors
        form.save()
        job = SegmentationJob.objects.get(pk=segment(completed_scan, model=name).json()["id"])
        assert job.status == JobStatus.COMPLETED, job.failure_reason
        assert np.array_equal(segmentation_mask(job=job), expected)
    kinds = {
        Segmenter.from_bytes(ModelConfig.from_dict(config), b).backend
        for b in ((discs / "model.onnx").read_bytes(), scripted.getvalue())
    }
    assert kinds == {"onnx", "torchscript"}

    garbage = SegmentationModelForm(
        data={"name": "garbage", "config": json.dumps(config), "enabled": True},
        files={"weights": SimpleUploadedFile("g.bin", b"not a model")},
    )
    assert not garbage.is_valid()
    bad_config = SegmentationModelForm(
        data={"name": "bad", "config": json.dumps({"name": "x"}), "enabled": True},
        files={"weights": SimpleUploadedFile("m.onnx", (discs / "model.onnx").read_bytes())},
    )
    assert not bad_config.is_valid()


def _mr_series(count: int = 4) -> list[bytes]:
    """Single-frame MR slices of one series, 0.5 mm pixels, 2 mm apart (positions and
    orientation given, as a scanner writes them)."""
    from pydicom.uid import MRImageStorage, generate_uid

    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    files = []
    for k in range(count):
        data, _ = factories.dicom16_text(frames=1, width=96, height=64)
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.Modality = "MR"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = frame_of_reference
        ds.InstanceNumber = count - k  # uploaded in reverse: the series is put in order
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * (count - k)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.5, 0.5]
        ds.SliceThickness = 2.0
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append(buffer.getvalue())
    return files


@pytest.mark.django_db
def test_it_segments_a_series_as_one_volume_with_volumes_in_ml_and_one_seg(
    api: Any, discs: Path, bright_detector: None, upload: Any, segment: Any
) -> None:
    response = upload(*[(f"s{i}.dcm", data) for i, data in enumerate(_mr_series())])
    scans = list(Scan.objects.filter(pk__in=[item["id"] for item in response.json()]))
    assert len({s.series_uid for s in scans}) == 1 and scans[0].series_uid
    members = segmentation_jobs.series_members(scans[0])
    assert [m.instance_number for m in members] == [1, 2, 3, 4]

    job = SegmentationJob.objects.get(pk=segment(scans[-1], series=True).json()["id"])
    assert job.status == JobStatus.COMPLETED, job.failure_reason
    mask = segmentation_mask(job=job)
    assert mask.shape == (4, 64, 96)
    expected = np.concatenate([_expected_labels(m, discs) for m in members])
    assert np.array_equal(mask, expected)

    results = api.get(f"/api/segmentations/{job.id}/").json()["results"]
    assert results["series_scans"] == [m.pk for m in members]
    assert results["spacing_mm"] == [2.0, 0.5, 0.5]  # slice spacing from the positions
    voxels = int((mask == 1).sum())
    assert results["volumes_ml"]["disc"] == pytest.approx(voxels * 0.5 * 0.5 * 2.0 / 1000, abs=1e-3)
    assert api.get(f"/api/segmentations/{job.id}/overlay/?frame=3").status_code == 200

    seg = api.get(f"/api/segmentations/{job.id}/seg/")
    assert seg.status_code == 200
    sources = [
        segmentation_jobs._deidentified_source(m, open_original(m), open_data_key(m))
        for m in members
    ]
    back, names = labels_from_seg(seg.content, sources)
    assert names == {1: "disc"}
    assert np.array_equal(back, mask)


@pytest.mark.django_db
def test_it_refuses_a_series_run_on_an_image_without_a_series(
    discs: Path, completed_scan: Scan, segment: Any
) -> None:
    response = segment(completed_scan, series=True)
    assert response.status_code == 400 and response.json()["error"]["code"] == "not_a_series"
    assert not SegmentationJob.objects.exists()


@pytest.mark.django_db
def test_it_shows_the_segmentation_panel_to_doctors_only(
    client: Any, doctor: Any, technician: Any, completed_scan: Scan
) -> None:
    client.force_login(doctor)
    page = client.get(f"/scans/{completed_scan.id}/").content.decode()
    assert "data-segmentation" in page and "js/segmentation.js" in page
    assert f'data-jobs-url="/api/images/{completed_scan.id}/segmentations/"' in page
    assert 'data-overlay-url="/api/segmentations/0/overlay/"' in page
    panel = page.split("data-segmentation", 1)[1].split("</section>", 1)[0]
    assert "<script>" not in panel  # behaviour lives in static/js (CSP)
    client.force_login(technician)
    assert "data-segmentation" not in client.get(f"/scans/{completed_scan.id}/").content.decode()


@pytest.mark.django_db
def test_a_multi_frame_mr_the_seg_cannot_place_completes_without_a_seg(
    api: Any, discs: Path, bright_detector: None, upload: Any, segment: Any
) -> None:
    # pydicom's 10-frame enhanced MR: a Frame of Reference but no per-frame positions, which
    # highdicom refuses to place. The job must complete (masks, overlays, sizes) and say why
    # there is no SEG, not fail with processing_error.
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("emri_small.dcm")).read_bytes()
    response = upload(("emri_small.dcm", data))
    assert response.status_code == 201, response.content
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert scan.status == "completed" and scan.frames == 10, scan.failure_reason

    job = SegmentationJob.objects.get(pk=segment(scan).json()["id"])

    assert job.status == JobStatus.COMPLETED, job.failure_reason
    assert job.seg_path == ""
    results = api.get(f"/api/segmentations/{job.id}/").json()["results"]
    assert results["frames"] == 10
    assert any(n.startswith("no DICOM SEG") for n in results["notes"]), results["notes"]
    assert api.get(f"/api/segmentations/{job.id}/seg/").status_code == 404


@pytest.mark.django_db
def test_it_serves_the_label_mask_of_a_frame_for_the_viewers_labelmap(
    api: Any, doctor: Any, discs: Path, completed_scan: Scan, segment: Any
) -> None:
    response = segment(completed_scan, pixel_spacing_mm=[0.5, 0.5])
    job = SegmentationJob.objects.get(pk=response.json()["id"])
    assert job.status == JobStatus.COMPLETED, job.failure_reason

    labels = api.get(f"/api/segmentations/{job.id}/overlay/?labels=true")
    assert labels.status_code == 200 and labels["Content-Type"] == "image/png"
    assert labels["Cache-Control"] == "no-store, private"
    image = Image.open(io.BytesIO(labels.content))
    assert image.mode == "L"
    # Every pixel is its class index: the mask itself, no tint and no legend.
    assert np.array_equal(np.asarray(image), segmentation_mask(job=job)[0])
    viewed = AuditEvent.objects.filter(action=Action.SEGMENTATION_VIEWED).latest("id")
    assert viewed.details["view"] == "labels" and viewed.details["frame"] == 0

    beyond = api.get(f"/api/segmentations/{job.id}/overlay/?labels=true&frame=1")
    assert beyond.status_code == 400
