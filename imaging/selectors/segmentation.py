"""Reads for segmentation: models offered, jobs, and their decrypted outputs (audited).

Every job query starts from `SegmentationJob.objects.visible_to(user)`; a foreign or missing
job is a 404. The API lets only doctors in; the outputs outline the patient's anatomy, so
reading one is audited as segmentation_viewed.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from audit.models import Action
from audit.services import audit_record
from engine import errors
from engine.crypto import envelope as crypto
from imaging.models import JobStatus, Scan, SegmentationJob, SegmentationModel
from imaging.vault.keys import open_data_key
from imaging.vault.storage import storage_read


def segmentation_model_list() -> QuerySet[SegmentationModel]:
    """Enabled models. A read: the API registers new model directories on disk first
    (imaging.services.segmentation.segmentation_models_register)."""
    return SegmentationModel.objects.filter(enabled=True).order_by("name")


def segmentation_model_get(*, name: str) -> SegmentationModel:
    models = segmentation_model_list()
    model = models.filter(name=name).first()
    if model is None:
        raise errors.unknown_model(name)
    return model


def segmentation_list_for_scan(
    *, user: Any, scan: Scan, request: HttpRequest | None = None
) -> list[SegmentationJob]:
    """The scan's jobs, newest first; audited (their results are the patient's volumes)."""
    jobs = list(
        SegmentationJob.objects.visible_to(user)
        .filter(scan=scan)
        .select_related("model", "requested_by")
        .order_by("-created_at", "-id")
    )
    audit_record(
        action=Action.SEGMENTATION_VIEWED,
        actor=user,
        target=scan,
        request=request,
        details={"view": "list", "jobs": len(jobs)},
    )
    return jobs


def segmentation_get_for_user(
    *, user: Any, job_id: int, request: HttpRequest | None = None
) -> SegmentationJob:
    job = get_object_or_404(
        SegmentationJob.objects.visible_to(user).select_related("model", "scan"), pk=job_id
    )
    if job.status == JobStatus.COMPLETED:
        audit_record(
            action=Action.SEGMENTATION_VIEWED,
            actor=user,
            target=job,
            request=request,
            details={"view": "results", "scan": job.scan_id},
        )
    return job


def _require_completed(job: SegmentationJob) -> None:
    if job.status != JobStatus.COMPLETED:
        raise errors.segmentation_not_ready()


def _open(job: SegmentationJob, path: str, part: str, frame: int = 0) -> bytes:
    scan_ref = str(job.scan.uid)
    data_key = open_data_key(job.scan)
    aad = crypto.segmentation_aad(scan_ref=scan_ref, job=job.id, part=part, frame=frame)
    return crypto.decrypt_blob(data_key, storage_read(path), aad=aad)


def segmentation_overlay(
    *, user: Any, job_id: int, frame: int = 0, request: HttpRequest | None = None
) -> tuple[SegmentationJob, bytes]:
    """The overlay PNG of one frame (redacted image, tinted classes, legend)."""
    job = get_object_or_404(
        SegmentationJob.objects.visible_to(user).select_related("model", "scan"), pk=job_id
    )
    _require_completed(job)
    paths = job.results.get("overlay_paths") or [job.overlay_path]
    if not 0 <= frame < len(paths):
        raise errors.invalid_frame(max(len(paths) - 1, 0))
    content = _open(job, paths[frame], "overlay", frame)
    audit_record(
        action=Action.SEGMENTATION_VIEWED,
        actor=user,
        target=job,
        request=request,
        details={"view": "overlay", "frame": frame, "scan": job.scan_id},
    )
    return job, content


def segmentation_labels(
    *, user: Any, job_id: int, frame: int = 0, request: HttpRequest | None = None
) -> tuple[SegmentationJob, bytes]:
    """The label mask of one frame as an 8-bit greyscale PNG (pixel value = class index):
    what the viewer draws as a labelmap over the image, following zoom and frame."""
    import io

    from PIL import Image

    job = get_object_or_404(
        SegmentationJob.objects.visible_to(user).select_related("model", "scan"), pk=job_id
    )
    mask = segmentation_mask(job=job)
    if mask.ndim == 2:
        mask = mask[None]
    if not 0 <= frame < mask.shape[0]:
        raise errors.invalid_frame(max(mask.shape[0] - 1, 0))
    buffer = io.BytesIO()
    Image.fromarray(mask[frame].astype("uint8"), mode="L").save(buffer, format="PNG")
    audit_record(
        action=Action.SEGMENTATION_VIEWED,
        actor=user,
        target=job,
        request=request,
        details={"view": "labels", "frame": frame, "scan": job.scan_id},
    )
    return job, buffer.getvalue()


def segmentation_dicom_seg(
    *, user: Any, job_id: int, request: HttpRequest | None = None
) -> tuple[SegmentationJob, bytes]:
    """The DICOM SEG (Part 10 bytes), for DICOM inputs a SEG can describe."""
    job = get_object_or_404(
        SegmentationJob.objects.visible_to(user).select_related("model", "scan"), pk=job_id
    )
    _require_completed(job)
    if not job.seg_path:
        raise errors.no_dicom_seg()
    content = _open(job, job.seg_path, "seg")
    audit_record(
        action=Action.SEGMENTATION_VIEWED,
        actor=user,
        target=job,
        request=request,
        details={"view": "dicom_seg", "scan": job.scan_id},
    )
    return job, content


def segmentation_mask(*, job: SegmentationJob) -> Any:
    """The label mask (F, H, W) uint8 of a completed job, for services and tests."""
    _require_completed(job)
    return crypto.unpack_array(_open(job, job.mask_path, "mask"))
