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
Brain volumetrics: a volume (several slices with spacing) segmented by a model whose classes
are CSF, grey and white matter also gets results["volumetrics"] (engine.brain.volumetrics:
tissue volumes, ICV, BPF, asymmetry, the mid-sagittal "hemisphere_split") and
results["atrophy"] (engine.brain.normative: z-scores, grade, "flagged"), with age and sex read
here from the original header (`brain_measures`); only the age band and the sex are stored.

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
from engine.brain.normative import age_band, age_years_from_header, atrophy_assessment, sex_code
from engine.brain.volumetrics import (
    brain_volumetrics,
    is_brain_tissue_model,
    lr_axis_from_orientation,
    tissue_indices,
)
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


_REQUEST_KEYS = ("requested_pixel_spacing_mm", "series", "requested_age_band", "requested_sex")


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


def _left_right(headers: Sequence[Any]) -> tuple[int, bool]:
    """The label volume's left-right axis and whether the left is at its high indices, from
    the first slice's orientation; for a sagittal stack, from the slice positions' order."""
    first = headers[0]
    source = first
    shared = first.get("SharedFunctionalGroupsSequence")
    if "ImageOrientationPatient" not in first and shared:
        # An enhanced multi-frame: the orientation sits in the Plane Orientation macro.
        planes = shared[0].get("PlaneOrientationSequence")
        source = planes[0] if planes else first
    try:
        orientation = [float(v) for v in source.ImageOrientationPatient]
    except (AttributeError, TypeError, ValueError):
        return lr_axis_from_orientation(None)
    axis, left_is_high = lr_axis_from_orientation(orientation)
    if axis == 0 and len(headers) > 1:
        try:
            first = float(headers[0].ImagePositionPatient[0])
            last = float(headers[-1].ImagePositionPatient[0])
        except (AttributeError, TypeError, ValueError, IndexError):
            return axis, left_is_high
        left_is_high = last > first  # LPS: +x is the patient's left
    return axis, left_is_high


def brain_measures(
    *,
    labels: np.ndarray,
    volume: np.ndarray,
    spacing_mm: Sequence[float],
    classes: dict[int, str],
    headers: Sequence[Any],
    requested: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Volumetrics and the atrophy assessment of a brain-tissue label volume.

    Age and sex are read here, in the worker, from the ORIGINAL header (Patient's Age, or
    Birth Date and Study Date; Patient's Sex), which de-identification removed from every
    stored copy; else what the doctor gave with the request. Only the decade band and the sex
    leave this function: no age in years, no date."""
    axis, left_is_high = _left_right(headers)
    measured = brain_volumetrics(
        labels, spacing_mm, classes, lr_axis=axis, left_is_high=left_is_high, image=volume
    )
    header = headers[0] if headers else None
    years = None
    if header is not None:
        years = age_years_from_header(
            header.get("PatientAge"),
            header.get("PatientBirthDate"),
            header.get("StudyDate") or header.get("SeriesDate") or header.get("AcquisitionDate"),
        )
    band, age_source = (age_band(years), "dicom") if years is not None else (None, "")
    if band is None and requested.get("requested_age_band"):
        band, age_source = str(requested["requested_age_band"]), "request"
    sex = sex_code(header.get("PatientSex")) if header is not None else None
    sex_source = "dicom"
    if sex is None and requested.get("requested_sex"):
        sex, sex_source = sex_code(requested["requested_sex"]), "request"
    assessment = atrophy_assessment(
        measured.to_dict(),
        tissue_indices(classes),
        band=band,
        sex=sex,
        age_source=age_source or "default",
        sex_source=sex_source,
    )
    if years is not None and years < 20:
        assessment["warnings"].append(
            "Under 20: the youngest reference decade (20-29) is used; it does not cover "
            "children and adolescents."
        )
    return measured.to_dict(), assessment


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
        headers: list[Any] = []
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
        brain: dict[str, Any] = {}
        if (
            labels.shape[0] > 1
            and slice_spacing
            and pixel_spacing
            and is_brain_tissue_model(classes)
        ):
            t0 = time.perf_counter()
            try:
                volumetrics, atrophy = brain_measures(
                    labels=labels,
                    volume=volume if volume.ndim == 3 else volume[None],
                    spacing_mm=(float(slice_spacing), *(float(v) for v in pixel_spacing)),
                    classes=classes,
                    headers=headers,
                    requested=job.results,
                )
            except ValueError as refused:
                # No intracranial voxel (a series of air, say): the segmentation stands.
                notes.append(f"no brain volumetrics: {refused}")
            else:
                brain = {"volumetrics": volumetrics, "atrophy": atrophy}
                notes.extend(volumetrics["notes"])
            timings["volumetrics_ms"] = (time.perf_counter() - t0) * 1000.0
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
            **brain,
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
                **({"atrophy_grade": results["atrophy"]["grade"]} if "atrophy" in results else {}),
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
