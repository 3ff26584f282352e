"""An admin's erasure of a patient or a scan: checked, then done by imaging.jobs.erasure.

    erasure_request(*, actor, kind, target, reason, otp_code, request=None) -> Erasure

The admin proves a fresh second factor (a current TOTP code typed into the form, even when
the session is already verified: an unattended signed-in browser must not be enough) and
types a reason. The reason is kept in the audit log, so it may not contain the patient's
name or hospital id. Refusals are audited (outcome refused) before the error goes back.

`target` is a patient's hospital id or audit reference (kind "patient"), or a scan's number
(kind "scan"). Admins see no patient data elsewhere; nothing here shows them any either.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest

from accounts.models import Role
from accounts.otp import otp_verify
from audit.models import Action, Outcome
from audit.services import audit_record
from imaging.jobs.erasure import patient_erase, scan_erase
from imaging.models import Erasure, ErasureKind, Scan
from patients.models import Patient

REASON_MIN = 10
REASON_MAX = 500
VIA_ADMIN = "admin page"


def erasure_reason_check(reason: str, *, patient: Patient | None) -> str:
    """The reason, stripped; ValidationError when too short or long, or naming the patient."""
    reason = (reason or "").strip()
    if len(reason) < REASON_MIN:
        raise ValidationError(
            {"reason": f"Give the reason in at least {REASON_MIN} characters (a request number)."}
        )
    if len(reason) > REASON_MAX:
        raise ValidationError({"reason": f"Keep the reason under {REASON_MAX} characters."})
    if patient is not None:
        folded = reason.casefold()
        for value in (patient.id, patient.name):
            if value and len(value.strip()) >= 3 and value.strip().casefold() in folded:
                raise ValidationError(
                    {
                        "reason": "The reason is kept in the audit log: leave out the patient's "
                        "name and hospital id (give the request or ticket number instead)."
                    }
                )
    return reason


def erasure_target(*, kind: str, target: str) -> tuple[Patient, Scan | None]:
    """The patient (and scan) `target` names; ValidationError when there is none."""
    target = (target or "").strip()
    if kind == ErasureKind.SCAN:
        scan = None
        if target.isdigit():
            scan = Scan.objects.select_related("patient").filter(pk=int(target)).first()
        if scan is None:
            raise ValidationError({"target": f"There is no scan number {target[:20]!r}."})
        return scan.patient, scan
    if kind != ErasureKind.PATIENT:
        raise ValidationError({"kind": "Choose a patient or a scan."})
    patient = Patient.objects.filter(pk=target).first() if target else None
    if patient is None and target:
        patient = next(
            (p for p in Patient.objects.only("id", "name") if p.reference == target), None
        )
    if patient is None:
        raise ValidationError({"target": "There is no patient with that hospital id or reference."})
    return patient, None


def erasure_request(
    *,
    actor: Any,
    kind: str,
    target: str,
    reason: str,
    otp_code: str,
    request: HttpRequest | None = None,
) -> Erasure:
    """Check the admin, the fresh code, the target and the reason; then erase."""
    if not (
        actor is not None
        and actor.is_authenticated
        and actor.is_active
        and getattr(actor, "role", "") == Role.ADMIN
    ):
        raise PermissionDenied
    action = Action.PATIENT_ERASED if kind == ErasureKind.PATIENT else Action.SCAN_ERASED
    if otp_verify(user=actor, code=otp_code) is None:
        audit_record(
            action=action,
            actor=actor,
            outcome=Outcome.REFUSED,
            request=request,
            details={"reason": "otp_invalid"},
        )
        raise ValidationError(
            {"otp_code": "That is not the current code of your authenticator app."}
        )
    patient, scan = erasure_target(kind=kind, target=target)
    reason = erasure_reason_check(reason, patient=patient)
    if scan is not None:
        return scan_erase(scan=scan, actor=actor, reason=reason, via=VIA_ADMIN)
    return patient_erase(patient=patient, actor=actor, reason=reason, via=VIA_ADMIN)
