from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from audit.models import Action, AuditEvent
from patients.models import Patient

pytestmark = pytest.mark.django_db


@pytest.fixture
def patient(technician: Any) -> Patient:
    return Patient.objects.create(id="MRN-0042", name="Grace Hopper", age=54, created_by=technician)


def test_it_redirects_anonymous_visitors_to_login(client: Client) -> None:
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"


def test_it_shows_a_login_form_with_labels(client: Client) -> None:
    response = client.get("/login/")

    assert response.status_code == 200
    html = response.content.decode()
    assert '<label for="id_username">' in html and '<label for="id_password">' in html
    assert "<script" not in html  # Content-Security-Policy without inline scripts comes later.


def test_it_logs_in_with_a_session_and_audits_it(
    client: Client, technician: Any, password: str
) -> None:
    response = client.post("/login/", {"username": technician.username, "password": password})

    assert response.status_code == 302
    assert response["Location"] == "/"
    event = AuditEvent.objects.get(action=Action.LOGIN)
    assert event.actor_id == technician.pk
    assert event.details == {"method": "session"}


def test_it_audits_a_failed_session_login(client: Client, technician: Any) -> None:
    response = client.post("/login/", {"username": technician.username, "password": "nope-nope"})

    assert response.status_code == 200
    assert b"correct username and password" in response.content
    assert "_auth_user_id" not in client.session
    event = AuditEvent.objects.get(action=Action.LOGIN_FAILED)
    assert event.actor_username == technician.username
    assert not AuditEvent.objects.filter(action=Action.LOGIN).exists()


def test_it_refuses_a_session_login_for_an_inactive_user(
    client: Client, technician: Any, password: str
) -> None:
    technician.is_active = False
    technician.save(update_fields=["is_active"])

    response = client.post("/login/", {"username": technician.username, "password": password})

    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_it_logs_out_only_by_post(client: Client, doctor: Any) -> None:
    client.force_login(doctor)

    assert client.get("/logout/").status_code == 405
    response = client.post("/logout/")

    assert response.status_code == 302
    assert response["Location"] == "/login/"
    assert client.get("/").status_code == 302
    assert AuditEvent.objects.filter(action=Action.LOGOUT, actor_id=doctor.pk).exists()


def test_it_shows_a_technician_patients_and_a_create_form(
    client: Client, technician: Any, patient: Patient
) -> None:
    client.force_login(technician)

    response = client.get("/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "Grace Hopper" in html and "MRN-0042" in html
    assert "Create patient" in html
    assert 'name="name"' in html
    assert "Lab technician" in html  # the role in the header
    assert "/admin/" not in html
    assert AuditEvent.objects.filter(action=Action.PATIENT_LISTED, actor_id=technician.pk).exists()


def test_it_creates_a_patient_from_the_technician_home(client: Client, technician: Any) -> None:
    client.force_login(technician)

    response = client.post("/", {"id": "MRN-7", "name": "Alan Turing", "age": "41", "note": ""})

    assert response.status_code == 302
    created = Patient.objects.get(pk="MRN-7")
    assert created.name == "Alan Turing" and created.age == 41
    assert created.created_by_id == technician.pk
    assert "Patient MRN-7 created." in client.get("/").content.decode()


def test_it_shows_service_errors_next_to_the_field(
    client: Client, technician: Any, patient: Patient
) -> None:
    client.force_login(technician)

    response = client.post("/", {"id": patient.id, "name": "Someone Else"})

    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="id_id_error"' in html and "already exists" in html
    assert 'aria-invalid="true"' in html
    assert Patient.objects.get(pk=patient.id).name == "Grace Hopper"


def test_it_searches_patients(
    client: Client, doctor: Any, patient: Patient, technician: Any
) -> None:
    Patient.objects.create(id="MRN-0043", name="Edsger Dijkstra", created_by=technician)
    client.force_login(doctor)

    html = client.get("/", {"q": "dijk"}).content.decode()

    assert "Edsger Dijkstra" in html and "Grace Hopper" not in html


def test_it_shows_a_doctor_patients_without_a_create_form(
    client: Client, doctor: Any, patient: Patient
) -> None:
    client.force_login(doctor)

    response = client.get("/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "Grace Hopper" in html
    assert "Create patient" not in html
    assert "Doctor" in html


@pytest.mark.parametrize("persona", ["doctor", "admin", "outsider"])
def test_it_refuses_patient_creation_for_other_roles(
    client: Client, request: Any, persona: str
) -> None:
    client.force_login(request.getfixturevalue(persona))

    response = client.post("/", {"id": "MRN-9", "name": "Nobody"})

    assert response.status_code == 403
    assert not Patient.objects.filter(pk="MRN-9").exists()


def test_it_shows_an_admin_links_and_no_patients(
    client: Client, admin: Any, patient: Patient, django_user_model: Any
) -> None:
    django_user_model.objects.create_user(username="waiting", role="doctor", is_active=False)
    client.force_login(admin)

    response = client.get("/")

    html = response.content.decode()
    assert response.status_code == 200
    assert 'href="/admin/"' in html
    assert 'href="/manage/audit/"' in html and 'href="/manage/statistics/"' in html
    assert "1</strong> account waiting for activation" in html
    assert "Grace Hopper" not in html and "MRN-0042" not in html


def test_it_shows_a_user_without_a_role_nothing(
    client: Client, outsider: Any, patient: Patient
) -> None:
    client.force_login(outsider)

    html = client.get("/").content.decode()

    assert "no role yet" in html
    assert "Grace Hopper" not in html


def test_it_serves_no_inline_scripts_or_styles(client: Client, technician: Any) -> None:
    client.force_login(technician)

    html = client.get("/").content.decode()

    # Scripts only from files (the session timer), never inline.
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/static/js/session.js" defer>']
    assert "<style" not in html and " style=" not in html
