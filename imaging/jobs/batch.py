"""What a redaction run takes from the settings, once, for processing and the batch commands.

    pipeline_options(image) -> dict            # the settings' keyword arguments of pipeline_run
    data_regions(image) -> list[box]           # an ultrasound's data regions (DICOM only)
    fixed_boxes(image) -> list[box]            # the matching scanner rules' boxes (DICOM only)
    image_scanner(image) -> {"manufacturer", "model"}   # for the scan's metrics
    batch_detector(weights=None, backend=None) # IMAGING_DETECTOR, or YOLO with other weights
    file_decode(name, data) -> DecodedImage    # validate_upload as the commands read files
    write_atomic(path, data)                   # temp file, fsync, rename
    failure_record(label, code, message, started) -> dict   # a command's error line

A scan's processing (imaging.jobs.processing) and `manage.py deidentify` run the pipeline with
the same `pipeline_options`, so a file de-identified in a batch is redacted as its upload would
be (IMAGING_VERIFY_SCOPE, the cine settings, an ultrasound's data regions and the scanner
rules included);
`manage.py redact` fills what the same detector finds with the same classes and padding.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError

from engine.detection import pipeline
from engine.dicom.io import read_dataset
from engine.dicom.ultrasound import ultrasound_regions
from engine.intake.validation import DecodedImage, validate_upload
from imaging.jobs import detector as configured
from imaging.selectors.scanner_rules import rule_boxes, scanner_of


class FileFailed(Exception):
    """One input of a batch could not be handled; `code` goes into its JSON line."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _header(image: Any) -> Any:
    return read_dataset(image.clean_bytes, stop_before_pixels=True)


def data_regions(image: Any, header: Any = None) -> list[tuple[int, int, int, int]]:
    """An ultrasound's data regions (engine.dicom.ultrasound): ink outside them is annotation."""
    if image.kind != "dicom":
        return []
    return [region.box for region in ultrasound_regions(header or _header(image))]


def image_scanner(image: Any, header: Any = None) -> dict[str, str]:
    """{"manufacturer", "model"} of a DICOM image's header; empty for PNG and JPEG. Kept in
    the scan's metrics, where the admin's rule suggestions find it."""
    if image.kind != "dicom":
        return {}
    manufacturer, model = scanner_of(header or _header(image))
    return {"manufacturer": manufacturer, "model": model} if manufacturer else {}


def fixed_boxes(image: Any, header: Any = None) -> list[tuple[int, int, int, int]]:
    """The boxes of the scanner rules (imaging.models.ScannerRule) matching this image."""
    scanner = image_scanner(image, header)
    if not scanner:
        return []
    return rule_boxes(
        manufacturer=scanner["manufacturer"],
        model_name=scanner["model"],
        width=image.width,
        height=image.height,
    )


def pipeline_options(image: Any) -> dict[str, Any]:
    """The keyword arguments of `pipeline.pipeline_run` that the settings (and the scanner
    rules) decide."""
    header = _header(image) if image.kind == "dicom" else None
    return {
        "classes": settings.IMAGING_REDACT_CLASSES,
        "padding": settings.IMAGING_BOX_PADDING,
        "verify_rounds": settings.IMAGING_VERIFY_ROUNDS,
        "verify_scope": settings.IMAGING_VERIFY_SCOPE,
        "reuse_static": settings.IMAGING_CINE_REUSE,
        "change_threshold": settings.IMAGING_CINE_CHANGE_THRESHOLD,
        "data_regions": data_regions(image, header),
        "fixed_boxes": fixed_boxes(image, header),
        **_opinion(header),
    }


def _opinion(header: Any = None) -> dict[str, Any]:
    """The second opinion's arguments; for a DICOM header with identifying values (and
    IMAGING_SECOND_OPINION_MATCH), the reader and the matcher of those values, which live in
    this process's memory only."""
    opinion = configured.second_opinion()
    if opinion is None:
        return {}
    search, scope = opinion
    options: dict[str, Any] = {"second_opinion": search, "second_opinion_scope": scope}
    if header is not None and settings.IMAGING_SECOND_OPINION_MATCH:
        from engine.detection.ocr import IdentifierMatcher, header_identifiers

        matcher = IdentifierMatcher(header_identifiers(header))
        if matcher:
            options["read_text"] = configured.text_reader()
            options["match_identifiers"] = matcher.match
    return options


def batch_detector(weights: str | None = None, backend: str | None = None) -> pipeline.Detector:
    """The configured detector (IMAGING_DETECTOR), or with --weights/--backend the YOLO
    detector on those weights. CommandError when it could not run a single file."""
    detector = configured.default_detector()
    if weights is None and backend is None:
        if detector is configured.detect and not configured.weights_path().is_file():
            # Every file would fail the same way: say it once, before starting.
            raise CommandError(
                f"detector weights not found: {configured.weights_path()} "
                "(train the detector, or pass --weights and --backend)"
            )
        return detector
    if detector is not configured.detect:
        raise CommandError(
            "--weights/--backend apply to the YOLO detector, but IMAGING_DETECTOR is "
            f"{settings.IMAGING_DETECTOR}"
        )
    if weights is not None and not Path(weights).is_file():
        raise CommandError(f"detector weights not found: {weights}")
    return functools.partial(configured.detect, weights=weights, backend=backend)


def file_decode(name: str, data: bytes) -> DecodedImage:
    """A file read whole by a command: no upload size limit, but UPLOAD_MAX_PIXELS applies."""
    return validate_upload(
        name=name,
        data=data,
        max_bytes=max(len(data), settings.UPLOAD_MAX_BYTES),
        max_pixels=settings.UPLOAD_MAX_PIXELS,
    )


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            os.fchmod(out.fileno(), 0o644)  # mkstemp makes 0600; outputs are for sharing.
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def failure_record(label: str, code: str, message: str, started: float) -> dict[str, Any]:
    """A command's JSON line for an input that failed (`started`: its perf_counter start)."""
    return {
        "input": label,
        "error": {"code": code, "message": message},
        "ms": round((time.perf_counter() - started) * 1000.0, 1),
    }
