"""The shipped brain-tissue model, end to end in the app: a technician uploads a brain slice
with a name burned in, a doctor segments it and gets the overlay and the tissue areas."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from imaging.jobs import segmentation as segmentation_jobs
from imaging.models import JobStatus, Scan, ScanStatus, SegmentationJob
from imaging.selectors.segmentation import segmentation_mask
from imaging.tests import factories
from imaging.tests.conftest import as_upload, wait_for_status

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "model" / "segmentation"
HELDOUT = MODELS / "brain-tissue" / "heldout"
CASE = "test-00000"
# A sanity floor for this one slice, not the target. Measured: grey 0.787 and white 0.717 on
# the slice alone, 0.763 and 0.665 with the name burned in (the bright text moves the
# percentile clip and z-score the model normalises with). The figures against the targets
# are in the model card and test_brain_tissue_model.py.
SANITY_DICE = 0.60


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


@pytest.mark.django_db
def test_it_segments_a_brain_slice_for_a_doctor_with_overlay_and_areas(
    api: Any,
    doctor: Any,
    settings: Any,
    bright_detector: None,
    upload: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.SEGMENTATION_MODELS_DIR = MODELS
    segmentation_jobs._segmenter.cache_clear()
    truth = np.asarray(Image.open(HELDOUT / "masks" / f"{CASE}.png"))
    # The slice kept below the detector's ink level, a name burned into its top-left corner.
    slice_ = np.asarray(Image.open(HELDOUT / "images" / f"{CASE}.png")).astype(np.float32)
    image = Image.fromarray(np.round(slice_ * 240 / 255).astype(np.uint8))
    ImageDraw.Draw(image).text((2, 1), "DOE^JANE", fill=factories.INK, font=factories._font(16))
    response = upload(("brain.png", factories.png_bytes(np.asarray(image))))
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert scan.regions.exists()  # the name was found and redacted

    api.force_authenticate(doctor)
    models = [m["name"] for m in api.get("/api/segmentation/models/").json()]
    assert "brain-tissue" in models
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            f"/api/images/{scan.id}/segmentations/",
            {"model": "brain-tissue", "pixel_spacing_mm": [1.0, 1.0]},
            format="json",
        )
    job = SegmentationJob.objects.get(pk=response.json()["id"])
    assert job.status == JobStatus.COMPLETED, job.failure_reason

    mask = segmentation_mask(job=job)[0]
    dice = {index: _dice(mask == index, truth == index) for index in (2, 3)}
    assert min(dice.values()) >= SANITY_DICE, dice
    results = api.get(f"/api/segmentations/{job.id}/").json()["results"]
    # 1 mm pixels: the area in mm^2 is the pixel count.
    for name in ("csf", "grey_matter", "white_matter"):
        assert results["areas_mm2"][name] == results["pixels"][name] > 0
    overlay = api.get(f"/api/segmentations/{job.id}/overlay/")
    assert overlay.status_code == 200
    assert Image.open(io.BytesIO(overlay.content)).size[0] == scan.width


@pytest.mark.celery
@pytest.mark.slow
def test_a_real_worker_runs_a_segmentation_job_from_the_segment_queue(
    celery_worker: Any, api: Any, technician: Any, doctor: Any, patient: Any
) -> None:
    import time

    image = np.asarray(Image.open(HELDOUT / "images" / f"{CASE}.png"))
    api.force_authenticate(technician)
    response = api.post(
        f"/api/patients/{patient.id}/images/",
        {"files": [as_upload("brain.png", factories.png_bytes((image * 0.9).astype(np.uint8)))]},
        format="multipart",
    )
    scan = wait_for_status(response.json()[0]["id"], {ScanStatus.COMPLETED, ScanStatus.FAILED})
    assert scan.status == ScanStatus.COMPLETED, celery_worker.log()

    api.force_authenticate(doctor)
    response = api.post(
        f"/api/images/{scan.id}/segmentations/", {"model": "brain-tissue"}, format="json"
    )
    assert response.status_code == 202 and response.json()["status"] == "queued"
    deadline = time.monotonic() + 120
    job = SegmentationJob.objects.get(pk=response.json()["id"])
    while job.status not in (JobStatus.COMPLETED, JobStatus.FAILED) and time.monotonic() < deadline:
        time.sleep(0.2)
        job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED, celery_worker.log()
    assert segmentation_mask(job=job).shape == (1, 256, 256)
    assert api.get(f"/api/segmentations/{job.id}/overlay/").status_code == 200
