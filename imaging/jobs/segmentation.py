"""Segmentation jobs, the worker's side: segment a scan (or its series), store and measure.
The request and the model registry are imaging.services.segmentation; the task that runs a job
is imaging.tasks.run_segmentation.

    segmentation_run(*, job_id) -> job | None                    # the task's body
    segmenter_for(model) -> engine.segmentation.model.Segmenter  # cached per process
    series_members(scan) -> list[Scan]                           # the slices of its series

A run works on the ORIGINAL pixels (decrypted here; the doctor asked, and a model must see
the anatomy the redaction covered), and everything it writes is encrypted under the scan's
data key with associated data binding the scan and the job (`crypto.segmentation_aad`):
- the label mask (uint8 class indices, one frame per scan frame), packed as .npy;
- one overlay PNG per frame: the REDACTED display image with the classes tinted and outlined
  and a legend, so an overlay never shows burned-in identity;
- for DICOM inputs whose frames a SEG can place (one frame, or patient geometry), a DICOM
  SEG (highdicom) referencing the de-identified source dataset.
Measurements: pixel counts per class; areas in mm^2 for a single image and volumes in mL for
frames with a slice spacing, from the DICOM header's spacing (or, for PNG and JPEG, a pixel
spacing the doctor gives with the request). With `series`, the completed single-frame slices
of the scan's DICOM series (same patient, same remapped Series UID, by instance number) are
segmented as one volume, the slice spacing taken from their positions; the job's outputs are
kept under the requested scan's key, and its SEG references every slice.

Ordering as in processing: files first (under a fresh name), then the job row in one
transaction; a failure deletes what was written and marks the job failed with a code.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from PIL import Image

from audit.models import Action, Outcome
from audit.services import audit_record
from engine.crypto import envelope as crypto
from engine.dicom.io import read_dataset
from engine.dicom.seg import seg_from_labels, seg_supported
from engine.model_identity import ModelIdentity, bytes_identity, model_identity, model_version
from engine.segmentation.model import ModelConfig, Segmenter
from engine.segmentation.outputs import class_colours, measure, overlay_png
from imaging.models import (
    JobStatus,
    Scan,
    ScanFormat,
    ScanStatus,
    SegmentationJob,
    SegmentationModel,
)
from imaging.vault import identity
from imaging.vault.derivatives import frame_read
from imaging.vault.keys import open_data_key, open_original
from imaging.vault.pixels import redacted_pixels_unseal, scan_restore_pixels
from imaging.vault.redacted import open_redacted_dataset
from imaging.vault.storage import storage_delete, storage_read, storage_write

logger = logging.getLogger(__name__)

MODEL_FILES = ("model.onnx", "weights.pt", "model.pt")  # in order of preference


def weights_directory(weights_path: str) -> Path:
    """A model's directory as stored on its row: relative to the project, or absolute."""
    path = Path(weights_path)
    return path if path.is_absolute() else Path(settings.BASE_DIR) / path


def _fingerprint(model: SegmentationModel) -> str:
    """Changes whenever the weights or config a Segmenter would be built from change."""
    parts = [str(model.pk), json.dumps(model.config, sort_keys=True), model.weights.name or ""]
    if model.weights_path:
        directory = weights_directory(model.weights_path)
        for name in MODEL_FILES:
            path = directory / name
            if path.is_file():
                stat = path.stat()
                parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def segmenter_for(model: SegmentationModel) -> Any:
    """The loaded model (cached per process while its files and config are unchanged)."""
    return _segmenter(model.pk, _fingerprint(model))


@functools.lru_cache(maxsize=4)
def _segmenter(model_id: int, fingerprint: str) -> Any:
    model = SegmentationModel.objects.get(pk=model_id)
    config = ModelConfig.from_dict(model.config)
    threads = settings.SEGMENTATION_THREADS
    if model.weights:
        with model.weights.open("rb") as handle:
            data = handle.read()
        return Segmenter.from_bytes(config, data, threads=threads)
    directory = weights_directory(model.weights_path)
    if (directory / "model.onnx").is_file():
        return Segmenter.load(directory, backend="onnx", threads=threads, config=config)
    if (directory / "weights.pt").is_file():
        return Segmenter.load(directory, backend="torch", threads=threads, config=config)
    if (directory / "model.pt").is_file():
        return Segmenter.from_bytes(config, (directory / "model.pt").read_bytes(), threads=threads)
    raise FileNotFoundError(f"no weights for segmentation model {model.name}")


def segmentation_model_identity(model: SegmentationModel) -> ModelIdentity:
    """Name, version and weights SHA-256 of what `segmenter_for(model)` loads (the same file:
    the uploaded weights, else the directory's first of MODEL_FILES). The version is the
    config's "version", else the directory's VERSION; "" when neither states one."""
    return _identity(model.pk, _fingerprint(model))


@functools.lru_cache(maxsize=8)
def _identity(model_id: int, fingerprint: str) -> ModelIdentity:
    model = SegmentationModel.objects.get(pk=model_id)
    stated = str((model.config or {}).get("version") or "")
    if model.weights:
        with model.weights.open("rb") as handle:
            data = handle.read()
        return bytes_identity(
            data, name=model.name, version=stated, weights=Path(model.weights.name or "").name
        )
    directory = weights_directory(model.weights_path)
    for name in MODEL_FILES:
        if (directory / name).is_file():
            return model_identity(
                directory / name, name=model.name, version=stated or model_version(directory)
            )
    raise FileNotFoundError(f"no weights for segmentation model {model.name}")


class SegmentationFailure(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _claim(job_id: int) -> SegmentationJob | None:
    with transaction.atomic():
        job = (
            SegmentationJob.objects.select_for_update()
            .select_related("scan", "model")
            .filter(pk=job_id)
            .first()
        )
        if job is None or job.status in (JobStatus.COMPLETED, JobStatus.FAILED):
            return None
        job.status = JobStatus.RUNNING
        job.save(update_fields=["status"])
        return job


def _grey(pixels: np.ndarray) -> np.ndarray:
    """(F, H, W[, C]) -> (F, H, W) float32; colour by luminance (Rec. 601), alpha dropped."""
    data = np.asarray(pixels)
    if data.ndim == 4:
        if data.shape[3] >= 3:
            rgb = data[..., :3].astype(np.float32)
            return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        data = data[..., 0]
    return data.astype(np.float32)


def _number(value: Any, index: int = 0) -> float | None:
    if value is None or value == "":
        return None
    try:
        if (
            isinstance(value, (list, tuple))
            or hasattr(value, "__getitem__")
            and not isinstance(value, str | bytes)
        ):
            value = value[index]
        number = float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return number if number > 0 else None


def dicom_spacing(header: Any) -> tuple[tuple[float, float] | None, float | None]:
    """((row, column) mm, slice spacing mm) from a DICOM header; None where not recorded.

    Pixel Spacing, or the Pixel Measures of an enhanced multi-frame header, or Imager Pixel
    Spacing (projection radiographs: the detector plane); slices: Spacing Between Slices,
    else Slice Thickness (contiguous slices)."""
    measures = None
    shared = header.get("SharedFunctionalGroupsSequence")
    if shared and "PixelMeasuresSequence" in shared[0]:
        measures = shared[0].PixelMeasuresSequence[0]
    pixel = None
    for source, keyword in (
        (header, "PixelSpacing"),
        (measures, "PixelSpacing"),
        (header, "ImagerPixelSpacing"),
    ):
        if source is not None and source.get(keyword) is not None:
            row, column = _number(source.get(keyword), 0), _number(source.get(keyword), 1)
            if row and column:
                pixel = (row, column)
                break
    slice_spacing = None
    for source in (header, measures):
        if source is None:
            continue
        slice_spacing = _number(source.get("SpacingBetweenSlices")) or _number(
            source.get("SliceThickness")
        )
        if slice_spacing:
            break
    return pixel, slice_spacing


def _decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)


def _deidentified_source(scan: Scan, original: bytes, data_key: bytes) -> bytes:
    """The de-identified DICOM the SEG references: the stored redacted dataset when it is
    de-identified, else the same de-identification the upload pipeline applies."""
    scan_ref = str(scan.uid)
    stored = open_redacted_dataset(scan, data_key=data_key)
    header = read_dataset(stored, stop_before_pixels=True)
    if str(header.get("PatientIdentityRemoved", "")).upper() == "YES":
        return stored
    redacted = redacted_pixels_unseal(
        storage_read(scan.redacted_pixels_path), data_key=data_key, scan_ref=scan_ref
    )
    outcome = identity.dicom_deidentify(
        original,
        redacted,
        pixels_clean=not scan.needs_review,
        regions=scan.regions.count(),
    )
    return outcome.data


def _colour_hex(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


_REQUEST_KEYS = ("requested_pixel_spacing_mm", "series")


def series_members(scan: Scan) -> list[Scan]:
    """The completed single-frame DICOM scans of `scan`'s series (same patient, same remapped
    Series UID), by instance number: the slices of one volume."""
    if scan.format != ScanFormat.DICOM or not scan.series_uid:
        return [scan]
    return list(
        Scan.objects.filter(
            patient_id=scan.patient_id,
            series_uid=scan.series_uid,
            status=ScanStatus.COMPLETED,
            frames=1,
            width=scan.width,
            height=scan.height,
        ).order_by("instance_number", "id")
    )


def _members(job: SegmentationJob) -> list[Scan]:
    """The scans a job segments: its scan, or its scan's series (fixed at request time)."""
    series = job.results.get("series")
    if not series:
        return [job.scan]
    found = Scan.objects.in_bulk(series)
    members = [found[i] for i in series if i in found]
    if len(members) != len(series):
        raise SegmentationFailure("series_changed")
    return members


def series_slice_spacing(headers: Sequence[Any]) -> float | None:
    """The median distance between consecutive slices along the slice normal, from Image
    Position and Orientation (Patient); None without that geometry."""
    try:
        orientation = np.array([float(v) for v in headers[0].ImageOrientationPatient])
        positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    except (AttributeError, TypeError, ValueError):
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    steps = np.abs(np.diff(positions @ normal))
    steps = steps[steps > 1e-6]
    return float(np.median(steps)) if len(steps) else None


def segmentation_run(*, job_id: int) -> SegmentationJob | None:
    """Segment, store and measure. Safe to run twice: a finished job is left alone."""
    started = time.perf_counter()
    job = _claim(job_id)
    if job is None:
        return None
    scan = job.scan
    scan_ref = str(scan.uid)
    written: list[str] = []
    timings: dict[str, float] = {}
    try:
        try:
            segmenter = segmenter_for(job.model)
            identity = segmentation_model_identity(job.model)
        except Exception:
            logger.exception("segmentation model %s failed to load", job.model.name)
            raise SegmentationFailure("model_unavailable") from None
        config = segmenter.config
        classes = dict(sorted(config.classes.items()))
        members = _members(job)
        try:
            data_key = open_data_key(scan)
            pixels = np.concatenate([scan_restore_pixels(scan=m) for m in members])
        except crypto.CryptoError:
            raise SegmentationFailure("decrypt_failed") from None
        volume = _grey(pixels)
        if config.network.spatial_dims == 3 and volume.shape[0] < 2:
            raise SegmentationFailure("needs_volume")
        t0 = time.perf_counter()
        result = segmenter.segment(volume if volume.shape[0] > 1 else volume[0])
        timings["segment_ms"] = (time.perf_counter() - t0) * 1000.0
        timings.update({f"{k}_ms": v for k, v in result.stages_ms.items()})
        labels = result.labels if result.labels.ndim == 3 else result.labels[None]

        base = f"scans/{scan.uid}/segmentation-{job.id}-{secrets.token_hex(4)}"

        def put(name: str, data: bytes, part: str, frame: int = 0) -> str:
            aad = crypto.segmentation_aad(scan_ref=scan_ref, job=job.id, part=part, frame=frame)
            path = storage_write(f"{base}/{name}", crypto.encrypt_blob(data_key, data, aad=aad))
            written.append(path)
            return path

        t0 = time.perf_counter()
        mask_path = put("mask.enc", crypto.pack_array(labels.astype(np.uint8)), "mask")
        # The redacted display frame behind each label frame, member by member.
        displays = [
            (m, j) for m in members for j in range(len((m.frame_paths or {}).get("redacted") or []))
        ]
        overlays = []
        for i in range(labels.shape[0]):
            member, member_frame = displays[i]
            try:
                # Checked against the member's digest: never another scan's picture.
                display = _decode_png(frame_read(member, "redacted", member_frame))
            except crypto.CryptoError:
                raise SegmentationFailure("decrypt_failed") from None
            png = overlay_png(display, labels[i], classes, title=job.model.title or job.model.name)
            overlays.append(put(f"overlay-{i:04d}.enc", png, "overlay", i))
        timings["overlay_ms"] = (time.perf_counter() - t0) * 1000.0

        pixel_spacing = job.results.get("requested_pixel_spacing_mm")
        slice_spacing = None
        notes: list[str] = []
        seg_path = ""
        if scan.format == ScanFormat.DICOM:
            originals = [open_original(m) for m in members]
            headers = [read_dataset(o, stop_before_pixels=True) for o in originals]
            dicom_pixel, slice_spacing = dicom_spacing(headers[0])
            if len(members) > 1:
                slice_spacing = series_slice_spacing(headers) or slice_spacing
            pixel_spacing = pixel_spacing or dicom_pixel
            t0 = time.perf_counter()
            placeable = all(seg_supported(h) for h in headers) and (
                len(headers) == 1 or all(h.get("FrameOfReferenceUID") for h in headers)
            )
            if placeable and len(classes) > 1:
                sources = [
                    _deidentified_source(m, o, open_data_key(m))
                    for m, o in zip(members, originals, strict=True)
                ]
                try:
                    seg = seg_from_labels(
                        sources[0] if len(sources) == 1 else sources,
                        labels if labels.shape[0] > 1 else labels[0],
                        classes,
                        model_name=job.model.name,
                        model_version=identity["version"] or identity["sha256"][:12],
                    )
                except ValueError as refused:
                    # highdicom refuses geometry it cannot place (an enhanced multi-frame
                    # whose frames carry no plane positions, say): the masks, overlays and
                    # measurements stand; only the SEG file is skipped, with the reason.
                    logger.info("no DICOM SEG for job %s: %s", job.id, refused)
                    notes.append(f"no DICOM SEG: {refused}")
                else:
                    seg_path = put("segmentation.dcm.enc", seg, "seg")
            else:
                notes.append("no DICOM SEG: several frames without patient geometry")
            timings["seg_ms"] = (time.perf_counter() - t0) * 1000.0
        measured = measure(
            labels if labels.shape[0] > 1 else labels[0],
            classes,
            pixel_spacing_mm=tuple(pixel_spacing) if pixel_spacing else None,
            slice_spacing_mm=slice_spacing,
        )
        colours = class_colours(classes)
        results = {
            **{k: v for k, v in job.results.items() if k in _REQUEST_KEYS},
            "classes": {str(k): v for k, v in classes.items()},
            "colours": {str(k): _colour_hex(c) for k, c in colours.items()},
            "frames": int(labels.shape[0]),
            "series_scans": [m.pk for m in members] if len(members) > 1 else None,
            "shape": [int(n) for n in labels.shape[1:]],
            **measured.to_dict(),
            "notes": measured.notes + notes,
            "backend": segmenter.backend,
            # Which model made this: name, version, weights SHA-256.
            "model": identity,
            "postprocessing": config.postprocessing.to_dict(),
            "timings_ms": {k: round(v, 1) for k, v in timings.items()},
            "overlay_paths": overlays,
        }
        runtime_ms = (time.perf_counter() - started) * 1000.0
        return _complete(job_id, mask_path, overlays[0], seg_path, results, runtime_ms, written)
    except SegmentationFailure as failure:
        storage_delete(*written)
        return segmentation_mark_failed(job_id=job_id, reason=failure.code)
    except Exception:
        logger.exception("segmentation job %s failed", job_id)
        storage_delete(*written)
        return segmentation_mark_failed(job_id=job_id, reason="processing_error")


def _complete(
    job_id: int,
    mask_path: str,
    overlay_path: str,
    seg_path: str,
    results: dict[str, Any],
    runtime_ms: float,
    written: list[str],
) -> SegmentationJob:
    with transaction.atomic():
        job = SegmentationJob.objects.select_for_update().get(pk=job_id)
        if job.status == JobStatus.COMPLETED:
            transaction.on_commit(functools.partial(storage_delete, *written))
            return job
        job.status = JobStatus.COMPLETED
        job.failure_reason = ""
        job.mask_path = mask_path
        job.overlay_path = overlay_path
        job.seg_path = seg_path
        job.results = results
        job.runtime_ms = runtime_ms
        job.finished_at = timezone.now()
        job.save(
            update_fields=[
                "status",
                "failure_reason",
                "mask_path",
                "overlay_path",
                "seg_path",
                "results",
                "runtime_ms",
                "finished_at",
            ]
        )
        audit_record(
            action=Action.SEGMENTATION_COMPLETED,
            target=job,
            details={
                "scan": job.scan_id,
                "model": job.model.name,
                "frames": results["frames"],
                "runtime_ms": round(runtime_ms, 1),
            },
        )
    return job


def segmentation_mark_failed(*, job_id: int, reason: str) -> SegmentationJob | None:
    with transaction.atomic():
        job = SegmentationJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status in (JobStatus.COMPLETED, JobStatus.FAILED):
            return job
        job.status = JobStatus.FAILED
        job.failure_reason = reason[:64]
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "failure_reason", "finished_at"])
        audit_record(
            action=Action.SEGMENTATION_FAILED,
            outcome=Outcome.FAILURE,
            target=job,
            details={"scan": job.scan_id, "reason": reason},
        )
        return job
