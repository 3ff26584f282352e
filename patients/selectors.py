"""Reads of patient records. Every read starts from `Patient.objects.visible_to(user)`.

Reading patient data is itself an audited action, so the selectors write the audit event:
the API and the server-rendered pages both call them, and neither can forget it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from audit.models import Action, Outcome
from audit.services import audit_record, audit_record_routine
from patients.models import Patient, PatientNote

# The orderings a client may ask for; each is followed by the primary key so that pages
# never overlap or skip rows when many patients share a name or a creation second.
ORDERINGS = (
    "-created_at",
    "created_at",
    "-updated_at",
    "updated_at",
    "name",
    "-name",
    "id",
    "-id",
    "age",
    "-age",
)
DEFAULT_ORDERING = "-created_at"


def _read_outcome(user: Any) -> Outcome:
    # A non-clinical caller gets an empty result from the scoped queryset; the log says so.
    return Outcome.SUCCESS if getattr(user, "is_clinical", False) else Outcome.REFUSED


def patient_list(
    *,
    user: Any,
    search: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    min_age: int | None = None,
    max_age: int | None = None,
    ordering: str | None = None,
    request: HttpRequest | None = None,
) -> QuerySet[Patient]:
    """Patients `user` may see, searched by id or name and filtered; audited with the search.

    `created_after` is inclusive and `created_before` exclusive, so consecutive ranges do
    not overlap. The result is lazy: paginate it before it is evaluated.
    """
    if ordering is None:
        ordering = DEFAULT_ORDERING
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {ORDERINGS}, not {ordering!r}")

    patients = Patient.objects.visible_to(user)
    search = (search or "").strip()
    if search:
        patients = patients.filter(Q(id__icontains=search) | Q(name__icontains=search))
    if created_after is not None:
        patients = patients.filter(created_at__gte=created_after)
    if created_before is not None:
        patients = patients.filter(created_at__lt=created_before)
    if min_age is not None:
        patients = patients.filter(age__gte=min_age)
    if max_age is not None:
        patients = patients.filter(age__lte=max_age)
    tie_breaker = [] if ordering.lstrip("-") == "id" else ["id"]

    audit_record(
        action=Action.PATIENT_LISTED,
        actor=user,
        outcome=_read_outcome(user),
        request=request,
        details={
            "search": search,
            "filters": {
                name: value
                for name, value in {
                    "created_after": created_after,
                    "created_before": created_before,
                    "min_age": min_age,
                    "max_age": max_age,
                }.items()
                if value is not None
            },
            "ordering": ordering,
        },
    )
    return (
        patients.select_related("created_by")
        .annotate(note_count=Count("notes"))
        .order_by(ordering, *tie_breaker)
    )


def patient_lookup(*, user: Any, patient_id: str) -> Patient:
    """One patient `user` may see, or Http404, without an audit event.

    For callers that audit their own action on the record (update, add a note). A patient
    the user may not see and one that does not exist look the same: 404.
    """
    return get_object_or_404(
        Patient.objects.visible_to(user)
        .select_related("created_by")
        .annotate(note_count=Count("notes")),
        pk=patient_id,
    )


def patient_get(*, user: Any, patient_id: str, request: HttpRequest | None = None) -> Patient:
    """One patient `user` may see, or Http404. Audited as a view."""
    patient = patient_lookup(user=user, patient_id=patient_id)
    audit_record(action=Action.PATIENT_VIEWED, actor=user, target=patient, request=request)
    return patient


def patient_note_list(
    *, user: Any, patient_id: str, request: HttpRequest | None = None
) -> QuerySet[PatientNote]:
    """The doctors' notes on one patient `user` may see, oldest first. Audited as a routine
    view."""
    patient = patient_lookup(user=user, patient_id=patient_id)
    # A routine read (the notes card reloads with the page): one event per user and patient per
    # window, not one per read (audit_record_routine).
    audit_record_routine(
        action=Action.PATIENT_VIEWED,
        actor=user,
        target_type="patient",
        target_id=patient.pk,
        kind="notes",
        request=request,
        details={"part": "notes"},
    )
    return patient.notes.select_related("author").order_by("created_at", "id")


def patient_access_get(
    *, user: Any, patient_id: str, request: HttpRequest | None = None
) -> Patient:
    """One patient `user` may see, with its departments and care team (who sees the record).
    Audited as a view of the record's access."""
    patient = get_object_or_404(
        Patient.objects.visible_to(user).prefetch_related("departments", "care_team"),
        pk=patient_id,
    )
    audit_record(
        action=Action.PATIENT_VIEWED,
        actor=user,
        target=patient,
        request=request,
        details={"view": "access"},
    )
    return patient
