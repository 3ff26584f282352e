"""Correcting an upload made under the wrong patient: move the image to the right one.

    scan_move(scan_id=..., to_patient_id=..., actor=technician, request=...) -> ScanMove

Technicians only, and both patients must be visible to them (`visible_to`: their departments,
their care team, or emergency access): a technician cannot move an image out of, or into, a
record they could not open. A study is one patient's, so an image that belongs to a DICOM study
moves with every image of that study on the same patient (the study is never split).

Nothing is re-encrypted: keys and ciphertexts are bound to the scan (`Scan.uid`), not to the
patient. What names the patient is derived when read: the patient pages, the patient and study
exports (`imaging.services.deid`), and the thumbnails, whose cache key and ETag carry the
scan's `updated_at`, which the move sets, so browsers fetch them again. Both patients'
`updated_at` are set too. The DICOM header of the image itself is not rewritten: its identity
is what the modality wrote, kept encrypted and removed from every de-identified output.

Audited on both records, in the same transaction, as `patient_updated` with
`{"moved": "out"|"in", "scans": [...], "patient": <the other patient>}` (the other patient
written as its reference, like every patient id in the log).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.utils import timezone

from audit.models import Action
from audit.services import audit_record
from engine import errors
from imaging.models import Scan
from patients.models import Patient
from patients.selectors import patient_lookup


@dataclass(frozen=True)
class ScanMove:
    scan_ids: list[int]
    from_patient: Patient
    to_patient: Patient


@transaction.atomic
def scan_move(
    *, scan_id: int, to_patient_id: str, actor: Any, request: HttpRequest | None = None
) -> ScanMove:
    """Move a scan (and the rest of its study on the same patient) to another patient."""
    if not getattr(actor, "is_technician", False):
        raise errors.permission_denied("Only lab technicians move images between patients.")
    scan = get_object_or_404(Scan.objects.visible_to(actor).select_for_update(), pk=scan_id)
    source = Patient.objects.get(pk=scan.patient_id)
    to_patient_id = (to_patient_id or "").strip()
    if not to_patient_id:
        raise errors.invalid_patient_id("Give the patient id the image belongs to.")
    # A patient the technician cannot see and one that does not exist look the same: 404.
    target = patient_lookup(user=actor, patient_id=to_patient_id)
    if target.pk == source.pk:
        raise errors.invalid_patient_id(f"The image already belongs to patient {source.pk}.")
    moving = Scan.objects.select_for_update().filter(patient=source)
    if scan.study_uid:
        moving = moving.filter(study_uid=scan.study_uid)
    else:
        moving = moving.filter(pk=scan.pk)
    scan_ids = sorted(moving.values_list("pk", flat=True))
    now = timezone.now()
    # updated_at changes the thumbnails' version (their cache key and ETag).
    Scan.objects.filter(pk__in=scan_ids).update(patient=target, updated_at=now)
    Patient.objects.filter(pk__in=[source.pk, target.pk]).update(updated_at=now)
    for record, other, direction in ((source, target, "out"), (target, source, "in")):
        audit_record(
            action=Action.PATIENT_UPDATED,
            actor=actor,
            target=record,
            request=request,
            details={"moved": direction, "scans": scan_ids, "patient": other.pk},
        )
    return ScanMove(scan_ids=scan_ids, from_patient=source, to_patient=target)
