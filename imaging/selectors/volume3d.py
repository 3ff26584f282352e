"""Reads for the 3D view of a segmented volume (pages: /segmentations/{id}/3d/): the series as
NIfTI, its labelmap as NIfTI, and what the page shows beside them (classes, colours, the
atrophy check's flagged regions). Doctors only (the APIs and the page check the role); every
job query starts from `SegmentationJob.objects.visible_to(user)` (a foreign job is a 404),
and every read of patient data is audited as segmentation_viewed, as the 2D results are.

    volume3d_view(*, user, job_id, request) -> Volume3dView      # the page's facts, audited
    volume3d_image_nifti(*, user, job_id, request) -> (job, bytes)
    volume3d_labels_nifti(*, user, job_id, request) -> (job, bytes)

The image volume is the REDACTED pixels of each slice (what the viewer shows without a
restore: a burned-in name stays covered in 3D too), in the stored values with the DICOM
rescale carried as the NIfTI's scl_slope/scl_inter. Everything is decrypted in memory and
answered as bytes; nothing unencrypted is written to disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.http import Http404, HttpRequest
from django.shortcuts import get_object_or_404

from audit.models import Action
from audit.services import audit_record
from engine import errors
from engine.dicom.nifti import VolumeGeometry, nifti1_bytes, volume_geometry
from imaging.models import JobStatus, Scan, ScanFormat, SegmentationJob
from imaging.selectors.segmentation import segmentation_mask
from imaging.vault.redacted import scan_header, scan_redacted_pixels

SIDES = ("left", "right", "both")


@dataclass
class Volume3dView:
    """What the 3D page needs besides the two volumes."""

    job: SegmentationJob
    shape: tuple[int, int, int]  # (frames, rows, columns) of both volumes
    spacing_mm: tuple[float, float, float]  # (column, row, frame)
    oriented: bool  # from the patient geometry (False: spacing only, sides unknown)
    classes: list[dict[str, Any]] = field(default_factory=list)  # index, name, colour
    flagged: list[dict[str, Any]] | None = None  # None: no atrophy assessment
    hemisphere: dict[str, Any] | None = None  # axis, index, left ("low" | "high")


def _job(user: Any, job_id: int) -> SegmentationJob:
    job = get_object_or_404(
        SegmentationJob.objects.visible_to(user).select_related("model", "scan"), pk=job_id
    )
    if job.status != JobStatus.COMPLETED:
        raise errors.segmentation_not_ready()
    if int((job.results or {}).get("frames") or 1) < 2:
        raise errors.not_a_volume()
    return job


def _members(user: Any, job: SegmentationJob) -> list[Scan]:
    """The scans whose frames make the volume, in the job's order (a series run: its slices;
    else the one multi-frame scan). A slice the user can no longer see, or gone: 404."""
    ids = (job.results or {}).get("series_scans") or [job.scan_id]
    found = Scan.objects.visible_to(user).in_bulk(ids)
    if len(found) != len(ids):
        raise Http404("A slice of this volume is no longer available.")
    return [found[i] for i in ids]


def _headers(members: list[Scan]) -> list[Any]:
    """The de-identified headers (geometry is kept by de-identification); none for PNG/JPEG."""
    return [scan_header(m) for m in members if m.format == ScanFormat.DICOM]


def _geometry(job: SegmentationJob, headers: list[Any]) -> VolumeGeometry:
    frames = int(job.results["frames"])
    if headers:
        return volume_geometry(headers, frames)
    from pydicom import Dataset

    spacing = (job.results or {}).get("spacing_mm") or [1.0, 1.0, 1.0]
    stand_in = Dataset()
    stand_in.PixelSpacing = [spacing[-2], spacing[-1]]
    stand_in.SliceThickness = spacing[0] if len(spacing) > 2 else 1.0
    return volume_geometry([stand_in], frames)


def _audit(user: Any, job: SegmentationJob, request: HttpRequest | None, view: str) -> None:
    audit_record(
        action=Action.SEGMENTATION_VIEWED,
        actor=user,
        target=job,
        request=request,
        details={"view": view, "scan": job.scan_id},
    )


def _flagged(results: dict[str, Any], classes: dict[str, str]) -> list[dict[str, Any]] | None:
    """results["atrophy"]["flagged"] (the atrophy check's), each entry checked: a class of
    this model, a side in SIDES (default both). None when no check has run."""
    atrophy = results.get("atrophy")
    if not isinstance(atrophy, dict) or "flagged" not in atrophy:
        return None
    rows = []
    for entry in atrophy.get("flagged") or []:
        if not isinstance(entry, dict):
            continue
        try:
            label = int(entry.get("label", ""))
        except (TypeError, ValueError):
            continue
        if str(label) not in classes or label == 0:
            continue
        side = entry.get("side") if entry.get("side") in SIDES else "both"
        rows.append(
            {
                "label": label,
                "name": str(entry.get("name") or classes[str(label)]).replace("_", " "),
                "side": side,
                "measure": str(entry.get("measure") or "").replace("_", " "),
                "z": entry.get("z"),
            }
        )
    return rows


def _hemisphere(results: dict[str, Any], geometry: VolumeGeometry) -> dict[str, Any] | None:
    """results["volumetrics"]["hemisphere_split"] with which half is the patient's left (the
    split's own "left" when it states one, else from the geometry); None without a split, or
    when neither can say which side is which."""
    split = (results.get("volumetrics") or {}).get("hemisphere_split")
    if not isinstance(split, dict):
        return None
    try:
        axis, index = int(split["axis"]), float(split["index"])
    except (KeyError, TypeError, ValueError):
        return None
    if axis not in (0, 1, 2):
        return None
    if split.get("left") in ("low", "high"):
        return {"axis": axis, "index": index, "left": split["left"]}
    left_low = geometry.left_is_low(axis)
    if left_low is None:
        return None
    return {"axis": axis, "index": index, "left": "low" if left_low else "high"}


def volume3d_view(*, user: Any, job_id: int, request: HttpRequest | None = None) -> Volume3dView:
    job = _job(user, job_id)
    members = _members(user, job)
    geometry = _geometry(job, _headers(members))
    results = job.results or {}
    classes = {str(k): str(v) for k, v in (results.get("classes") or {}).items()}
    colours = results.get("colours") or {}
    rows = [
        {"index": int(k), "name": v.replace("_", " "), "colour": colours.get(k, "#888888")}
        for k, v in sorted(classes.items(), key=lambda item: int(item[0]))
        if k != "0"
    ]
    shape = (int(results["frames"]), *(int(n) for n in results.get("shape") or (0, 0)))
    _audit(user, job, request, "3d")
    return Volume3dView(
        job=job,
        shape=shape,  # type: ignore[arg-type]
        spacing_mm=geometry.spacing,
        oriented=geometry.oriented,
        classes=rows,
        flagged=_flagged(results, classes),
        hemisphere=_hemisphere(results, geometry),
    )


def _grey(pixels: np.ndarray) -> np.ndarray:
    """Colour frames by luminance (Rec. 601, as the segmentation saw them); grey as stored."""
    if pixels.ndim == 4:
        rgb = pixels[..., :3].astype(np.float32)
        return np.asarray(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
    return pixels


def volume3d_image_nifti(
    *, user: Any, job_id: int, request: HttpRequest | None = None
) -> tuple[SegmentationJob, bytes]:
    """The volume the job segmented (redacted pixels) as NIfTI-1 bytes."""
    job = _job(user, job_id)
    members = _members(user, job)
    headers = _headers(members)
    slices = [scan_redacted_pixels(m) for m in members]  # each scan's key opened once
    volume = _grey(np.concatenate(slices))
    geometry = _geometry(job, headers)
    slope, intercept = 1.0, 0.0
    if headers:
        rescale = {
            (float(h.get("RescaleSlope", 1) or 1), float(h.get("RescaleIntercept", 0) or 0))
            for h in headers
        }
        if len(rescale) == 1:
            slope, intercept = rescale.pop()
        else:  # slices scaled differently: real values, one scale
            volume = np.concatenate(
                [
                    pixels.astype(np.float32) * float(h.get("RescaleSlope", 1) or 1)
                    + float(h.get("RescaleIntercept", 0) or 0)
                    for pixels, h in zip(slices, headers, strict=True)
                ]
            )
    if volume.dtype == np.float64:
        volume = volume.astype(np.float32)
    content = nifti1_bytes(
        volume, geometry.affine, slope=slope, intercept=intercept, description="medimg volume"
    )
    _audit(user, job, request, "3d_volume")
    return job, content


def volume3d_labels_nifti(
    *, user: Any, job_id: int, request: HttpRequest | None = None
) -> tuple[SegmentationJob, bytes]:
    """The job's label mask (uint8 class indices) as NIfTI-1 bytes, the image's geometry."""
    job = _job(user, job_id)
    members = _members(user, job)
    geometry = _geometry(job, _headers(members))
    mask = segmentation_mask(job=job)
    if mask.ndim == 2:
        mask = mask[None]
    content = nifti1_bytes(mask.astype(np.uint8), geometry.affine, description="medimg labels")
    _audit(user, job, request, "3d_labels")
    return job, content
