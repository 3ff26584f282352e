"""Two-factor login (TOTP, django-otp) with real codes: enrolment, the session code step, the
JWT `otp` field, the admin requirement and the admin site."""

from __future__ import annotations

import re
from base64 import b32encode
from typing import Any

import pytest
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.tests.otp_codes import code, enrol, wrong_code
from audit.models import Action, AuditEvent, Outcome

pytestmark = pytest.mark.django_db

TOKEN = "/api/auth/token/"


def _password_step(client: Client, user: Any, password: str) -> Any:
    return client.post("/login/", {"username": user.username, "password": password})


def test_it_enrols_with_a_server_made_qr_code_and_the_secret_as_text(
    client: Client, doctor: Any
) -> None:
    client.force_login(doctor)

    page = client.get("/account/2fa/")

    assert page.status_code == 200
    html = page.content.decode()
    # Drawn here, inline: no image fetched from anywhere else carries the secret.
    assert "<svg" in html and "otpauth://" not in html and 'src="http' not in html
    device = TOTPDevice.objects.get(user=doctor)
    assert not device.confirmed
    secret = b32encode(device.bin_key).decode().rstrip("=")
    shown = re.search(r"data-otp-secret>([A-Z2-7 ]+)<", html)
    assert shown is not None and shown.group(1).replace(" ", "") == secret

    response = client.post("/account/2fa/", {"code": code(device)})

    assert response.status_code == 302
    device.refresh_from_db()
    assert device.confirmed
    event = AuditEvent.objects.get(action=Action.ADMIN_CHANGE, target_id=str(doctor.pk))
    assert event.details == {"change": "otp_enrolled"}
    assert client.get("/").status_code == 200  # The session is verified by the enrolment.


def test_it_refuses_a_wrong_enrolment_code_and_audits_it(client: Client, doctor: Any) -> None:
    client.force_login(doctor)
    client.get("/account/2fa/")
    device = TOTPDevice.objects.get(user=doctor)

    response = client.post("/account/2fa/", {"code": wrong_code(device)})

    assert response.status_code == 400
    device.refresh_from_db()
    assert not device.confirmed
    event = AuditEvent.objects.get(action=Action.ADMIN_CHANGE)
    assert event.outcome == Outcome.FAILURE
    assert event.details["reason"] == "otp_invalid"


def test_it_asks_for_the_code_after_the_password_and_only_then_logs_in(
    client: Client, doctor: Any, password: str
) -> None:
    device = enrol(doctor)

    first = _password_step(client, doctor, password)

    assert first.status_code == 302 and first["Location"] == "/login/otp/"
    assert "_auth_user_id" not in client.session
    assert not AuditEvent.objects.filter(action=Action.LOGIN).exists()
    assert client.get("/")["Location"].startswith("/login/")

    second = client.post("/login/otp/", {"code": code(device)})

    assert second.status_code == 302 and second["Location"] == "/"
    assert client.session["_auth_user_id"] == str(doctor.pk)
    assert client.get("/").status_code == 200
    assert AuditEvent.objects.get(action=Action.LOGIN).actor_id == doctor.pk


def test_it_refuses_a_wrong_code_at_the_second_step_and_audits_it(
    client: Client, doctor: Any, password: str
) -> None:
    device = enrol(doctor)
    _password_step(client, doctor, password)

    response = client.post("/login/otp/", {"code": wrong_code(device)})

    assert response.status_code == 400
    assert "_auth_user_id" not in client.session
    failed = AuditEvent.objects.get(action=Action.LOGIN_FAILED)
    assert failed.actor_username == doctor.username
    assert failed.details == {"reason": "otp_invalid"}


def test_it_refuses_a_code_used_once_already(client: Client, doctor: Any, password: str) -> None:
    device = enrol(doctor)
    used = code(device)
    _password_step(client, doctor, password)
    assert client.post("/login/otp/", {"code": used}).status_code == 302
    client.post("/logout/")

    _password_step(client, doctor, password)
    response = client.post("/login/otp/", {"code": used})

    assert response.status_code == 400
    assert "_auth_user_id" not in client.session


def test_it_sends_the_code_step_back_to_the_password_without_one(client: Client) -> None:
    assert client.get("/login/otp/")["Location"] == "/login/"
    assert client.post("/login/otp/", {"code": "123456"})["Location"] == "/login/"


def test_it_sends_an_admin_without_a_device_to_enrolment_before_anything_else(
    client: Client, admin: Any, password: str
) -> None:
    assert _password_step(client, admin, password).status_code == 302

    assert client.get("/")["Location"] == "/account/2fa/"
    assert client.get("/admin/").status_code == 302
    api = client.get("/api/audit/events/")
    assert api.status_code == 403
    assert api.json()["error"]["code"] == "otp_enrolment_required"

    client.get("/account/2fa/")
    device = TOTPDevice.objects.get(user=admin)
    assert client.post("/account/2fa/", {"code": code(device)}).status_code == 302

    assert client.get("/").status_code == 200
    assert client.get("/admin/").status_code == 200
    assert client.get("/api/audit/events/").status_code == 200


def test_it_keeps_an_unverified_admin_session_out_of_the_admin_site(
    client: Client, admin: Any
) -> None:
    enrol(admin)
    # A session logged in some other way than the two-step login (not verified).
    client.post("/login/", {"username": "x", "password": "y"})
    from django.contrib.auth import SESSION_KEY

    session = client.session
    session[SESSION_KEY] = str(admin.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = admin.get_session_auth_hash()
    session.save()

    response = client.get("/admin/")

    assert response.status_code == 302
    assert response["Location"].startswith("/login/otp/")
    assert client.get("/api/audit/events/").json()["error"]["code"] == "otp_required"


def test_it_lets_the_admin_site_login_in_only_with_the_code(
    client: Client, admin: Any, password: str, settings: Any
) -> None:
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # No back-off after the wrong code in this test.
    device = enrol(admin)
    data = {"username": admin.username, "password": password}

    assert client.post("/admin/login/?next=/admin/", data).status_code == 200
    assert (
        client.post("/admin/login/", {**data, "otp_token": wrong_code(device)}).status_code == 200
    )
    assert "_auth_user_id" not in client.session

    response = client.post("/admin/login/?next=/admin/", {**data, "otp_token": code(device)})

    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200


def test_it_needs_the_otp_field_at_the_jwt_endpoint_once_enrolled(
    api: Any, technician: Any, password: str, settings: Any
) -> None:
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # No back-off after the wrong code in this test.
    device = enrol(technician)
    body = {"username": technician.username, "password": password}

    missing = api.post(TOKEN, body, format="json")
    wrong = api.post(TOKEN, {**body, "otp": wrong_code(device)}, format="json")
    right = api.post(TOKEN, {**body, "otp": code(device)}, format="json")

    assert missing.status_code == 401 and missing.json()["error"]["code"] == "otp_required"
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "otp_invalid"
    assert right.status_code == 200 and set(right.json()) == {"access", "refresh"}
    failed = AuditEvent.objects.get(action=Action.LOGIN_FAILED)
    assert failed.details == {"reason": "otp_invalid"}
    login = AuditEvent.objects.get(action=Action.LOGIN)
    assert login.details == {"method": "jwt", "otp": True}


def test_it_refuses_a_jwt_login_for_an_admin_without_a_device(
    api: Any, admin: Any, password: str
) -> None:
    response = api.post(TOKEN, {"username": admin.username, "password": password}, format="json")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "otp_enrolment_required"


def test_it_lets_a_doctor_turn_it_off_with_a_code_but_not_an_admin(
    client: Client, doctor: Any, admin: Any
) -> None:
    device = enrol(doctor)
    client.force_login(doctor)
    assert client.post("/account/2fa/", {"code": code(device)}).status_code == 302
    assert not TOTPDevice.objects.filter(user=doctor).exists()

    admin_client = Client()
    admin_client.force_login(admin)
    admin_device = TOTPDevice.objects.get(user=admin)
    response = admin_client.post("/account/2fa/", {"code": code(admin_device)})
    assert response.status_code == 400
    assert TOTPDevice.objects.filter(user=admin).exists()


def test_it_backs_off_after_a_wrong_code_even_for_the_right_one(
    api: Any, technician: Any, password: str
) -> None:
    device = enrol(technician)
    body = {"username": technician.username, "password": password}
    api.post(TOKEN, {**body, "otp": wrong_code(device)}, format="json")

    right_too_soon = api.post(TOKEN, {**body, "otp": code(device)}, format="json")

    assert right_too_soon.status_code == 401
    assert right_too_soon.json()["error"]["code"] == "otp_invalid"
