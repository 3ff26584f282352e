"""Classification runs, the worker's side (imaging.tasks.run_classification calls this).

    classification_run(*, classification_id) -> Classification | None
    classifier_for(model) -> engine.classification.Classifier   # cached per file digest

A run reads the scan's DE-IDENTIFIED, REDACTED pixels (imaging.vault.redacted), never the
original: a plug-in is third-party code and must not see burned-in identity. It takes the
requested frame, preprocesses it as the classifier's config says, runs onnxruntime, and
stores the probability per class, the prediction, its confidence, the threshold, the
model's name, version and file SHA-256, and the timings. Audited as
classification_completed or classification_failed.
"""

from __future__ import annotations

import functools
import logging
import time

import numpy as np
from django.db import transaction
from django.utils import timezone

from audit.models import Action, Outcome
from audit.services import audit_record
from engine.classification import Classifier, ClassifierConfig, ConfigError
from imaging.models import Classification, ClassifierModel, JobStatus
from imaging.vault.redacted import scan_redacted_pixels

logger = logging.getLogger(__name__)


def classifier_for(model: ClassifierModel) -> Classifier:
    return _classifier(model.pk, model.weights_sha256)


@functools.lru_cache(maxsize=8)
def _classifier(model_id: int, sha256: str) -> Classifier:
    model = ClassifierModel.objects.get(pk=model_id)
    with model.onnx_file.open("rb") as handle:
        data = handle.read()
    return Classifier.from_bytes(ClassifierConfig.from_dict(model.config), data)


def _claim(classification_id: int) -> Classification | None:
    with transaction.atomic():
        row = (
            Classification.objects.select_for_update()
            .select_related("scan", "classifier")
            .filter(pk=classification_id)
            .first()
        )
        if row is None or row.status in (JobStatus.COMPLETED, JobStatus.FAILED):
            return None
        row.status = JobStatus.RUNNING
        row.save(update_fields=["status"])
        return row


def frame_of(pixels: np.ndarray, frame: int, frames: int) -> np.ndarray:
    """One 2D frame, (H, W) or (H, W, 3), of a stored array of `frames` frames: (H, W),
    (H, W, 3), (F, H, W) or (F, H, W, 3). IndexError when the frame is not there."""
    if frame < 0 or frame >= max(frames, 1):
        raise IndexError(frame)
    if frames <= 1:
        return (
            pixels[0] if pixels.ndim == 4 or (pixels.ndim == 3 and pixels.shape[0] == 1) else pixels
        )
    return np.asarray(pixels[frame])


def classification_run(*, classification_id: int) -> Classification | None:
    row = _claim(classification_id)
    if row is None:
        return None
    started = time.perf_counter()
    model = row.classifier
    try:
        classifier = classifier_for(model)
        pixels = scan_redacted_pixels(row.scan)
        try:
            image = frame_of(pixels, row.frame, int(row.scan.frames or 1))
        except IndexError:
            return _fail(row, "no_such_frame")
        result = classifier.classify(image)
    except ConfigError:
        logger.exception("classifier %s cannot run", model.pk)
        return _fail(row, "classifier_broken")
    except Exception:
        logger.exception("classification %s failed", row.pk)
        return _fail(row, "processing_error")
    with transaction.atomic():
        row.status = JobStatus.COMPLETED
        row.probabilities = result.probabilities
        row.prediction = result.prediction
        row.confidence = result.confidence
        row.threshold = classifier.config.threshold if len(result.probabilities) == 2 else None
        row.model_name = model.name
        row.model_version = model.version
        row.model_sha256 = model.weights_sha256
        row.inference_ms = round(result.ms, 2)
        row.runtime_ms = round((time.perf_counter() - started) * 1000, 2)
        row.finished_at = timezone.now()
        row.save()
        audit_record(
            action=Action.CLASSIFICATION_COMPLETED,
            actor=row.requested_by,
            target=row,
            details={
                "scan": row.scan_id,
                "model": model.name,
                "version": model.version,
                "sha256": model.weights_sha256,
                "prediction": row.prediction,
            },
        )
    return row


def _fail(row: Classification, reason: str) -> Classification:
    with transaction.atomic():
        row.status = JobStatus.FAILED
        row.failure_reason = reason
        row.model_name = row.classifier.name
        row.model_version = row.classifier.version
        row.model_sha256 = row.classifier.weights_sha256
        row.finished_at = timezone.now()
        row.save()
        audit_record(
            action=Action.CLASSIFICATION_FAILED,
            actor=row.requested_by,
            target=row,
            outcome=Outcome.FAILURE,
            details={"scan": row.scan_id, "model": row.classifier.name, "error": reason},
        )
    return row
