"""Emergency (break-glass) access: a clinical user opens a patient outside their departments
and care teams, with a typed reason, for BREAK_GLASS_HOURS. See docs/access.md.

- `emergency_access_open` checks the reason and the confirmation, counts the request against
  BREAK_GLASS_REQUESTS_PER_HOUR, looks the hospital id up by exact match, creates the
  `BreakGlassGrant`, audits `break_glass_opened` and mails the privacy officer
  (`medimg.mail.notify_emergency_access`, sent when the transaction commits). An unknown id
  is answered "no such patient" and audited as `break_glass_refused` (the typed id stored as
  its keyed hash): see docs/access.md for why an emergency user is told.
- While the grant is active, `Patient.objects.visible_to` lets the user see the patient, and
  every audit event the user causes about that patient (whichever app records it) carries
  `break_glass: <grant id>` (`break_glass_context`, registered with audit_context_register).
- `emergency_access_end` ends the user's grants for a patient early (audited); nothing is
  ever deleted. `emergency_access_review` is the admins' "mark reviewed" (audited).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from audit.models import Action, Outcome
from audit.pseudonyms import PATIENT_ID_KEYS
from audit.services import audit_record
from engine import errors
from medimg.mail import notify_emergency_access
from medimg.ratelimit import rate_limit_hit
from patients.models import BreakGlassGrant, Patient

REASON_MIN_LENGTH = 20
REASON_MAX_LENGTH = 1000
RATE_WINDOW_SECONDS = 3600
# The details key that marks an event whose access came only through a grant.
BREAK_GLASS_KEY = "break_glass"
# Events without a target that show patients (lists, searches): flagged with every grant
# the user holds, since the granted patient can be among the rows.
_LIST_ACTIONS = frozenset({Action.PATIENT_LISTED, Action.DICOMWEB_SEARCHED})
# How to reach the patient from an event's target, by target type (imaging's related names;
# patients does not import imaging).
_PATIENT_LOOKUPS = {
    "scan": "scans__pk",
    "region": "scans__regions__pk",
    "segmentationjob": "scans__segmentations__pk",
}
# Per request: the user's grants for patients they see only through a grant.
_MEMO = "_medimg_break_glass"


def _forbidden(message: str) -> errors.EngineError:
    return errors.permission_denied(message)


def _clean_reason(reason: str) -> str:
    text = " ".join((reason or "").split())
    if len(text) < REASON_MIN_LENGTH:
        raise errors.reason_too_short(REASON_MIN_LENGTH)
    return text[:REASON_MAX_LENGTH]


def _without_patient(reason: str, patient: Patient) -> str:
    """Admins and the privacy officer read the reason; a hospital id or the patient's name typed
    into it is replaced, so neither reaches them."""
    for identifier in (patient.id, patient.name):
        if identifier and len(identifier.strip()) >= 3:
            reason = re.sub(re.escape(identifier.strip()), "[patient]", reason, flags=re.I)
    return reason


def sees_without_grant(user: Any, patient: Patient) -> bool:
    """Whether `user` sees `patient` through a department or the care team (not a grant)."""
    return (
        patient.departments.filter(members=user).exists()
        or patient.care_team.filter(pk=user.pk).exists()
    )


def _forget(request: HttpRequest | None) -> None:
    holder = getattr(request, "_request", request)
    if holder is not None and hasattr(holder, _MEMO):
        delattr(holder, _MEMO)


def _refused(user: Any, request: HttpRequest | None, why: str, details: dict[str, Any]) -> None:
    audit_record(
        action=Action.BREAK_GLASS_REFUSED,
        actor=user,
        outcome=Outcome.REFUSED,
        request=request,
        details={"why": why, **details},
    )


def emergency_access_open(
    *,
    user: Any,
    patient_id: str,
    reason: str,
    confirmed: bool,
    request: HttpRequest | None = None,
) -> BreakGlassGrant:
    """Grant `user` emergency access to the patient with exactly this hospital id.

    Refuses (EngineError): a non-clinical user (403), a reason under REASON_MIN_LENGTH
    characters, no confirmation, more than BREAK_GLASS_REQUESTS_PER_HOUR requests this hour
    (429), an unknown id (404), a patient the user already sees or holds a grant for (409).
    The lookups (the last three) are audited as refused; the grant as break_glass_opened.
    """
    if not getattr(user, "is_clinical", False):
        raise _forbidden("Only technicians and doctors can request emergency access.")
    text = _clean_reason(reason)
    if not confirmed:
        raise errors.confirmation_required()
    patient_id = (patient_id or "").strip()
    if not patient_id:
        raise errors.invalid_patient_id("Type the patient's hospital id.")
    limit = settings.BREAK_GLASS_REQUESTS_PER_HOUR
    # Counted per user: each request looks a typed id up, so the limit bounds guessing.
    if rate_limit_hit("break-glass", str(user.pk), window_seconds=RATE_WINDOW_SECONDS) > limit:
        _refused(user, request, "rate_limited", {"search": patient_id})
        raise errors.too_many_requests(limit)
    # Exact match on the primary key: no listing, no partial or case-insensitive search.
    patient = Patient.objects.filter(pk=patient_id).first()
    if patient is None:
        _refused(user, request, "unknown_patient", {"search": patient_id})
        raise errors.patient_not_found()
    if sees_without_grant(user, patient):
        _refused(user, request, "already_visible", {})
        raise errors.access_not_needed()
    current = BreakGlassGrant.objects.active().filter(user=user, patient=patient).first()
    if current is not None:
        _refused(user, request, "already_granted", {"grant": current.pk})
        raise errors.access_not_needed(
            "You already have emergency access to this patient until "
            f"{timezone.localtime(current.expires_at):%H:%M}."
        )
    hours = settings.BREAK_GLASS_HOURS
    text = _without_patient(text, patient)
    with transaction.atomic():
        grant = BreakGlassGrant.objects.create(
            user=user,
            patient=patient,
            reason=text,
            expires_at=timezone.now() + timedelta(hours=hours),
        )
        _forget(request)
        audit_record(
            action=Action.BREAK_GLASS_OPENED,
            actor=user,
            target=patient,
            request=request,
            details={
                "grant": grant.pk,
                "reason": text,
                "hours": hours,
                "expires_at": grant.expires_at.isoformat(),
            },
        )
        # After commit, to PRIVACY_OFFICER_EMAIL and ALERT_EMAIL; the patient by reference only.
        notify_emergency_access(user, patient.reference, text, grant.expires_at)
    return grant


@transaction.atomic
def emergency_access_end(*, user: Any, patient_id: str, request: HttpRequest | None = None) -> int:
    """End `user`'s active grants for this patient now; returns how many (0 when none, for an
    unknown id as for a patient without a grant). Each is audited; none is deleted."""
    grants = list(
        BreakGlassGrant.objects.active()
        .select_for_update()
        .filter(user=user, patient_id=patient_id)
        .select_related("patient")
    )
    now = timezone.now()
    for grant in grants:
        grant.ended_at = now
        grant.save(update_fields=["ended_at"])
    _forget(request)
    for grant in grants:
        audit_record(
            action=Action.BREAK_GLASS_ENDED,
            actor=user,
            target=grant.patient,
            request=request,
            details={"grant": grant.pk, "expires_at": grant.expires_at.isoformat()},
        )
    return len(grants)


@transaction.atomic
def emergency_access_review(
    *, grants: QuerySet[BreakGlassGrant], reviewer: Any, request: HttpRequest | None = None
) -> int:
    """Mark these grants reviewed by `reviewer` (an admin); returns how many were not yet.
    Audited per grant, naming the patient by reference."""
    if not getattr(reviewer, "is_admin_role", False):
        raise PermissionDenied("Only administrators review emergency access.")
    # Locked afresh from the ids: the caller's queryset may carry outer joins (the admin list
    # selects the nullable reviewer), which PostgreSQL cannot lock FOR UPDATE.
    pending = list(
        BreakGlassGrant.objects.filter(
            pk__in=list(grants.values_list("pk", flat=True)), reviewed_at__isnull=True
        )
        .select_for_update(of=("self",))
        .select_related("user")
        .order_by("pk")
    )
    now = timezone.now()
    for grant in pending:
        grant.reviewed_by = reviewer
        grant.reviewed_at = now
        grant.save(update_fields=["reviewed_by", "reviewed_at"])
        audit_record(
            action=Action.BREAK_GLASS_REVIEWED,
            actor=reviewer,
            target=grant,
            request=request,
            # `patient` is written as the patient's reference (audit.pseudonyms).
            details={"patient": grant.patient_id, "user": grant.user.get_username()},
        )
    return len(pending)


# --- Reads ---------------------------------------------------------------------------------


def emergency_grants_active(*, user: Any) -> list[BreakGlassGrant]:
    """`user`'s active grants, soonest to expire first, with their patients (for the banner:
    the user sees these patients, so the banner may name them)."""
    if not getattr(user, "is_clinical", False):
        return []
    return list(
        BreakGlassGrant.objects.active()
        .filter(user=user)
        .select_related("patient")
        .order_by("expires_at", "pk")
    )


def emergency_grants_unreviewed_count() -> int:
    """How many grants no admin has reviewed yet (the admin home page's tile)."""
    return BreakGlassGrant.objects.filter(reviewed_at__isnull=True).count()


# --- The break-glass flag on audit events -----------------------------------------------------


def _granted_only(user: Any, request: HttpRequest | None) -> dict[str, int]:
    """Patient id -> grant id, for the patients `user` sees only through an active grant.
    One query, remembered for the rest of the request."""
    holder = getattr(request, "_request", request)
    memo = getattr(holder, _MEMO, None) if holder is not None else None
    if memo is not None and memo[0] == user.pk:
        return dict(memo[1])
    rows = (
        BreakGlassGrant.objects.active()
        .filter(user=user)
        .exclude(patient__departments__members=user)
        .exclude(patient__care_team=user)
        .order_by("created_at", "pk")
        .values_list("patient_id", "pk")
    )
    found = dict(rows)  # The newest grant for a patient wins.
    if holder is not None:
        setattr(holder, _MEMO, (user.pk, found))
    return found


def _patient_of(
    target: Any, target_type: str, target_id: str, details: dict[str, Any] | None
) -> str | None:
    if isinstance(target, Patient):
        return str(target.pk)
    if target is not None:
        patient_id = getattr(target, "patient_id", None)
        if patient_id:
            return str(patient_id)
        target_type, target_id = target._meta.model_name or "", str(target.pk)
    if target_type == "patient":
        return target_id or None
    lookup = _PATIENT_LOOKUPS.get(target_type)
    if lookup is None or not target_id.isdigit():
        # A study export names its patient in the details (its target is the study UID).
        for key in PATIENT_ID_KEYS:
            if details and details.get(key):
                return str(details[key])
        return None
    found = Patient.objects.filter(**{lookup: int(target_id)}).values_list("pk", flat=True)
    return found.first()


def break_glass_context(
    *,
    actor: Any,
    action: str,
    target: Any,
    target_type: str,
    target_id: str,
    details: dict[str, Any] | None,
    request: HttpRequest | None,
) -> dict[str, Any] | None:
    """`{"break_glass": <grant id>}` for an event by `actor` about a patient they see only
    through an active grant; `{"break_glass": [ids]}` on a list or search while they hold
    any. Costs one query per request for clinical users, more only for grant holders."""
    if not getattr(actor, "is_clinical", False):
        return None
    untargeted = target is None and not target_id
    if untargeted and action not in _LIST_ACTIONS:
        return None  # A login, a logout: no patient, no query.
    granted = _granted_only(actor, request)
    if not granted:
        return None
    if untargeted:
        return {BREAK_GLASS_KEY: sorted(granted.values())}
    patient_id = _patient_of(target, target_type, target_id, details)
    if patient_id is None or patient_id not in granted:
        return None
    return {BREAK_GLASS_KEY: granted[patient_id]}
