"""Changing who sees a patient (departments, care team) through the API and the page.

Clinical staff of one of the patient's departments change it; a care-team member from
elsewhere may read it but not change it; another department gets 404; every change is audited
with the patient's reference. (The services themselves: test_departments.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import Department, Role
from audit.models import Action, AuditEvent
from patients.models import Patient

pytestmark = [pytest.mark.django_db, pytest.mark.own_departments]

URL = "/api/patients/RAD-1/access/"


@pytest.fixture
def patient(department: Department) -> Patient:
    patient = Patient.objects.create(id="RAD-1", name="Ada Lovelace")
    patient.departments.set([department])
    return patient


def _as(user: Any) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


def _slugs(patient: Patient) -> list[str]:
    return sorted(patient.departments.values_list("slug", flat=True))


def test_it_shows_departments_and_care_team(
    doctor: Any, other_doctor: Any, patient: Patient
) -> None:
    patient.care_team.add(other_doctor)

    response = _as(doctor).get(URL)

    assert response.status_code == 200
    assert response.json() == {
        "departments": [{"slug": "radiology", "name": "Radiology"}],
        "care_team": [{"username": "olga", "role": "doctor"}],
    }
    viewed = AuditEvent.objects.get(action=Action.PATIENT_VIEWED)
    assert viewed.details["view"] == "access" and viewed.target_id == patient.reference


def test_department_staff_add_a_department_and_a_care_team_member(
    technician: Any, other_doctor: Any, other_department: Department, patient: Patient
) -> None:
    response = _as(technician).patch(
        URL, {"departments": ["radiology", "cardiology"], "care_team": ["olga"]}, format="json"
    )

    assert response.status_code == 200, response.content
    assert [d["slug"] for d in response.json()["departments"]] == ["cardiology", "radiology"]
    assert _slugs(patient) == ["cardiology", "radiology"]
    assert list(patient.care_team.all()) == [other_doctor]
    moved = AuditEvent.objects.get(action=Action.PATIENT_DEPARTMENTS_CHANGED)
    named = AuditEvent.objects.get(action=Action.PATIENT_CARE_TEAM_CHANGED)
    for event in (moved, named):
        assert (event.actor, event.target_id) == (technician, patient.reference)
        assert "RAD-1" not in repr(event.details)
    assert moved.details["to"] == ["cardiology", "radiology"]
    assert named.details["to"] == [other_doctor.pk]


def test_removing_a_care_team_member_takes_the_record_away_from_them(
    doctor: Any, other_doctor: Any, patient: Patient
) -> None:
    patient.care_team.add(other_doctor)
    assert _as(other_doctor).get(URL).status_code == 200

    response = _as(doctor).patch(URL, {"care_team": []}, format="json")

    assert response.status_code == 200
    assert response.json()["care_team"] == []
    assert _as(other_doctor).get(URL).status_code == 404


def test_the_last_department_cannot_be_removed(doctor: Any, patient: Patient) -> None:
    response = _as(doctor).patch(URL, {"departments": []}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_departments"
    assert "at least one department" in response.json()["error"]["message"]
    assert _slugs(patient) == ["radiology"]
    assert not AuditEvent.objects.filter(action=Action.PATIENT_DEPARTMENTS_CHANGED).exists()


def test_a_change_is_all_or_nothing(doctor: Any, other_doctor: Any, patient: Patient) -> None:
    response = _as(doctor).patch(URL, {"departments": [], "care_team": ["olga"]}, format="json")

    assert response.status_code == 400
    assert not patient.care_team.exists()
    assert not AuditEvent.objects.filter(action=Action.PATIENT_CARE_TEAM_CHANGED).exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"departments": ["nowhere"]}, "There is no department with the slug nowhere."),
        ({"care_team": ["adam"]}, "No active technician or doctor has the username adam."),
        ({"care_team": ["nobody"]}, "No active technician or doctor has the username nobody."),
        ({"care_team": ["inactive"]}, "No active technician or doctor has the username inactive."),
        ({"id": "X"}, "This field cannot be changed here."),
        ({}, "Give departments, care_team or both."),
    ],
)
def test_it_refuses_unknown_or_non_clinical_names(
    doctor: Any,
    admin: Any,
    django_user_model: Any,
    patient: Patient,
    body: dict[str, Any],
    message: str,
) -> None:
    django_user_model.objects.create_user(username="inactive", role=Role.DOCTOR, is_active=False)

    response = _as(doctor).patch(URL, body, format="json")

    assert response.status_code == 400
    assert message in response.content.decode()
    assert _slugs(patient) == ["radiology"] and not patient.care_team.exists()


@pytest.mark.parametrize("persona", ["other_doctor", "other_technician"])
def test_another_department_gets_404(
    request: pytest.FixtureRequest, persona: str, patient: Patient
) -> None:
    api = _as(request.getfixturevalue(persona))

    assert api.get(URL).status_code == 404
    assert api.patch(URL, {"care_team": ["olga", "otto"]}, format="json").status_code == 404
    assert api.get("/api/patients/NO-SUCH/access/").status_code == 404
    assert not patient.care_team.exists()


def test_a_care_team_member_from_elsewhere_reads_but_cannot_change(
    other_doctor: Any, other_department: Department, patient: Patient
) -> None:
    patient.care_team.add(other_doctor)

    response = _as(other_doctor).patch(URL, {"departments": ["cardiology"]}, format="json")

    assert response.status_code == 403
    assert _slugs(patient) == ["radiology"]


@pytest.mark.parametrize("persona", ["admin", "outsider"])
def test_non_clinical_roles_get_403(
    request: pytest.FixtureRequest, persona: str, patient: Patient
) -> None:
    api = _as(request.getfixturevalue(persona))

    assert api.get(URL).status_code == 403
    assert api.patch(URL, {"care_team": []}, format="json").status_code == 403


# --- The page --------------------------------------------------------------------------------

PAGE = "/patients/RAD-1/access/"


def _signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_page_shows_and_changes_the_care_team(
    doctor: Any, other_doctor: Any, other_technician: Any, patient: Patient
) -> None:
    client = _signed_in(doctor)

    html = client.get(PAGE).content.decode()
    assert "Who sees Ada Lovelace" in html
    assert 'value="radiology" checked' in html and 'value="cardiology"' in html
    assert '<option value="olga">' in html and '<option value="adam">' not in html

    added = client.post(PAGE, {"action": "add_member", "member": "olga"}, follow=True)
    assert "olga added to the care team." in added.content.decode()
    assert 'data-team-member="olga"' in added.content.decode()
    client.post(PAGE, {"action": "add_member", "member": "otto"})
    assert set(patient.care_team.all()) == {other_doctor, other_technician}

    removed = client.post(PAGE, {"action": "remove_member", "member": "olga"}, follow=True)
    assert "olga removed from the care team." in removed.content.decode()
    assert list(patient.care_team.all()) == [other_technician]
    changes = AuditEvent.objects.filter(action=Action.PATIENT_CARE_TEAM_CHANGED)
    assert changes.count() == 3
    assert {event.target_id for event in changes} == {patient.reference}


def test_the_page_changes_departments_and_refuses_none(
    technician: Any, other_department: Department, patient: Patient
) -> None:
    client = _signed_in(technician)

    none = client.post(PAGE, {"action": "departments"})
    assert none.status_code == 400
    assert "A patient record must belong to at least one department." in none.content.decode()
    assert _slugs(patient) == ["radiology"]

    both = client.post(PAGE, {"action": "departments", "departments": ["radiology", "cardiology"]})
    assert both.status_code == 302 and both["Location"] == PAGE
    assert _slugs(patient) == ["cardiology", "radiology"]

    # Moving it out of their own department: the record is gone from their view.
    away = client.post(PAGE, {"action": "departments", "departments": ["cardiology"]}, follow=True)
    assert "no longer in your departments" in away.content.decode()
    assert client.get(PAGE).status_code == 404


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"action": "add_member", "member": "adam"}, "not an active technician or doctor"),
        ({"action": "add_member"}, "Choose a technician or doctor."),
        ({"action": "departments", "departments": ["nowhere"]}, "There is no department"),
        ({"action": "explode"}, "Unknown change"),
    ],
)
def test_the_page_says_what_is_wrong(
    doctor: Any, admin: Any, patient: Patient, data: dict[str, Any], message: str
) -> None:
    response = _signed_in(doctor).post(PAGE, data)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not patient.care_team.exists() and _slugs(patient) == ["radiology"]


def test_a_care_team_member_from_elsewhere_sees_the_page_read_only(
    other_doctor: Any, patient: Patient
) -> None:
    patient.care_team.add(other_doctor)
    client = _signed_in(other_doctor)

    html = client.get(PAGE).content.decode()
    assert "data-access-readonly" in html and "Save departments" not in html

    refused = client.post(PAGE, {"action": "remove_member", "member": "olga"})
    assert refused.status_code == 403
    assert "Only clinical staff of the patient" in refused.content.decode()
    assert list(patient.care_team.all()) == [other_doctor]


@pytest.mark.parametrize("persona", ["other_doctor", "other_technician"])
def test_the_page_is_404_for_another_department(
    request: pytest.FixtureRequest, persona: str, patient: Patient
) -> None:
    client = _signed_in(request.getfixturevalue(persona))

    assert client.get(PAGE).status_code == 404
    assert client.post(PAGE, {"action": "add_member", "member": "olga"}).status_code == 404
    assert not patient.care_team.exists()


def test_the_patient_page_links_to_it(doctor: Any, patient: Patient) -> None:
    html = _signed_in(doctor).get("/patients/RAD-1/").content.decode()

    assert f'href="{PAGE}"' in html


# --- Creating a patient whose hospital id another department already has --------------------


def _png() -> Any:
    import io

    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (90, 90, 90)).save(buffer, format="PNG")
    return SimpleUploadedFile("scan.png", buffer.getvalue(), content_type="image/png")


def _assert_neutral_refusal(body: str, patient: Patient) -> None:
    assert "already exists, but you do not have access to it" in body
    assert "emergency access" in body
    for leak in ("Radiology", "radiology", "Ada Lovelace", patient.reference):
        assert leak not in body


@pytest.mark.parametrize("with_images", [False, True])
def test_an_id_another_department_has_is_a_neutral_audited_409(
    other_technician: Any, patient: Patient, with_images: bool
) -> None:
    api = _as(other_technician)
    data: dict[str, Any] = {"id": "RAD-1", "name": "Someone Else"}
    if with_images:
        response = api.post("/api/patients/", {**data, "images": [_png()]}, format="multipart")
    else:
        response = api.post("/api/patients/", data, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "patient_exists"
    _assert_neutral_refusal(response.content.decode(), patient)
    # Nothing changed: not the record, not its departments, no scan.
    patient.refresh_from_db()
    assert patient.name == "Ada Lovelace" and _slugs(patient) == ["radiology"]
    assert not patient.scans.exists()
    refused = AuditEvent.objects.get(action=Action.PATIENT_CREATE_REFUSED)
    assert (refused.actor, refused.outcome) == (other_technician, "refused")
    assert (refused.target_type, refused.target_id) == ("patient", patient.reference)
    assert refused.details["reason"] == "exists_in_another_department"
    assert "RAD-1" not in repr(refused.details)


def test_an_id_of_ones_own_department_names_the_record(technician: Any, patient: Patient) -> None:
    response = _as(technician).post("/api/patients/", {"id": "RAD-1", "name": "X"}, format="json")

    assert response.status_code == 409
    assert "A patient with id 'RAD-1' already exists." in response.json()["error"]["message"]
    assert not AuditEvent.objects.filter(action=Action.PATIENT_CREATE_REFUSED).exists()


def test_the_home_page_form_gives_the_same_neutral_answer(
    other_technician: Any, patient: Patient
) -> None:
    response = _signed_in(other_technician).post(
        "/", {"id": "RAD-1", "name": "Someone Else", "age": "", "note": ""}
    )

    assert response.status_code == 400
    _assert_neutral_refusal(response.content.decode(), patient)
    assert AuditEvent.objects.filter(action=Action.PATIENT_CREATE_REFUSED).count() == 1
