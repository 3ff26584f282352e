"""Segmentation, from the request side: the models a doctor may run and a doctor's request.

    segmentation_models_register() -> list[SegmentationModel]   # model/segmentation/<name>/
    segmentation_model_validate(config, weights=None)            # ValueError if not a model
    segmentation_request(*, scan, model, actor, request=None, pixel_spacing_mm=None,
                         series=False, patient_age_years=None, patient_sex=None)
                                                                 # -> job, queued after commit

Models: a directory under SEGMENTATION_MODELS_DIR (default `model/segmentation/`) holding
`config.json` and `model.onnx` (preferred: onnxruntime), `weights.pt` (a state_dict) or
`model.pt` (TorchScript) is registered as a SegmentationModel on first use; an admin can add
one in Django admin by uploading ONNX or TorchScript weights with the config JSON.

The run itself (what it reads, writes and measures) is imaging.jobs.segmentation, behind the
imaging.tasks.run_segmentation task.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils.text import slugify

from audit.models import Action
from audit.services import audit_record
from engine import errors
from engine.brain.normative import age_band, sex_code
from engine.segmentation.model import ModelConfig
from imaging.jobs.segmentation import MODEL_FILES, series_members, weights_directory
from imaging.models import Scan, ScanStatus, SegmentationJob, SegmentationModel
from imaging.services.refusals import audited_refusal
from imaging.tasks import run_segmentation

logger = logging.getLogger(__name__)


def models_dir() -> Path:
    return Path(settings.SEGMENTATION_MODELS_DIR)


def _model_directories() -> list[Path]:
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(
        d
        for d in root.iterdir()
        if d.is_dir()
        and (d / "config.json").is_file()
        and any((d / f).is_file() for f in MODEL_FILES)
    )


def _stored_path(directory: Path) -> str:
    """Relative to the project when inside it, so a checkout can move."""
    try:
        return str(directory.resolve().relative_to(Path(settings.BASE_DIR).resolve()))
    except ValueError:
        return str(directory.resolve())


def segmentation_model_validate(config: dict[str, Any], weights: bytes | None = None) -> None:
    """ValueError unless `config` is a model config (and `weights` ONNX or TorchScript)."""
    try:
        ModelConfig.from_dict(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a segmentation model config: {exc}") from None
    if weights is not None and _weights_kind(weights) is None:
        raise ValueError("weights must be an ONNX model or a TorchScript archive")


def _weights_kind(data: bytes) -> str | None:
    if data[:4] == b"PK\x03\x04":  # TorchScript archives are zip files
        return "torchscript"
    try:
        import onnx  # third-party and heavy: only an admin's upload of weights needs it

        onnx.load_model_from_string(data)
    except Exception:
        return None
    return "onnx"


def segmentation_models_register() -> list[SegmentationModel]:
    """Register every model directory on disk that has no row yet; refresh the config of rows
    that point at a directory whose config changed (a retrained model). Admin rows and the
    `enabled` flag are left alone."""
    registered = []
    for directory in _model_directories():
        config = json.loads((directory / "config.json").read_text())
        try:
            segmentation_model_validate(config)
        except ValueError:
            logger.warning("skipping %s: config.json is not a model config", directory)
            continue
        name = slugify(directory.name)[:64]
        title = str(config.get("title") or config.get("name") or name)[:128]
        model, created = SegmentationModel.objects.get_or_create(
            name=name,
            defaults={"title": title, "weights_path": _stored_path(directory), "config": config},
        )
        same_directory = (
            not created
            and model.weights_path
            and weights_directory(model.weights_path).resolve() == directory.resolve()
        )
        if same_directory and model.config != config:
            model.config = config
            model.save(update_fields=["config"])
        registered.append(model)
    return registered


# A refused request, audited before it is raised (imaging.services.refusals).
_refuse = functools.partial(audited_refusal, action=Action.SEGMENTATION_REQUESTED)


def segmentation_request(
    *,
    scan: Scan,
    model: SegmentationModel,
    actor: Any,
    request: HttpRequest | None = None,
    pixel_spacing_mm: Sequence[float] | None = None,
    series: bool = False,
    patient_age_years: float | None = None,
    patient_sex: str | None = None,
) -> SegmentationJob:
    """Queue a run of `model` on `scan` (after commit), or with `series` on every slice of
    its DICOM series as one volume. Caller has checked that `actor` is a doctor who may see
    the scan. Audited, refusals too.

    `patient_age_years` and `patient_sex` serve a brain-tissue model's atrophy z-scores when
    the DICOM header lacks them (the header wins); only the decade band and the sex are kept
    on the job, never the age itself."""
    details: dict[str, Any] = {"model": model.name}
    if scan.status != ScanStatus.COMPLETED:
        raise _refuse(
            errors.scan_not_ready(),
            scan=scan,
            actor=actor,
            request=request,
            details=details,
        )
    if not model.enabled:
        raise _refuse(
            errors.model_disabled(),
            scan=scan,
            actor=actor,
            request=request,
            details=details,
        )
    spacing = None
    if pixel_spacing_mm is not None:
        spacing = [float(v) for v in pixel_spacing_mm]
        if len(spacing) != 2 or not all(0 < v < 100 for v in spacing):
            raise _refuse(
                errors.invalid_spacing(),
                scan=scan,
                actor=actor,
                request=request,
                details=details,
            )
    requested: dict[str, Any] = {"requested_pixel_spacing_mm": spacing} if spacing else {}
    if patient_age_years is not None:
        if not 0 <= float(patient_age_years) <= 130:
            raise _refuse(
                errors.invalid_age(130),
                scan=scan,
                actor=actor,
                request=request,
                details=details,
            )
        requested["requested_age_band"] = age_band(float(patient_age_years))
    if patient_sex is not None and sex_code(patient_sex):
        requested["requested_sex"] = sex_code(patient_sex)
    if series:
        members = series_members(scan)
        if len(members) < 2:
            raise _refuse(
                errors.not_a_series(),
                scan=scan,
                actor=actor,
                request=request,
                details=details,
            )
        requested["series"] = [m.pk for m in members]
    with transaction.atomic():
        job = SegmentationJob.objects.create(
            scan=scan, model=model, requested_by=actor, results=requested
        )
        audit_record(
            action=Action.SEGMENTATION_REQUESTED,
            actor=actor,
            target=job,
            request=request,
            details={**details, "scan": scan.pk, "series": requested.get("series")},
        )
        # robust: a broker outage must not turn a committed request into a 500; the job stays
        # queued and can be requested again.
        transaction.on_commit(functools.partial(run_segmentation.delay, job_id=job.id), robust=True)
    return job
