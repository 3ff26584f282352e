"""Brute-force lockout (django-axes): N failures, then refused even with the right password,
until the cool-off has passed; every failure and refusal audited."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.test import Client

from accounts.tests.otp_codes import enrol, wrong_code
from audit.models import Action, AuditEvent, Outcome

pytestmark = pytest.mark.django_db

LIMIT = 3  # Low: every failed login costs an Argon2 hash.
TOKEN = "/api/auth/token/"


@pytest.fixture(autouse=True)
def _low_limit(settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)


def _jwt_login(api: Any, username: str, password: str, ip: str = "10.0.0.1", **extra: Any) -> Any:
    body = {"username": username, "password": password, **extra}
    return api.post(TOKEN, body, format="json", REMOTE_ADDR=ip)


def _time_passes(delta: timedelta) -> None:
    """Move every recorded failure `delta` into the past (no sleeping)."""
    for attempt in AccessAttempt.objects.all():
        attempt.attempt_time = attempt.attempt_time - delta
        attempt.save(update_fields=["attempt_time"])


def test_it_locks_jwt_login_after_n_failures_even_with_the_right_password(
    api: Any, technician: Any, password: str
) -> None:
    for _ in range(LIMIT):
        assert _jwt_login(api, technician.username, "wrong-guess-123").status_code in {401, 429}

    response = _jwt_login(api, technician.username, password)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"
    assert int(response["Retry-After"]) == 15 * 60
    failures = AuditEvent.objects.filter(action=Action.LOGIN_FAILED, outcome=Outcome.FAILURE)
    assert failures.count() == LIMIT
    refused = AuditEvent.objects.filter(action=Action.LOGIN_FAILED, outcome=Outcome.REFUSED)
    assert refused.count() >= 1
    assert refused.last().details == {"reason": "too_many_failures"}
    assert not AuditEvent.objects.filter(action=Action.LOGIN).exists()


def test_it_lets_the_right_password_in_once_the_cool_off_has_passed(
    api: Any, technician: Any, password: str, settings: Any
) -> None:
    settings.AXES_COOLOFF_TIME = timedelta(minutes=2)
    for _ in range(LIMIT):
        _jwt_login(api, technician.username, "wrong-guess-123")
    assert _jwt_login(api, technician.username, password).status_code == 429

    _time_passes(timedelta(minutes=1))
    assert _jwt_login(api, technician.username, password).status_code == 429
    _time_passes(timedelta(minutes=1, seconds=5))

    assert _jwt_login(api, technician.username, password).status_code == 200


def test_it_does_not_lock_the_user_out_from_another_address(
    api: Any, technician: Any, password: str
) -> None:
    for _ in range(LIMIT):
        _jwt_login(api, technician.username, "wrong-guess-123", ip="10.6.6.6")

    assert _jwt_login(api, technician.username, password, ip="10.0.0.2").status_code == 200


def test_it_forgives_failures_after_a_right_password(
    api: Any, technician: Any, password: str
) -> None:
    for _ in range(LIMIT - 1):
        _jwt_login(api, technician.username, "wrong-guess-123")
    assert _jwt_login(api, technician.username, password).status_code == 200

    for _ in range(LIMIT - 1):
        _jwt_login(api, technician.username, "wrong-guess-123")

    assert _jwt_login(api, technician.username, password).status_code == 200


def test_it_locks_session_login_after_n_failures_even_with_the_right_password(
    client: Client, technician: Any, password: str
) -> None:
    for _ in range(LIMIT):
        client.post("/login/", {"username": technician.username, "password": "nope-123"})

    response = client.post("/login/", {"username": technician.username, "password": password})

    assert response.status_code == 429
    assert b"Too many failed logins" in response.content
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action=Action.LOGIN_FAILED).count() == LIMIT + 1
    assert not AuditEvent.objects.filter(action=Action.LOGIN).exists()


def test_it_counts_admin_site_failures_towards_the_same_lock(
    client: Client, admin: Any, password: str
) -> None:
    for _ in range(LIMIT):
        client.post("/admin/login/", {"username": admin.username, "password": "nope-123"})

    main_login = client.post("/login/", {"username": admin.username, "password": password})

    assert main_login.status_code == 429
    assert "_auth_user_id" not in client.session


def test_it_counts_wrong_second_factor_codes_as_failures(
    api: Any, technician: Any, password: str, settings: Any
) -> None:
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    device = enrol(technician)
    for _ in range(LIMIT - 1):
        response = _jwt_login(api, technician.username, password, otp=wrong_code(device))
        assert response.json()["error"]["code"] == "otp_invalid"

    last = _jwt_login(api, technician.username, password, otp=wrong_code(device))

    assert last.status_code == 429
    assert _jwt_login(api, technician.username, password).status_code == 429


def test_it_locks_the_session_code_step_after_n_wrong_codes(
    client: Client, doctor: Any, password: str, settings: Any
) -> None:
    from accounts.tests.otp_codes import code

    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    device = enrol(doctor)
    client.post("/login/", {"username": doctor.username, "password": password})
    for _ in range(LIMIT):
        client.post("/login/otp/", {"code": wrong_code(device)})
    again = client.post("/login/", {"username": doctor.username, "password": password})

    response = client.post("/login/otp/", {"code": code(device)})

    assert again.status_code == 429  # The password step is locked too.
    assert response.status_code == 429  # And the code step, even with the right code.
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action=Action.LOGIN_FAILED, outcome=Outcome.REFUSED).exists()
