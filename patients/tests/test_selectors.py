from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.http import Http404
from django.utils import timezone

from audit.models import Action, AuditEvent, Outcome
from audit.pseudonyms import search_term_hash
from patients.models import Patient, PatientNote
from patients.selectors import patient_get, patient_list, patient_lookup, patient_note_list

pytestmark = pytest.mark.django_db


def _ids(patients: Any) -> list[str]:
    return [p.id for p in patients]


@pytest.fixture
def ward(make_patient: Callable[..., Patient]) -> list[Patient]:
    now = timezone.now()
    made = [
        make_patient("MRN-100", "Ada Lovelace", age=36),
        make_patient("MRN-200", "Alan Turing", age=41),
        make_patient("X-300", "Grace Hopper", age=85),
        make_patient("X-400", "Lovelace Byron", age=None),
    ]
    # Spread creation times a day apart, oldest first, so the date filters have edges.
    for days_ago, patient in zip((3, 2, 1, 0), made, strict=True):
        Patient.objects.filter(pk=patient.pk).update(created_at=now - timedelta(days=days_ago))
    return made


def test_it_searches_id_and_name_ignoring_case(doctor: Any, ward: list[Patient]) -> None:
    assert sorted(_ids(patient_list(user=doctor, search="lovelace"))) == ["MRN-100", "X-400"]
    assert sorted(_ids(patient_list(user=doctor, search="x-3"))) == ["X-300"]
    assert sorted(_ids(patient_list(user=doctor, search="mrn"))) == ["MRN-100", "MRN-200"]
    assert _ids(patient_list(user=doctor, search="nobody")) == []


def test_it_filters_by_age_and_creation_time(doctor: Any, ward: list[Patient]) -> None:
    assert sorted(_ids(patient_list(user=doctor, min_age=40))) == ["MRN-200", "X-300"]
    assert sorted(_ids(patient_list(user=doctor, max_age=40))) == ["MRN-100"]
    assert _ids(patient_list(user=doctor, min_age=40, max_age=50)) == ["MRN-200"]

    second = Patient.objects.get(pk="MRN-200").created_at
    fourth = Patient.objects.get(pk="X-400").created_at
    # created_after is inclusive, created_before exclusive.
    assert sorted(_ids(patient_list(user=doctor, created_after=second, created_before=fourth))) == [
        "MRN-200",
        "X-300",
    ]


def test_it_orders_newest_first_by_default_and_on_request(doctor: Any, ward: list[Patient]) -> None:
    assert _ids(patient_list(user=doctor)) == ["X-400", "X-300", "MRN-200", "MRN-100"]
    assert _ids(patient_list(user=doctor, ordering="name")) == [
        "MRN-100",
        "MRN-200",
        "X-300",
        "X-400",
    ]
    assert _ids(patient_list(user=doctor, ordering="-id"))[0] == "X-400"
    with pytest.raises(ValueError):
        patient_list(user=doctor, ordering="note")


def test_it_counts_notes_per_patient(doctor: Any, ward: list[Patient]) -> None:
    PatientNote.objects.create(patient=ward[0], author=doctor, text="one")
    PatientNote.objects.create(patient=ward[0], author=doctor, text="two")
    counts = {p.id: p.note_count for p in patient_list(user=doctor)}
    assert counts == {"MRN-100": 2, "MRN-200": 0, "X-300": 0, "X-400": 0}


def test_it_audits_the_search_term_and_filters(doctor: Any, ward: list[Patient]) -> None:
    patient_list(user=doctor, search=" hopper ", min_age=18)

    event = AuditEvent.objects.get(action=Action.PATIENT_LISTED)
    assert event.actor == doctor
    assert event.outcome == Outcome.SUCCESS
    # The term is stored as its keyed hash, never in clear (audit.pseudonyms).
    assert event.details == {
        "search_hmac": search_term_hash("hopper"),
        "filters": {"min_age": 18},
        "ordering": "-created_at",
        "pseudonyms": 1,
    }
    assert "hopper" not in str(event.details)


@pytest.mark.parametrize("persona", ["admin", "outsider"])
def test_it_shows_non_clinical_users_nothing(
    request: pytest.FixtureRequest, persona: str, ward: list[Patient]
) -> None:
    user = request.getfixturevalue(persona)

    assert list(patient_list(user=user)) == []
    assert AuditEvent.objects.get(action=Action.PATIENT_LISTED).outcome == Outcome.REFUSED
    with pytest.raises(Http404):
        patient_get(user=user, patient_id="MRN-100")
    with pytest.raises(Http404):
        patient_note_list(user=user, patient_id="MRN-100")


def test_it_gets_one_patient_and_audits_the_view(technician: Any, patient: Patient) -> None:
    found = patient_get(user=technician, patient_id=patient.id)

    assert (found.pk, found.note_count) == (patient.pk, 0)
    event = AuditEvent.objects.get(action=Action.PATIENT_VIEWED)
    assert (event.actor, event.target_id) == (technician, patient.reference)


def test_it_looks_up_without_auditing(technician: Any, patient: Patient) -> None:
    assert patient_lookup(user=technician, patient_id=patient.id) == patient
    assert not AuditEvent.objects.exists()
    with pytest.raises(Http404):
        patient_lookup(user=technician, patient_id="MRN-missing")


def test_it_lists_notes_oldest_first(doctor: Any, patient: Patient) -> None:
    first = PatientNote.objects.create(patient=patient, author=doctor, text="first")
    second = PatientNote.objects.create(patient=patient, author=doctor, text="second")

    assert list(patient_note_list(user=doctor, patient_id=patient.id)) == [first, second]
    assert AuditEvent.objects.get(action=Action.PATIENT_VIEWED).details == {
        "part": "notes",
        "routine": "notes",
        "window_minutes": 15,
        "pseudonyms": 1,
    }


def test_it_shows_a_deactivated_technician_nothing(technician: Any, patient: Patient) -> None:
    technician.is_active = False
    technician.save(update_fields=["is_active"])

    assert list(patient_list(user=technician)) == []
    with pytest.raises(Http404):
        patient_lookup(user=technician, patient_id=patient.id)
