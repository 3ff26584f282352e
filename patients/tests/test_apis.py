from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from audit.models import Action, AuditEvent
from audit.pseudonyms import search_term_hash
from patients.models import Patient, PatientNote

pytestmark = pytest.mark.django_db

LIST = "/api/patients/"


def _detail(patient_id: str) -> str:
    return f"/api/patients/{quote(patient_id, safe='')}/"


def _notes(patient_id: str) -> str:
    return f"{_detail(patient_id)}notes/"


# (method, url builder, body, {persona: expected status}); anonymous is always 401 and the
# admin and the outsider always 403, so only the clinical roles vary.
ENDPOINTS = [
    ("get", lambda p: LIST, None, {"technician": 200, "doctor": 200}),
    ("post", lambda p: LIST, {"id": "MRN-NEW", "name": "New"}, {"technician": 201, "doctor": 403}),
    ("get", _detail, None, {"technician": 200, "doctor": 200}),
    ("patch", _detail, {"age": 55}, {"technician": 200, "doctor": 403}),
    ("get", _notes, None, {"technician": 200, "doctor": 200}),
    ("post", _notes, {"text": "Seen."}, {"technician": 403, "doctor": 201}),
]
PERSONAS = ["anonymous", "outsider", "admin", "technician", "doctor"]


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize(
    ("method", "url", "body", "clinical"), ENDPOINTS, ids=lambda v: v if isinstance(v, str) else ""
)
def test_it_gives_each_role_its_access(
    request: pytest.FixtureRequest,
    api: APIClient,
    patient: Patient,
    persona: str,
    method: str,
    url: Callable[[str], str],
    body: dict[str, Any] | None,
    clinical: dict[str, int],
) -> None:
    expected = {"anonymous": 401, "outsider": 403, "admin": 403, **clinical}[persona]
    if persona != "anonymous":
        api.force_authenticate(request.getfixturevalue(persona))
    before = (
        list(Patient.objects.values_list("id", "name", "age", "note")),
        PatientNote.objects.count(),
    )

    response = getattr(api, method)(url(patient.id), body, format="json")

    assert response.status_code == expected, response.content
    if expected in (401, 403):
        assert set(response.json()["error"]) == {"code", "message"}
        assert "Grace" not in response.content.decode()
        after = (
            list(Patient.objects.values_list("id", "name", "age", "note")),
            PatientNote.objects.count(),
        )
        assert after == before


def test_it_creates_a_patient_from_json(api: APIClient, technician: Any) -> None:
    api.force_authenticate(technician)
    body = {"id": "MRN-77", "name": "Ada Lovelace", "age": 36, "note": "Left-handed."}

    response = api.post(LIST, body, format="json")

    assert response.status_code == 201
    assert response.json() | {"created_at": None, "updated_at": None} == {
        **body,
        "created_by": "tina",
        "note_count": 0,
        "created_at": None,
        "updated_at": None,
    }
    assert Patient.objects.get(pk="MRN-77").created_by == technician
    event = AuditEvent.objects.get(action=Action.PATIENT_CREATED)
    assert (event.target_id, event.ip) == (Patient(id="MRN-77").reference, "127.0.0.1")


def test_it_creates_a_patient_from_a_multipart_form(api: APIClient, technician: Any) -> None:
    api.force_authenticate(technician)

    response = api.post(LIST, {"id": "MRN-78", "name": "Alan Turing", "age": ""})

    assert response.status_code == 201, response.content
    assert Patient.objects.get(pk="MRN-78").age is None


def test_it_refuses_a_duplicate_id_with_409(
    api: APIClient, technician: Any, patient: Patient
) -> None:
    api.force_authenticate(technician)

    response = api.post(LIST, {"id": patient.id, "name": "Impostor"}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "patient_exists"
    assert Patient.objects.get(pk=patient.id).name == "Grace Hopper"


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"name": "No Id"}, "invalid", "id"),
        ({"id": "MRN-1"}, "invalid", "name"),
        ({"id": "MRN-1", "name": "A", "age": "old"}, "invalid", "age"),
        ({"id": "MRN-1", "name": "A", "age": 200}, "invalid", "age"),
        ({"id": "A" * 65, "name": "A"}, "invalid", "id"),
        ({"id": "MRN/1", "name": "A"}, "invalid_patient_id", None),
        ({"id": "MRN\u00a01", "name": "A"}, "invalid_patient_id", None),
    ],
)
def test_it_refuses_bad_input_with_400(
    api: APIClient, technician: Any, body: dict[str, Any], code: str, field: str | None
) -> None:
    api.force_authenticate(technician)

    response = api.post(LIST, body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    if field is not None:
        assert field in error["fields"]
    assert not Patient.objects.exists()


def test_it_refuses_a_non_json_body(api: APIClient, technician: Any) -> None:
    api.force_authenticate(technician)
    response = api.post(LIST, "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_it_shows_one_patient_and_audits_the_view(
    api: APIClient, doctor: Any, patient: Patient
) -> None:
    api.force_authenticate(doctor)

    response = api.get(_detail(patient.id))

    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["name"], body["age"], body["note"]) == (
        "MRN-0001",
        "Grace Hopper",
        54,
        "Allergic to latex.",
    )
    event = AuditEvent.objects.get(action=Action.PATIENT_VIEWED)
    assert (event.actor, event.target_id) == (doctor, patient.reference)


def test_it_finds_ids_that_need_url_escaping(
    api: APIClient, technician: Any, make_patient: Callable[..., Patient]
) -> None:
    make_patient("Hôpital #12?", "Ada")
    api.force_authenticate(technician)

    response = api.get(_detail("Hôpital #12?"))

    assert response.status_code == 200
    assert response.json()["id"] == "Hôpital #12?"


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("get", _detail, None),
        ("patch", _detail, {"name": "X"}),
        ("get", _notes, None),
        ("post", _notes, {"text": "X"}),
    ],
)
def test_it_answers_404_for_a_missing_patient(
    api: APIClient,
    technician: Any,
    doctor: Any,
    method: str,
    url: Callable[[str], str],
    body: dict[str, Any] | None,
) -> None:
    # Each request by a role that may make it, so the 404 is about the patient.
    api.force_authenticate(doctor if url is _notes and method == "post" else technician)

    response = getattr(api, method)(url("MRN-missing"), body, format="json")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert not AuditEvent.objects.filter(action__startswith="patient_").exists()


def test_it_updates_a_patient_and_audits_it(
    api: APIClient, technician: Any, patient: Patient
) -> None:
    api.force_authenticate(technician)

    response = api.patch(_detail(patient.id), {"age": 55, "note": ""}, format="json")

    assert response.status_code == 200
    assert (response.json()["age"], response.json()["note"]) == (55, "")
    stored = Patient.objects.get(pk=patient.id)
    assert (stored.name, stored.age, stored.note) == ("Grace Hopper", 55, "")
    event = AuditEvent.objects.get(action=Action.PATIENT_UPDATED)
    assert event.details == {"changed": ["age", "note"], "pseudonyms": 1}
    assert not AuditEvent.objects.filter(action=Action.PATIENT_VIEWED).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [({"id": "MRN-9"}, "id"), ({"name": ""}, "name"), ({"age": -3}, "age")],
)
def test_it_refuses_a_bad_update(
    api: APIClient, technician: Any, patient: Patient, body: dict[str, Any], field: str
) -> None:
    api.force_authenticate(technician)

    response = api.patch(_detail(patient.id), body, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert Patient.objects.filter(pk="MRN-0001", name="Grace Hopper", age=54).exists()


def test_it_does_not_allow_put_or_delete(api: APIClient, technician: Any, patient: Patient) -> None:
    api.force_authenticate(technician)
    assert api.put(_detail(patient.id), {"name": "X"}, format="json").status_code == 405
    assert api.delete(_detail(patient.id)).status_code == 405
    assert Patient.objects.filter(pk=patient.id).exists()


def test_it_searches_filters_and_orders_the_list(
    api: APIClient, doctor: Any, make_patient: Callable[..., Patient]
) -> None:
    make_patient("MRN-1", "Ada Lovelace", age=36)
    make_patient("MRN-2", "Alan Turing", age=41)
    make_patient("LOVE-3", "Grace Hopper", age=85)
    api.force_authenticate(doctor)

    def ids(**params: Any) -> list[str]:
        response = api.get(LIST, params)
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    assert ids(q="love", ordering="id") == ["LOVE-3", "MRN-1"]
    assert ids(min_age=40, ordering="-age") == ["LOVE-3", "MRN-2"]
    assert ids(created_after="2000-01-01", max_age=40) == ["MRN-1"]
    assert ids(created_before="2000-01-01") == []
    event = AuditEvent.objects.filter(action=Action.PATIENT_LISTED).first()
    assert event is not None
    assert event.details["search_hmac"] == search_term_hash("love")
    assert "search" not in event.details


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"min_age": 50, "max_age": 40}, "max_age"),
        ({"min_age": "x"}, "min_age"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_after": "2026-02-01", "created_before": "2026-01-01"}, "created_before"),
        ({"ordering": "note"}, "ordering"),
    ],
)
def test_it_refuses_bad_filters(
    api: APIClient, doctor: Any, params: dict[str, Any], field: str
) -> None:
    api.force_authenticate(doctor)

    response = api.get(LIST, params)

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert not AuditEvent.objects.filter(action=Action.PATIENT_LISTED).exists()


def test_it_paginates_the_list(api: APIClient, technician: Any, department: Any) -> None:
    patients = Patient.objects.bulk_create(
        Patient(id=f"MRN-{n:03}", name=f"Patient {n}", created_by=technician) for n in range(27)
    )
    department.patients.add(*patients)  # bulk_create sends no post_save
    api.force_authenticate(technician)

    first = api.get(LIST, {"ordering": "id"}).json()
    second = api.get(LIST, {"ordering": "id", "page": 2}).json()

    assert first["count"] == 27
    assert len(first["results"]) == 25
    assert first["next"] is not None and "page=2" in first["next"]
    assert [row["id"] for row in second["results"]] == ["MRN-025", "MRN-026"]
    assert second["next"] is None
    missing = api.get(LIST, {"page": 3})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def _list_queries(api: APIClient) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert api.get(LIST).status_code == 200
    return len(queries)


def test_it_lists_without_a_query_per_patient(
    api: APIClient,
    technician: Any,
    doctor: Any,
    django_assert_max_num_queries: Any,
) -> None:
    def add(start: int, count: int) -> None:
        for n in range(start, start + count):
            patient = Patient.objects.create(id=f"MRN-{n}", name=f"P {n}", created_by=technician)
            PatientNote.objects.create(patient=patient, author=doctor, text="note")

    api.force_authenticate(doctor)
    add(0, 2)
    few = _list_queries(api)
    add(2, 20)
    assert _list_queries(api) == few
    # Page count, page rows, the audit append (savepoint, lock, insert, head update,
    # release): five of the seven are the audit log; and the check for emergency grants
    # (patients.emergency: a list by a grant holder is flagged), one per request.
    with django_assert_max_num_queries(8):
        response = api.get(LIST)
    assert [row["note_count"] for row in response.json()["results"]] == [1] * 22
    assert {row["created_by"] for row in response.json()["results"]} == {"tina"}


def test_it_adds_and_lists_doctors_notes(
    api: APIClient, doctor: Any, technician: Any, patient: Patient
) -> None:
    api.force_authenticate(doctor)

    created = api.post(_notes(patient.id), {"text": "Follow up in 6 weeks."}, format="json")

    assert created.status_code == 201
    assert created.json()["author"] == "doris"
    assert AuditEvent.objects.get(action=Action.PATIENT_NOTE_ADDED).target_id == patient.reference
    api.force_authenticate(technician)
    listed = api.get(_notes(patient.id)).json()
    assert [(n["text"], n["author"]) for n in listed["results"]] == [
        ("Follow up in 6 weeks.", "doris")
    ]
    assert api.get(_detail(patient.id)).json()["note_count"] == 1


def test_it_refuses_an_empty_note(api: APIClient, doctor: Any, patient: Patient) -> None:
    api.force_authenticate(doctor)
    response = api.post(_notes(patient.id), {"text": "   "}, format="json")
    assert response.status_code == 400
    assert not PatientNote.objects.exists()


def test_it_audits_refused_requests(api: APIClient, admin: Any, patient: Patient) -> None:
    api.force_authenticate(admin)
    api.get(_detail(patient.id))
    event = AuditEvent.objects.get(action=Action.REQUEST_REFUSED)
    assert (event.actor, event.details["status"]) == (admin, 403)
    assert not AuditEvent.objects.filter(action=Action.PATIENT_VIEWED).exists()
