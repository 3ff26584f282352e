from __future__ import annotations

from typing import Any

import pytest

from audit.models import Action, AuditEvent
from engine.errors import EngineError
from patients.models import Patient, PatientNote
from patients.services import patient_create, patient_note_add, patient_update

pytestmark = pytest.mark.django_db


def test_it_creates_a_patient_and_audits_it(technician: Any) -> None:
    patient = patient_create(id="MRN-42", name="  Ada Lovelace ", age=36, created_by=technician)

    stored = Patient.objects.get(pk="MRN-42")
    assert (stored.name, stored.age, stored.note, stored.created_by) == (
        "Ada Lovelace",
        36,
        "",
        technician,
    )
    event = AuditEvent.objects.get(action=Action.PATIENT_CREATED)
    assert (event.actor, event.target_type, event.target_id) == (
        technician,
        "patient",
        patient.reference,
    )
    assert event.details == {"departments": ["radiology"], "pseudonyms": 1}
    assert list(stored.departments.values_list("slug", flat=True)) == ["radiology"]


def test_it_refuses_a_duplicate_id_with_409(technician: Any, patient: Patient) -> None:
    with pytest.raises(EngineError) as caught:
        patient_create(id=patient.id, name="Someone Else", created_by=technician)

    assert (caught.value.code, caught.value.status_code) == ("patient_exists", 409)
    assert Patient.objects.get(pk=patient.id).name == "Grace Hopper"
    assert not AuditEvent.objects.filter(action=Action.PATIENT_CREATED).exists()


def test_it_keeps_the_callers_transaction_usable_after_a_duplicate(
    technician: Any, patient: Patient
) -> None:
    with pytest.raises(EngineError):
        patient_create(id=patient.id, name="Someone Else", created_by=technician)
    # The test runs inside a transaction: a broken one would refuse this query.
    assert patient_create(id="MRN-0002", name="Next", created_by=technician).pk == "MRN-0002"


@pytest.mark.parametrize(
    ("bad_id", "message_part"),
    [
        ("", "empty"),
        ("A" * 65, "64"),
        ("MRN/1", "slashes"),
        ("MRN\\1", "slashes"),
        (" MRN1", "space"),
        ("MRN1\t", "space"),
        ("MRN\n1", "printable"),
        ("MRN\u200b1", "printable"),
        ("..", "'..'"),
    ],
)
def test_it_refuses_a_malformed_id(technician: Any, bad_id: str, message_part: str) -> None:
    with pytest.raises(EngineError) as caught:
        patient_create(id=bad_id, name="Ada", created_by=technician)

    assert caught.value.code == "invalid_patient_id"
    assert message_part in caught.value.message
    assert not Patient.objects.exists()


def test_it_accepts_ids_with_punctuation_and_accents(technician: Any) -> None:
    for value in ("A" * 64, "MRN 2024-001.x", "Hôpital#12?"):
        assert patient_create(id=value, name="Ada", created_by=technician).pk == value


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"name": "   "}, "invalid_name"),
        ({"name": "N" * 201}, "invalid_name"),
        ({"name": "Ada", "age": 151}, "invalid_age"),
        ({"name": "Ada", "age": -1}, "invalid_age"),
        ({"name": "Ada", "age": True}, "invalid_age"),
        ({"name": "Ada", "note": "x" * 10_001}, "invalid_note"),
    ],
)
def test_it_refuses_bad_fields(technician: Any, fields: dict[str, Any], code: str) -> None:
    with pytest.raises(EngineError) as caught:
        patient_create(id="MRN-1", created_by=technician, **fields)
    assert caught.value.code == code


@pytest.mark.parametrize("persona", ["doctor", "admin", "outsider"])
def test_it_lets_only_technicians_create(request: pytest.FixtureRequest, persona: str) -> None:
    user = request.getfixturevalue(persona)
    with pytest.raises(EngineError) as caught:
        patient_create(id="MRN-1", name="Ada", created_by=user)
    assert caught.value.status_code == 403
    assert not Patient.objects.exists()


def test_it_updates_only_changed_fields_and_audits_names_not_values(
    technician: Any, patient: Patient
) -> None:
    before = Patient.objects.get(pk=patient.pk).updated_at

    patient_update(patient=patient, actor=technician, name="Grace B. Hopper", age=54)

    stored = Patient.objects.get(pk=patient.pk)
    assert (stored.name, stored.age, stored.note) == ("Grace B. Hopper", 54, "Allergic to latex.")
    assert stored.updated_at > before
    event = AuditEvent.objects.get(action=Action.PATIENT_UPDATED)
    assert event.details == {"changed": ["name"], "pseudonyms": 1}
    assert "Grace" not in str(event.details)


def test_it_can_clear_the_age(technician: Any, patient: Patient) -> None:
    patient_update(patient=patient, actor=technician, age=None)
    assert Patient.objects.get(pk=patient.pk).age is None


def test_it_refuses_to_change_the_id(technician: Any, patient: Patient) -> None:
    with pytest.raises(TypeError):
        patient_update(patient=patient, actor=technician, id="MRN-9999")
    assert Patient.objects.filter(pk="MRN-0001").exists()


def test_it_lets_only_technicians_update(doctor: Any, patient: Patient) -> None:
    with pytest.raises(EngineError) as caught:
        patient_update(patient=patient, actor=doctor, name="Changed")
    assert caught.value.status_code == 403
    assert Patient.objects.get(pk=patient.pk).name == "Grace Hopper"


def test_it_adds_a_doctors_note_and_audits_it(doctor: Any, patient: Patient) -> None:
    note = patient_note_add(patient=patient, author=doctor, text="  Follow up in 6 weeks. ")

    assert PatientNote.objects.get().text == "Follow up in 6 weeks."
    event = AuditEvent.objects.get(action=Action.PATIENT_NOTE_ADDED)
    assert (event.actor, event.target_id, event.details) == (
        doctor,
        patient.reference,
        {"note_id": note.id, "pseudonyms": 1},
    )


@pytest.mark.parametrize("text", ["", "   ", "x" * 10_001])
def test_it_refuses_an_empty_or_huge_note(doctor: Any, patient: Patient, text: str) -> None:
    with pytest.raises(EngineError) as caught:
        patient_note_add(patient=patient, author=doctor, text=text)
    assert caught.value.code == "invalid_text"
    assert not PatientNote.objects.exists()


def test_it_lets_only_doctors_add_notes(technician: Any, patient: Patient) -> None:
    with pytest.raises(EngineError) as caught:
        patient_note_add(patient=patient, author=technician, text="Not mine to write.")
    assert caught.value.status_code == 403
    assert not PatientNote.objects.exists()


def test_it_hides_the_hospital_id_from_str(patient: Patient) -> None:
    assert patient.id not in str(patient)
    assert str(patient) == f"Patient {patient.reference}"
    assert len(patient.reference) == 12
