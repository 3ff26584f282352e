from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from accounts import login_guard
from audit.models import Action, AuditEvent, Outcome

pytestmark = pytest.mark.django_db

# Low limits keep the test quick: every failed login costs an Argon2 hash.
FAILURES_PER_USERNAME_AND_ADDRESS = 3
FAILURES_PER_ADDRESS = 5


@pytest.fixture(autouse=True)
def _low_limits(monkeypatch: Any) -> None:
    monkeypatch.setattr(
        login_guard, "FAILURES_PER_USERNAME_AND_ADDRESS", FAILURES_PER_USERNAME_AND_ADDRESS
    )
    monkeypatch.setattr(login_guard, "FAILURES_PER_ADDRESS", FAILURES_PER_ADDRESS)


TOKEN = "/api/auth/token/"


def _jwt_login(api: Any, username: str, password: str, ip: str = "10.0.0.1") -> Any:
    return api.post(
        TOKEN, {"username": username, "password": password}, format="json", REMOTE_ADDR=ip
    )


def test_it_locks_jwt_login_after_repeated_failures(
    api: Any, technician: Any, password: str
) -> None:
    for _ in range(FAILURES_PER_USERNAME_AND_ADDRESS):
        assert _jwt_login(api, technician.username, "wrong-guess-123").status_code == 401

    response = _jwt_login(api, technician.username, password)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"
    assert int(response["Retry-After"]) > 0
    refused = AuditEvent.objects.get(action=Action.LOGIN_FAILED, outcome=Outcome.REFUSED)
    assert refused.details == {"method": "jwt", "reason": "too_many_failures"}
    assert not AuditEvent.objects.filter(action=Action.LOGIN).exists()


def test_it_does_not_lock_the_user_out_from_another_address(
    api: Any, technician: Any, password: str
) -> None:
    for _ in range(FAILURES_PER_USERNAME_AND_ADDRESS):
        _jwt_login(api, technician.username, "wrong-guess-123", ip="10.6.6.6")

    assert _jwt_login(api, technician.username, password, ip="10.0.0.2").status_code == 200


def test_it_forgives_failures_after_a_correct_password(
    api: Any, technician: Any, password: str
) -> None:
    for _ in range(FAILURES_PER_USERNAME_AND_ADDRESS - 1):
        _jwt_login(api, technician.username, "wrong-guess-123")
    assert _jwt_login(api, technician.username, password).status_code == 200

    for _ in range(FAILURES_PER_USERNAME_AND_ADDRESS - 1):
        _jwt_login(api, technician.username, "wrong-guess-123")

    assert _jwt_login(api, technician.username, password).status_code == 200


def test_it_locks_an_address_that_sprays_many_usernames(
    api: Any, doctor: Any, password: str
) -> None:
    for n in range(FAILURES_PER_ADDRESS):
        _jwt_login(api, f"guess-{n}", "wrong-guess-123")

    assert _jwt_login(api, doctor.username, password).status_code == 429


def test_it_locks_session_login_after_repeated_failures(
    client: Client, doctor: Any, password: str
) -> None:
    for _ in range(FAILURES_PER_USERNAME_AND_ADDRESS):
        response = client.post("/login/", {"username": doctor.username, "password": "nope-123"})
        assert response.status_code == 200

    response = client.post("/login/", {"username": doctor.username, "password": password})

    assert response.status_code == 429
    assert b"Too many failed logins" in response.content
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(
        action=Action.LOGIN_FAILED, outcome=Outcome.REFUSED, details__method="session"
    ).exists()


def test_it_counts_admin_site_failures_towards_the_same_lock(
    client: Client, admin: Any, password: str
) -> None:
    for _ in range(FAILURES_PER_USERNAME_AND_ADDRESS):
        client.post("/admin/login/", {"username": admin.username, "password": "nope-123"})

    admin_login = client.post("/admin/login/", {"username": admin.username, "password": password})
    site_login = client.post("/login/", {"username": admin.username, "password": password})

    assert admin_login.status_code == 200 and b"Too many failed logins" in admin_login.content
    assert site_login.status_code == 429
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(
        action=Action.LOGIN_FAILED, outcome=Outcome.REFUSED, details__method="admin"
    ).exists()
