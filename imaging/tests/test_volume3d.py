"""The 3D view's volumes (imaging/apis/volume3d.py) and page (pages/views/volume3d.py): a real
brain series (MNI152 slices, imaging/tests/brain_series.py) uploaded, segmented as one volume by
the shipped brain-tissue model, and served as NIfTI in its patient geometry, to doctors only,
audited, never cached, never written to disk unencrypted. The browser side is
test_volume3d_browser.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audit.models import Action, AuditEvent, Outcome
from engine.dicom.nifti import nifti1_bytes, volume_geometry
from imaging.jobs import segmentation as segmentation_jobs
from imaging.models import JobStatus, Scan, SegmentationJob
from imaging.selectors.segmentation import segmentation_mask
from imaging.tests.brain_series import mni_series
from imaging.tests.conftest import media_files
from imaging.vault.redacted import scan_redacted_pixels

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "model" / "segmentation"

nibabel = pytest.importorskip("nibabel", reason="reads the NIfTI back (nilearn's dependency)")


def _nifti(content: bytes) -> Any:
    return nibabel.Nifti1Image.from_bytes(content)


def segmented_series(
    *, upload: Any, api: Any, doctor: Any, settings: Any, on_commit: Any, slices: int = 8
) -> tuple[SegmentationJob, list[Scan], dict[str, Any]]:
    """Upload the MNI series as the technician, segment it as one volume as the doctor."""
    settings.SEGMENTATION_MODELS_DIR = MODELS
    segmentation_jobs._segmenter.cache_clear()
    files, truth = mni_series(slices=slices)
    response = upload(*[(f"slice-{i:02d}.dcm", data) for i, data in enumerate(files)])
    assert response.status_code == 201, response.content
    ids = [item["id"] for item in response.json()]
    scans = list(Scan.objects.filter(pk__in=ids).order_by("instance_number"))
    api.force_authenticate(doctor)
    with on_commit(execute=True):
        response = api.post(
            f"/api/images/{scans[0].id}/segmentations/",
            {"model": "brain-tissue", "series": True},
            format="json",
        )
    assert response.status_code == 202, response.content
    job = SegmentationJob.objects.get(pk=response.json()["id"])
    assert job.status == JobStatus.COMPLETED, job.failure_reason
    return job, scans, truth


@pytest.mark.django_db
def test_a_doctor_gets_the_series_and_its_labels_as_nifti_in_patient_geometry(
    api: Any,
    doctor: Any,
    technician: Any,
    other_doctor: Any,
    settings: Any,
    bright_detector: None,
    upload: Any,
    client: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    job, scans, truth = segmented_series(
        upload=upload,
        api=api,
        doctor=doctor,
        settings=settings,
        on_commit=django_capture_on_commit_callbacks,
    )
    assert job.results["series_scans"] == [s.pk for s in scans]
    before = media_files(settings)
    api.force_authenticate(doctor)

    volume = api.get(f"/api/segmentations/{job.id}/volume.nii")
    assert volume.status_code == 200, volume.content
    assert volume["Cache-Control"] == "no-store, private"
    image = _nifti(volume.content)
    frames, rows, columns = truth["volume"].shape
    assert image.shape == (columns, rows, frames)
    assert np.allclose(image.affine, truth["affine"], atol=1e-4), image.affine
    assert nibabel.aff2axcodes(image.affine) == ("L", "P", "S")
    assert np.allclose(image.header.get_zooms(), (2.0, 2.0, 6.0))
    # The voxels are the REDACTED slices (what the viewer shows without a restore): the
    # uploaded values wherever the detector found nothing to cover.
    stored = np.asarray(image.dataobj).transpose(2, 1, 0)
    redacted = np.concatenate([scan_redacted_pixels(s) for s in scans])
    assert np.array_equal(stored, redacted)
    covered = np.zeros(stored.shape, dtype=bool)
    for k, scan in enumerate(scans):
        for region in scan.regions.all():
            x1, y1, x2, y2 = region.box
            covered[k, y1:y2, x1:x2] = True
    assert np.array_equal(stored[~covered], truth["volume"][~covered])

    labels = api.get(f"/api/segmentations/{job.id}/labels.nii")
    assert labels.status_code == 200 and labels["Cache-Control"] == "no-store, private"
    label_image = _nifti(labels.content)
    assert np.allclose(label_image.affine, image.affine)
    mask = segmentation_mask(job=job)
    assert np.array_equal(np.asarray(label_image.dataobj).transpose(2, 1, 0), mask)
    assert set(np.unique(mask)) >= {1, 2, 3}  # the model found csf, grey and white matter

    # Decrypted in memory only: the requests wrote nothing to storage.
    assert media_files(settings) == before
    views = AuditEvent.objects.filter(
        action=Action.SEGMENTATION_VIEWED, target_id=str(job.id), outcome=Outcome.SUCCESS
    )
    assert {e.details.get("view") for e in views} >= {"3d_volume", "3d_labels"}

    # The page: the legend, and what the atrophy check said (or that none ran).
    client.force_login(doctor)
    page = client.get(f"/segmentations/{job.id}/3d/")
    assert page.status_code == 200
    body = page.content.decode()
    assessed = job.results.get("atrophy")  # when the job ran the brain measures
    if assessed is None:
        assert "No atrophy assessment" in body
    else:
        assert "No atrophy assessment" not in body
    for name in ("csf", "grey matter", "white matter"):
        assert name in body
    assert f"/api/segmentations/{job.id}/volume.nii" in body

    # Technicians are refused (audited); another department's doctor gets a 404.
    api.force_authenticate(technician)
    assert api.get(f"/api/segmentations/{job.id}/volume.nii").status_code == 403
    assert AuditEvent.objects.filter(
        action=Action.SEGMENTATION_VIEWED, outcome=Outcome.REFUSED, target_id=str(job.id)
    ).exists()
    client.force_login(technician)
    assert client.get(f"/segmentations/{job.id}/3d/").status_code == 403
    api.force_authenticate(other_doctor)
    for path in ("volume.nii", "labels.nii"):
        assert api.get(f"/api/segmentations/{job.id}/{path}").status_code == 404
    client.force_login(other_doctor)
    assert client.get(f"/segmentations/{job.id}/3d/").status_code == 404


@pytest.mark.django_db
def test_a_one_image_segmentation_has_no_3d_view(
    api: Any,
    doctor: Any,
    settings: Any,
    bright_detector: None,
    upload: Any,
    client: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.SEGMENTATION_MODELS_DIR = MODELS
    segmentation_jobs._segmenter.cache_clear()
    files, _ = mni_series(slices=1)
    scan_id = upload(("one.dcm", files[0])).json()[0]["id"]
    api.force_authenticate(doctor)
    with django_capture_on_commit_callbacks(execute=True):
        job_id = api.post(
            f"/api/images/{scan_id}/segmentations/", {"model": "brain-tissue"}, format="json"
        ).json()["id"]
    response = api.get(f"/api/segmentations/{job_id}/volume.nii")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_a_volume"
    client.force_login(doctor)
    page = client.get(f"/segmentations/{job_id}/3d/")
    assert page.status_code == 404 and b"needs a series" in page.content


def test_the_flagged_side_and_the_geometry_without_orientation() -> None:
    """Sides from the affine: columns running to the patient's left put the left at the high
    indices; a header without orientation gives the spacing alone and no side."""
    from pydicom import Dataset

    def header(position: float, orientation: list[float] | None) -> Any:
        ds = Dataset()
        ds.PixelSpacing = [0.8, 0.5]
        ds.SliceThickness = 3.0
        if orientation:
            ds.ImageOrientationPatient = orientation
            ds.ImagePositionPatient = [0.0, 0.0, position]
        return ds

    axial = volume_geometry([header(3.0 * k, [1, 0, 0, 0, 1, 0]) for k in range(3)], 3)
    assert axial.oriented and axial.spacing == (0.5, 0.8, 3.0)
    assert axial.left_is_low(2) is False  # columns run to the left: left is high
    assert axial.left_is_low(0) is None  # slices run upwards
    bare = volume_geometry([header(0.0, None)], 4)
    assert not bare.oriented and bare.left_is_low(2) is None
    assert np.allclose(bare.affine, np.diag([0.5, 0.8, 3.0, 1.0]))
    # Round trip through nibabel, a signed volume with a rescale.
    volume = np.arange(24, dtype=np.int16).reshape(2, 3, 4) - 5
    back = _nifti(nifti1_bytes(volume, axial.affine, slope=2.0, intercept=-1.0))
    assert np.allclose(back.get_fdata().transpose(2, 1, 0), volume * 2.0 - 1.0)
    assert np.allclose(back.header.get_qform(), back.header.get_sform(), atol=1e-5)
