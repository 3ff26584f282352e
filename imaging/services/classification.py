"""Classifier plug-ins, from the request side: register and validate a classifier, and a
doctor's request to run one on a scan.

    classifier_validate(config, onnx_bytes) -> ClassifierConfig    # ValueError says why not
    classifier_register(directory) -> (ClassifierModel, created)   # model.onnx, config.json,
                                                                   # MODEL_CARD.md
    classification_request(*, scan, classifier, actor, request=None, frame=0) -> Classification

The run (what it reads and stores) is imaging.jobs.classification behind the
imaging.tasks.run_classification task. Results are research use only.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from django.core.files.base import ContentFile
from django.db import transaction
from django.http import HttpRequest

from audit.models import Action
from audit.services import audit_record
from engine import errors
from engine.classification import Classifier, ClassifierConfig, ConfigError, sha256_hex
from imaging.models import Classification, ClassifierModel, Scan, ScanStatus
from imaging.services.refusals import audited_refusal
from imaging.tasks import run_classification

RESEARCH_LABEL = "Research use only — not for diagnosis"
MAX_ONNX_BYTES = 200 * 1024 * 1024


def classifier_validate(config: Any, data: bytes) -> ClassifierConfig:
    """The parsed config when `data` is an ONNX model that onnxruntime loads and whose input
    and output fit the config; ConfigError (a ValueError) with a plain reason otherwise."""
    parsed = ClassifierConfig.from_dict(config)
    if not data:
        raise ConfigError("The ONNX file is empty.")
    if len(data) > MAX_ONNX_BYTES:
        raise ConfigError(f"The ONNX file is over {MAX_ONNX_BYTES // (1024 * 1024)} MB.")
    Classifier.from_bytes(parsed, data)
    return parsed


def classifier_register(directory: Path) -> tuple[ClassifierModel, bool]:
    """Register the classifier in `directory` (model.onnx, config.json with "name" and
    "version", MODEL_CARD.md optional). The same name, version and file: the existing row.
    The same name and version with another file: ConfigError (bump the version)."""
    directory = Path(directory)
    onnx_path, config_path = directory / "model.onnx", directory / "config.json"
    for path in (onnx_path, config_path):
        if not path.is_file():
            raise ConfigError(f"{path} is missing.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{config_path} is not JSON: {exc}") from None
    data = onnx_path.read_bytes()
    parsed = classifier_validate(config, data)
    name, version = str(config.get("name") or ""), str(config.get("version") or "")
    if not name or not version:
        raise ConfigError(f'{config_path} needs "name" and "version".')
    card_path = directory / "MODEL_CARD.md"
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    sha = sha256_hex(data)
    existing = ClassifierModel.objects.filter(name=name, version=version).first()
    if existing is not None:
        if existing.weights_sha256 != sha:
            raise ConfigError(
                f"{name} {version} is registered with another file (sha256 "
                f"{existing.weights_sha256[:12]}...); give the new one a new version."
            )
        if existing.model_card != card:
            existing.model_card = card
            existing.save(update_fields=["model_card"])
        return existing, False
    model = ClassifierModel(
        name=name,
        version=version,
        config=config,
        intended_use=parsed.intended_use or name,
        model_card=card,
        weights_sha256=sha,
    )
    model.onnx_file.save(f"{name}-{version}.onnx", ContentFile(data), save=False)
    model.save()
    return model, True


# A refused request, audited before it is raised (imaging.services.refusals).
_refuse = functools.partial(audited_refusal, action=Action.CLASSIFICATION_REQUESTED)


def classification_request(
    *,
    scan: Scan,
    classifier: ClassifierModel,
    actor: Any,
    request: HttpRequest | None = None,
    frame: int = 0,
) -> Classification:
    """Queue a run of `classifier` on one frame of `scan` (after commit). The caller has
    checked that `actor` is a doctor who may see the scan. Audited, refusals too."""
    details: dict[str, Any] = {
        "classifier": classifier.pk,
        "model": classifier.name,
        "version": classifier.version,
    }
    if scan.status != ScanStatus.COMPLETED:
        raise _refuse(
            errors.scan_not_ready(), scan=scan, actor=actor, request=request, details=details
        )
    if not classifier.active:
        raise _refuse(
            errors.classifier_disabled(),
            scan=scan,
            actor=actor,
            request=request,
            details=details,
        )
    if not 0 <= frame < max(scan.frames, 1):
        raise _refuse(
            errors.invalid_frame(max(scan.frames, 1) - 1),
            scan=scan,
            actor=actor,
            request=request,
            details=details,
        )
    with transaction.atomic():
        row = Classification.objects.create(
            scan=scan, classifier=classifier, requested_by=actor, frame=frame
        )
        audit_record(
            action=Action.CLASSIFICATION_REQUESTED,
            actor=actor,
            target=row,
            request=request,
            details={**details, "scan": scan.pk, "frame": frame},
        )
        transaction.on_commit(
            functools.partial(run_classification.delay, classification_id=row.id), robust=True
        )
    return row
