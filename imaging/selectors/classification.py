"""Reads for classifier plug-ins: the classifiers offered and a scan's results (audited).

Result queries start from `Classification.objects.visible_to(user)`; a foreign or missing one
is a 404. Reading results is audited as classification_viewed (they describe the patient).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from audit.models import Action
from audit.services import audit_record
from engine import errors
from imaging.models import Classification, ClassifierModel, Scan


def classifier_list() -> QuerySet[ClassifierModel]:
    """Active classifiers, by name, newest version first."""
    return ClassifierModel.objects.filter(active=True).order_by("name", "-created_at")


def classifier_get(*, classifier_id: Any) -> ClassifierModel:
    try:
        pk = int(classifier_id)
    except (TypeError, ValueError):
        pk = None
    model = classifier_list().filter(pk=pk).first() if pk is not None else None
    if model is None:
        raise errors.unknown_classifier(classifier_id)
    return model


def classification_list_for_scan(
    *, user: Any, scan: Scan, request: HttpRequest | None = None
) -> list[Classification]:
    rows = list(
        Classification.objects.visible_to(user)
        .filter(scan=scan)
        .select_related("classifier", "requested_by")
        .order_by("-created_at", "-id")
    )
    audit_record(
        action=Action.CLASSIFICATION_VIEWED,
        actor=user,
        target=scan,
        request=request,
        details={"view": "list", "results": len(rows)},
    )
    return rows


def classification_get_for_user(
    *, user: Any, classification_id: int, request: HttpRequest | None = None
) -> Classification:
    row = get_object_or_404(
        Classification.objects.visible_to(user).select_related("classifier", "requested_by"),
        pk=classification_id,
    )
    audit_record(
        action=Action.CLASSIFICATION_VIEWED,
        actor=user,
        target=row,
        request=request,
        details={"view": "detail", "scan": row.scan_id},
    )
    return row
