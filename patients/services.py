"""Writes to patient records. Each write is audited inside the same transaction.

APIs check roles with permission classes; the services check them again because the
server-rendered pages call these functions directly, and a missed check there would let the
wrong role write clinical data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpRequest

from accounts.models import Department
from audit.models import Action, Outcome
from audit.pseudonyms import PATIENT_TARGET
from audit.services import audit_record
from engine import errors
from engine.errors import EngineError, ErrorCode
from patients.models import Patient, PatientNote

PATIENT_ID_MAX_LENGTH = Patient._meta.get_field("id").max_length or 64
NAME_MAX_LENGTH = Patient._meta.get_field("name").max_length or 200
AGE_MAX = 150
NOTE_MAX_LENGTH = 10_000
UPDATABLE_FIELDS = frozenset({"name", "age", "note"})


def _forbidden(message: str) -> EngineError:
    return errors.permission_denied(message)


def validate_patient_id(value: str) -> str:
    """The hospital id becomes a URL segment and a primary key: keep it unambiguous.

    Printable characters only (no control, format or odd space characters that look alike on
    screen), no slashes (they would split the URL), not "." or ".." (clients normalise those
    away), no leading or trailing spaces, at most 64 characters.
    """
    if not value:
        raise errors.invalid_patient_id("The patient id must not be empty.")
    if len(value) > PATIENT_ID_MAX_LENGTH:
        raise errors.invalid_patient_id(
            f"The patient id must be at most {PATIENT_ID_MAX_LENGTH} characters.",
        )
    if value != value.strip():
        raise errors.invalid_patient_id("The patient id must not start or end with a space.")
    if not value.isprintable():
        raise errors.invalid_patient_id("The patient id may contain only printable characters.")
    if "/" in value or "\\" in value:
        raise errors.invalid_patient_id("The patient id must not contain slashes.")
    if value in {".", ".."}:
        raise errors.invalid_patient_id("The patient id must not be '.' or '..'.")
    return value


def _clean_name(value: str) -> str:
    name = value.strip()
    if not name:
        raise errors.invalid_name("The patient name must not be empty.")
    if len(name) > NAME_MAX_LENGTH:
        raise errors.invalid_name(f"The patient name must be at most {NAME_MAX_LENGTH} characters.")
    if not name.isprintable():
        raise errors.invalid_name("The patient name may contain only printable characters.")
    return name


def _clean_age(value: int | None) -> int | None:
    # bool is an int in Python; True must not become age 1.
    if value is not None and (isinstance(value, bool) or not 0 <= value <= AGE_MAX):
        raise errors.invalid_age(AGE_MAX)
    return value


def _clean_note(value: str, *, code: ErrorCode = ErrorCode.INVALID_NOTE) -> str:
    text = value.strip()
    if len(text) > NOTE_MAX_LENGTH:
        raise errors.note_too_long(code, NOTE_MAX_LENGTH)
    return text


def patient_id_check_free(
    *, patient_id: str, created_by: Any, request: HttpRequest | None = None
) -> None:
    """Refuse a hospital id that is already a record (409 `patient_exists`), before anything
    is written. Run outside the caller's transaction (patient_create does; so does
    imaging.services.upload.patient_create_with_images), so the audit event stays.

    The id is the record's key across the hospital, so that it exists cannot be hidden
    without creating a duplicate. What is hidden is everything else: a record the technician
    may see is named ("already exists": they can open it); one in another department gets a
    neutral answer that names no department and no patient, points to the ways in (ask that
    department, emergency access), and is audited as patient_create_refused with the record
    as target (by reference), so the attempt is on file. See docs/access.md.
    """
    if not Patient.objects.filter(pk=patient_id).exists():
        return
    if Patient.objects.visible_to(created_by).filter(pk=patient_id).exists():
        raise errors.patient_exists(patient_id)
    audit_record(
        action=Action.PATIENT_CREATE_REFUSED,
        actor=created_by,
        target_type=PATIENT_TARGET,
        target_id=patient_id,
        outcome=Outcome.REFUSED,
        request=request,
        details={"reason": "exists_in_another_department"},
    )
    raise errors.patient_exists_elsewhere()


def patient_create(
    *,
    id: str,  # Shadows the builtin on purpose: the field is `id` in the model, API and forms.
    name: str,
    age: int | None = None,
    note: str = "",
    created_by: Any,
    request: HttpRequest | None = None,
    departments: Sequence[Department] | None = None,
) -> Patient:
    """Create a patient record. Technicians only; a hospital id that exists is a 409
    (patient_id_check_free).

    The record belongs to the technician's departments, so the technician and their
    colleagues see it; a technician in no department cannot create one (nobody would see it).
    `departments` overrides that for callers that know better: the DICOM gateway files a
    peer's patients in the peer's department (gateway.receive). Never from client input.
    """
    if not getattr(created_by, "is_technician", False):
        raise _forbidden("Only lab technicians create patient records.")
    if departments is None:
        departments = list(created_by.departments.order_by("slug"))
    departments = sorted(departments, key=lambda department: department.slug)
    if not departments:
        raise _forbidden(
            "You belong to no department, so nobody could see the record; "
            "ask an administrator to add you to one."
        )
    patient = Patient(
        id=validate_patient_id(id),
        name=_clean_name(name),
        age=_clean_age(age),
        note=_clean_note(note),
        created_by=created_by,
    )
    # Before the transaction below: a refusal's audit event must not be rolled back with it.
    patient_id_check_free(patient_id=patient.id, created_by=created_by, request=request)
    with transaction.atomic():
        try:
            # A savepoint, so a duplicate leaves the caller's transaction usable. The database
            # decides: two technicians registering the same id at once cannot both win (the
            # loser gets the plain 409, unaudited: the check above found no record yet).
            with transaction.atomic():
                patient.save(force_insert=True)
        except IntegrityError:
            raise errors.patient_exists(patient.id) from None
        patient.departments.set(departments)
        audit_record(
            action=Action.PATIENT_CREATED,
            actor=created_by,
            target=patient,
            request=request,
            details={"departments": [department.slug for department in departments]},
        )
    return patient


@transaction.atomic
def patient_update(
    *, patient: Patient, actor: Any, request: HttpRequest | None = None, **fields: Any
) -> Patient:
    """Change name, age or note. Technicians only. Caller has checked access to `patient`."""
    if not getattr(actor, "is_technician", False):
        raise _forbidden("Only lab technicians change patient records.")
    unknown = set(fields) - UPDATABLE_FIELDS
    if unknown:
        # A programming error, not a client one: the API only passes validated fields.
        raise TypeError(f"patient_update() got fields it cannot change: {sorted(unknown)}")
    cleaners: dict[str, Callable[[Any], Any]] = {
        "name": _clean_name,
        "age": _clean_age,
        "note": _clean_note,
    }
    changed = []
    for field, value in fields.items():
        cleaned = cleaners[field](value)
        if getattr(patient, field) != cleaned:
            setattr(patient, field, cleaned)
            changed.append(field)
    if changed:
        patient.save(update_fields=[*changed, "updated_at"])
    # Field names only: the values are patient data and the audit log is read by admins.
    audit_record(
        action=Action.PATIENT_UPDATED,
        actor=actor,
        target=patient,
        request=request,
        details={"changed": sorted(changed)},
    )
    return patient


@transaction.atomic
def patient_note_add(
    *, patient: Patient, author: Any, text: str, request: HttpRequest | None = None
) -> PatientNote:
    """Append a doctor's dated note. Doctors only; notes are never edited."""
    if not getattr(author, "is_doctor", False):
        raise _forbidden("Only doctors add notes to a patient record.")
    body = _clean_note(text, code=ErrorCode.INVALID_TEXT)
    if not body:
        raise errors.invalid_text("The note must not be empty.")
    note = PatientNote.objects.create(patient=patient, author=author, text=body)
    audit_record(
        action=Action.PATIENT_NOTE_ADDED,
        actor=author,
        target=patient,
        request=request,
        details={"note_id": note.id},
    )
    return note


def patient_access_changeable_by(actor: Any, patient: Patient) -> bool:
    """Whether `actor` may change who sees `patient`: clinical staff of one of its departments
    (not a care-team member from elsewhere, not emergency access)."""
    return bool(getattr(actor, "is_clinical", False)) and _department_staff(actor, patient)


def _department_staff(actor: Any, patient: Patient) -> bool:
    return patient.departments.filter(members=actor).exists()


@transaction.atomic
def patient_set_departments(
    *,
    patient: Patient,
    departments: Any,
    actor: Any,
    request: HttpRequest | None = None,
) -> Patient:
    """Set the departments a patient record belongs to (at least one).

    Clinical staff of one of the record's current departments only: a care-team member or a
    user with emergency access may read the record but not move it. Audited with the
    department slugs before and after.
    """
    if not getattr(actor, "is_clinical", False) or not _department_staff(actor, patient):
        raise _forbidden("Only clinical staff of the patient's department change its departments.")
    unique = {department.pk: department for department in departments}
    wanted = sorted(unique.values(), key=lambda department: department.slug)
    if not wanted:
        raise errors.invalid_departments("A patient record must belong to at least one department.")
    given = [department.pk for department in wanted]
    known = set(Department.objects.filter(pk__in=given).values_list("pk", flat=True))
    if len(known) != len(wanted):
        raise errors.invalid_departments("Unknown department.")
    before = sorted(patient.departments.values_list("slug", flat=True))
    after = sorted(department.slug for department in wanted)
    if before != after:
        patient.departments.set(wanted)
    audit_record(
        action=Action.PATIENT_DEPARTMENTS_CHANGED,
        actor=actor,
        target=patient,
        request=request,
        details={"from": before, "to": after},
    )
    return patient


@transaction.atomic
def patient_set_care_team(
    *,
    patient: Patient,
    members: Any,
    actor: Any,
    request: HttpRequest | None = None,
) -> Patient:
    """Name the clinical users on a patient's care team (they see the record wherever they
    work). Clinical staff of the patient's departments only; audited with user ids."""
    if not getattr(actor, "is_clinical", False) or not _department_staff(actor, patient):
        raise _forbidden("Only clinical staff of the patient's department change its care team.")
    wanted = {member.pk: member for member in members}
    if any(not getattr(member, "is_clinical", False) for member in wanted.values()):
        raise errors.invalid_care_team()
    before = sorted(patient.care_team.values_list("pk", flat=True))
    after = sorted(wanted)
    if before != after:
        patient.care_team.set(list(wanted.values()))
    audit_record(
        action=Action.PATIENT_CARE_TEAM_CHANGED,
        actor=actor,
        target=patient,
        request=request,
        details={"from": before, "to": after},
    )
    return patient


@transaction.atomic
def patient_change_access(
    *,
    patient: Patient,
    actor: Any,
    departments: Any = None,
    care_team: Any = None,
    request: HttpRequest | None = None,
) -> Patient:
    """Set the departments, the care team or both, all or nothing (the API's one call).

    None leaves that part as it is. The departments are checked against the record as it was,
    so staff who move a record out of their own department can still name its care team in
    the same request.
    """
    if not patient_access_changeable_by(actor, patient):
        raise _forbidden("Only clinical staff of the patient's department change who sees it.")
    if care_team is not None:
        patient_set_care_team(patient=patient, members=care_team, actor=actor, request=request)
    if departments is not None:
        patient_set_departments(
            patient=patient, departments=departments, actor=actor, request=request
        )
    return patient


@transaction.atomic
def patient_join_department(
    *,
    patient: Patient,
    department: Department,
    actor: Any,
    via: str,
    request: HttpRequest | None = None,
) -> bool:
    """Add `department` to a record that a department's own system has just sent images for
    (the DICOM gateway: a modality of that department imaged the patient, so its staff must
    see and review the images; the care follows the patient). Not for people: staff change
    departments through patient_set_departments. Audited as patient_departments_changed
    with `via`; False (and nothing written) when the record already belongs to it.
    """
    before = sorted(patient.departments.values_list("slug", flat=True))
    if department.slug in before:
        return False
    patient.departments.add(department)
    audit_record(
        action=Action.PATIENT_DEPARTMENTS_CHANGED,
        actor=actor,
        target=patient,
        request=request,
        details={"from": before, "to": sorted([*before, department.slug]), "via": via},
    )
    return True
