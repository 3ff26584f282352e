"""Departments, care teams and emergency grants decide who sees a patient
(PatientQuerySet.visible_to), and the services that set them are audited.

These tests set every patient's departments themselves (`own_departments`): the shared
fixtures' ORM shortcut would otherwise put each record into the test department."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.db.models import Count
from django.http import Http404
from django.utils import timezone

from accounts.models import Department, Role
from audit.models import Action, AuditEvent
from engine.errors import EngineError
from imaging.models import Region, Scan, ScanStatus, SegmentationJob, SegmentationModel
from patients.models import BreakGlassGrant, Patient, PatientNote
from patients.selectors import patient_get, patient_list
from patients.services import patient_create, patient_set_care_team, patient_set_departments

pytestmark = [pytest.mark.django_db, pytest.mark.own_departments]


def _patient(id: str, *departments: Department, **fields: Any) -> Patient:
    patient = Patient.objects.create(id=id, name=f"Name {id}", **fields)
    patient.departments.set(departments)
    return patient


def _scan(patient: Patient, n: int = 0) -> Scan:
    return Scan.objects.create(
        patient=patient,
        original_filename=f"scan-{n}.png",
        format="png",
        size_bytes=1000,
        width=64,
        height=48,
        pixel_dtype="uint8",
        pixels_sha256=f"{n:064x}",
        status=ScanStatus.COMPLETED,
        original_path=f"scans/{n}.bin",
    )


def _visible(user: Any) -> set[str]:
    return set(Patient.objects.visible_to(user).values_list("pk", flat=True))


def test_a_shared_department_shows_the_patient(
    technician: Any, doctor: Any, other_doctor: Any, other_technician: Any, department: Any
) -> None:
    _patient("RAD-1", department)

    assert _visible(technician) == _visible(doctor) == {"RAD-1"}
    assert _visible(other_doctor) == _visible(other_technician) == set()


def test_a_patient_of_two_departments_is_seen_from_both(
    doctor: Any, other_doctor: Any, department: Any, other_department: Any
) -> None:
    _patient("BOTH-1", department, other_department)
    _patient("RAD-1", department)
    _patient("CARD-1", other_department)

    assert _visible(doctor) == {"BOTH-1", "RAD-1"}
    assert _visible(other_doctor) == {"BOTH-1", "CARD-1"}


def test_a_patient_in_no_department_is_seen_by_nobody(
    technician: Any, doctor: Any, other_doctor: Any
) -> None:
    _patient("NOWHERE-1")

    assert _visible(technician) == _visible(doctor) == _visible(other_doctor) == set()


def test_the_care_team_sees_the_patient_wherever_they_work(
    doctor: Any, other_doctor: Any, other_technician: Any, department: Any
) -> None:
    patient = _patient("RAD-1", department)
    patient.care_team.add(other_doctor)

    assert _visible(other_doctor) == {"RAD-1"}
    assert _visible(other_technician) == set()


def test_an_unexpired_emergency_grant_shows_the_patient_until_it_expires(
    other_doctor: Any, department: Any
) -> None:
    patient = _patient("RAD-1", department)
    grant = BreakGlassGrant.objects.create(
        user=other_doctor,
        patient=patient,
        reason="Unconscious in the emergency room",
        expires_at=timezone.now() + timedelta(hours=4),
    )
    assert _visible(other_doctor) == {"RAD-1"}

    grant.expires_at = timezone.now() - timedelta(seconds=1)
    grant.save(update_fields=["expires_at"])

    assert _visible(other_doctor) == set()
    assert not grant.is_active


@pytest.mark.parametrize("persona", ["admin", "outsider"])
def test_non_clinical_users_see_nothing_even_with_a_department_or_grant(
    request: pytest.FixtureRequest, persona: str, department: Any
) -> None:
    user = request.getfixturevalue(persona)
    user.departments.add(department)
    patient = _patient("RAD-1", department)
    patient.care_team.add(user)
    BreakGlassGrant.objects.create(
        user=user, patient=patient, reason="x", expires_at=timezone.now() + timedelta(hours=1)
    )

    assert _visible(user) == set()


def test_an_inactive_member_sees_nothing(doctor: Any, department: Any) -> None:
    _patient("RAD-1", department)
    doctor.is_active = False
    doctor.save()

    assert _visible(doctor) == set()


def test_every_path_at_once_gives_one_row_and_true_counts(
    doctor: Any, department: Any, other_department: Any
) -> None:
    doctor.departments.add(other_department)
    patient = _patient("RAD-1", department, other_department)
    patient.care_team.add(doctor)
    BreakGlassGrant.objects.create(
        user=doctor, patient=patient, reason="x", expires_at=timezone.now() + timedelta(hours=1)
    )
    PatientNote.objects.create(patient=patient, author=doctor, text="one")
    PatientNote.objects.create(patient=patient, author=doctor, text="two")

    rows = list(Patient.objects.visible_to(doctor).annotate(note_count=Count("notes")))

    assert [(row.pk, row.note_count) for row in rows] == [("RAD-1", 2)]


def test_scans_regions_and_jobs_follow_the_patient(
    doctor: Any, other_doctor: Any, department: Any, other_department: Any
) -> None:
    mine = _scan(_patient("RAD-1", department), 1)
    theirs = _scan(_patient("CARD-1", other_department), 2)
    for scan in (mine, theirs):
        Region.objects.create(
            scan=scan,
            index=0,
            label="text",
            confidence=0.9,
            x1=1,
            y1=1,
            x2=5,
            y2=5,
            ciphertext=b"x",
            dtype="uint8",
        )
    model = SegmentationModel.objects.create(name="dept-test-model")
    for scan in (mine, theirs):
        SegmentationJob.objects.create(scan=scan, model=model, requested_by=doctor)

    assert list(Scan.objects.visible_to(doctor)) == [mine]
    assert list(Scan.objects.visible_to(other_doctor)) == [theirs]
    assert {r.scan_id for r in Region.objects.visible_to(doctor)} == {mine.pk}
    assert {j.scan_id for j in SegmentationJob.objects.visible_to(other_doctor)} == {theirs.pk}


def test_selectors_answer_404_across_departments(
    doctor: Any, other_doctor: Any, other_department: Any
) -> None:
    _patient("CARD-1", other_department)

    with pytest.raises(Http404):
        patient_get(user=doctor, patient_id="CARD-1")
    assert list(patient_list(user=doctor, search="CARD")) == []
    assert [p.pk for p in patient_list(user=other_doctor, search="CARD")] == ["CARD-1"]


# --- Services ------------------------------------------------------------------------------


def test_a_new_patient_gets_the_technicians_departments_audited(
    technician: Any, department: Any, other_department: Any
) -> None:
    technician.departments.add(other_department)

    patient = patient_create(id="NEW-1", name="Ada Lovelace", created_by=technician)

    assert sorted(patient.departments.values_list("slug", flat=True)) == [
        "cardiology",
        "radiology",
    ]
    event = AuditEvent.objects.get(action=Action.PATIENT_CREATED)
    assert event.details["departments"] == ["cardiology", "radiology"]


def test_the_other_department_cannot_see_a_new_patient(
    technician: Any, other_technician: Any, other_doctor: Any
) -> None:
    patient_create(id="NEW-1", name="Ada Lovelace", created_by=technician)

    assert _visible(other_technician) == _visible(other_doctor) == set()


def test_a_technician_in_no_department_cannot_create_a_patient(django_user_model: Any) -> None:
    loner = django_user_model.objects.create_user(username="lone", role=Role.TECHNICIAN)

    with pytest.raises(EngineError) as caught:
        patient_create(id="NEW-1", name="Ada Lovelace", created_by=loner)

    assert caught.value.status_code == 403
    assert not Patient.objects.exists()
    assert not AuditEvent.objects.filter(action=Action.PATIENT_CREATED).exists()


def test_department_staff_move_a_patient_audited(
    doctor: Any, department: Any, other_department: Any, other_doctor: Any
) -> None:
    patient = _patient("RAD-1", department)

    patient_set_departments(patient=patient, departments=[other_department], actor=doctor)

    assert list(patient.departments.all()) == [other_department]
    assert _visible(doctor) == set()
    assert _visible(other_doctor) == {"RAD-1"}
    event = AuditEvent.objects.get(action=Action.PATIENT_DEPARTMENTS_CHANGED)
    assert (event.actor, event.target_id) == (doctor, patient.reference)
    assert (event.details["from"], event.details["to"]) == (["radiology"], ["cardiology"])


@pytest.mark.parametrize("persona", ["other_doctor", "other_technician", "admin", "outsider"])
def test_only_staff_of_the_patients_department_move_it(
    request: pytest.FixtureRequest, persona: str, department: Any, other_department: Any
) -> None:
    patient = _patient("RAD-1", department)
    actor = request.getfixturevalue(persona)
    if persona.startswith("other_"):
        # On the care team: may read the record, still may not move it.
        patient.care_team.add(actor)

    with pytest.raises(EngineError) as caught:
        patient_set_departments(patient=patient, departments=[other_department], actor=actor)

    assert caught.value.status_code == 403
    assert list(patient.departments.all()) == [department]
    assert not AuditEvent.objects.filter(action=Action.PATIENT_DEPARTMENTS_CHANGED).exists()


def test_a_patient_keeps_at_least_one_department(technician: Any, department: Any) -> None:
    patient = _patient("RAD-1", department)

    with pytest.raises(EngineError) as caught:
        patient_set_departments(patient=patient, departments=[], actor=technician)

    assert caught.value.code == "invalid_departments"
    assert list(patient.departments.all()) == [department]


def test_department_staff_name_the_care_team_audited(
    doctor: Any, other_doctor: Any, admin: Any, department: Any
) -> None:
    patient = _patient("RAD-1", department)

    patient_set_care_team(patient=patient, members=[other_doctor], actor=doctor)

    assert _visible(other_doctor) == {"RAD-1"}
    event = AuditEvent.objects.get(action=Action.PATIENT_CARE_TEAM_CHANGED)
    assert (event.details["from"], event.details["to"]) == ([], [other_doctor.pk])
    with pytest.raises(EngineError):
        patient_set_care_team(patient=patient, members=[admin], actor=doctor)
    with pytest.raises(EngineError):
        patient_set_care_team(patient=patient, members=[], actor=other_doctor)


# --- The data migration ----------------------------------------------------------------------


def test_existing_clinical_users_and_patients_go_into_general(
    django_user_model: Any, admin: Any
) -> None:
    migration = __import__("patients.migrations.0004_general_department", fromlist=["into_general"])
    tech = django_user_model.objects.create_user(username="old-tech", role=Role.TECHNICIAN)
    doc = django_user_model.objects.create_user(username="old-doc", role=Role.DOCTOR)
    Patient.objects.create(id="OLD-1", name="Old One")

    migration.into_general(apps, None)

    general = Department.objects.get(slug="general")
    assert set(general.members.all()) == {tech, doc}
    assert [p.pk for p in general.patients.all()] == ["OLD-1"]
    assert _visible(doc) == {"OLD-1"}


def test_a_fresh_database_gets_no_general_department() -> None:
    migration = __import__("patients.migrations.0004_general_department", fromlist=["into_general"])

    migration.into_general(apps, None)

    assert not Department.objects.filter(slug="general").exists()
