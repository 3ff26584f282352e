"""The detector a worker runs, configured from Django settings.

    default_detector() -> Detector      # whatever settings.IMAGING_DETECTOR names
    detect(frame, **overrides)          # engine.detection.detector.detect with IMAGING_DETECTOR_*
    weights_path(backend=None) -> Path  # IMAGING_DETECTOR_WEIGHTS, else the shipped weights
    setting(name)                       # IMAGING_DETECTOR_<NAME>, else the engine's default
    detector_identity(detector=None)    # {"name", "version", "sha256", "weights"} of the model

The engine's detector (engine.detection.detector) takes every parameter as an argument and
reads no settings; this module is where settings meet it. `settings.IMAGING_DETECTOR` is a
dotted path (tests name small detectors of their own); the default is `detect` here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.utils.module_loading import import_string

from engine.detection import detector as detection
from engine.detection.pipeline import Detector
from engine.model_identity import ModelIdentity, model_identity

_TUNING = ("confidence", "iou", "imgsz", "tile_above", "tiles")


def setting(name: str) -> Any:
    """IMAGING_DETECTOR_<NAME> from Django settings, else the engine's built-in default."""
    return getattr(settings, f"IMAGING_DETECTOR_{name.upper()}", detection.DEFAULTS[name])


def weights_path(backend: str | None = None) -> Path:
    """IMAGING_DETECTOR_WEIGHTS when set, else the shipped weights for `backend`
    (IMAGING_DETECTOR_BACKEND when None)."""
    configured = setting("weights")
    if configured:
        return Path(configured)
    return detection.weights_path(backend or setting("backend"))


def detect(
    frame: np.ndarray,
    *,
    backend: str | None = None,
    weights: Path | str | None = None,
    **overrides: Any,
) -> list[detection.Detection]:
    """The YOLO detector with the settings' parameters; any of them may be overridden
    (`backend`, `weights`, `confidence`, `iou`, `imgsz`, `tile_above`, `tiles`, `padding`)."""
    backend = backend or setting("backend")
    params = {name: setting(name) for name in _TUNING} | overrides
    return detection.detect(
        frame,
        backend=backend,
        weights=Path(weights) if weights else weights_path(backend),
        **params,
    )


def default_detector() -> Detector:
    """The detector settings.IMAGING_DETECTOR names. The engine's own `detect` knows no
    settings: a configuration naming it (the default before the engine was made pure) gets
    `detect` above, the same detector with IMAGING_DETECTOR_* applied."""
    detector: Detector = import_string(settings.IMAGING_DETECTOR)
    return detect if detector is detection.detect else detector


def detector_identity(detector: Detector | None = None) -> ModelIdentity:
    """The model behind `detector` (None: the configured one), for scan.metrics["model"].

    The YOLO detector: the weights file it loads (ONNX or torch, as IMAGING_DETECTOR_BACKEND
    says), its directory's VERSION and the file's SHA-256. Any other detector (the small ones
    tests name in IMAGING_DETECTOR) has no weights file: its dotted name, no version, sha256 ""
    rather than an invented digest."""
    detector = detector or default_detector()
    if detector is detect or detector is detection.detect:
        path = weights_path()
        return model_identity(path, name=f"{path.parent.name}/{path.name}")
    module = getattr(detector, "__module__", None) or type(detector).__module__
    qualname = getattr(detector, "__qualname__", None) or type(detector).__qualname__
    return {"name": f"{module}.{qualname}", "version": "", "sha256": "", "weights": ""}


_finders: dict[int, Any] = {}
_readers: dict[int, Any] = {}


def second_opinion() -> tuple[Any, str] | None:
    """(search, scope) for `pipeline_run(second_opinion=..., second_opinion_scope=...)` as
    IMAGING_SECOND_OPINION says ("off", "bands", "margins" or "full"): the PP-OCR text
    detector of engine.detection.ocr, loaded once per process. None when off. When the OCR
    weights are missing (the rapidocr package not installed) the setting is an error, not a
    silent skip: OcrUnavailable propagates."""
    scope = settings.IMAGING_SECOND_OPINION
    if scope == "off":
        return None
    threads = int(settings.IMAGING_SECOND_OPINION_THREADS)
    finder = _finders.get(threads)
    if finder is None:
        from engine.detection.ocr import TextFinder

        finder = _finders[threads] = TextFinder(threads=threads)
    return finder.search, scope


def text_reader() -> Any:
    """The PP-OCR text recogniser of engine.detection.ocr (`TextReader.read`), loaded once
    per process, with IMAGING_SECOND_OPINION_THREADS threads."""
    threads = int(settings.IMAGING_SECOND_OPINION_THREADS)
    reader = _readers.get(threads)
    if reader is None:
        from engine.detection.ocr import TextReader

        reader = _readers[threads] = TextReader(threads=threads)
    return reader.read
