from __future__ import annotations

from typing import Any

import pytest

from accounts.models import Role, User
from audit.models import Action, AuditEvent, Outcome

pytestmark = pytest.mark.django_db

REGISTER = "/api/auth/register/"
STRONG = "plum-velvet-harbour-917"


def _register(api: Any, *, meta: dict[str, str] | None = None, **overrides: Any) -> Any:
    body = {"username": "newbie", "password": STRONG, "role": Role.TECHNICIAN, **overrides}
    return api.post(REGISTER, body, format="json", **(meta or {}))


ACCEPTED = {
    "role": "technician",
    "is_active": False,
    "detail": "If that username was free, an account request was created; an administrator "
    "activates it before it can log in.",
}


def test_it_creates_an_inactive_account_with_the_requested_role(api: Any) -> None:
    response = _register(api, role=Role.DOCTOR, email="newbie@example.org")

    assert response.status_code == 202
    assert response.json() == {**ACCEPTED, "username": "newbie", "role": "doctor"}
    user = User.objects.get(username="newbie")
    assert user.role == Role.DOCTOR
    assert not user.is_active
    assert not user.is_staff and not user.is_superuser
    assert user.password.startswith("argon2$argon2id$")
    event = AuditEvent.objects.get(action=Action.USER_REGISTERED)
    assert event.target_id == str(user.pk)
    assert event.actor_username == "newbie"
    assert event.details == {"requested_role": "doctor"}


def test_it_gives_the_new_account_no_token(api: Any) -> None:
    assert _register(api).status_code == 202

    response = api.post(
        "/api/auth/token/", {"username": "newbie", "password": STRONG}, format="json"
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "no_active_account"
    assert "access" not in response.json()


def test_it_refuses_the_admin_role(api: Any) -> None:
    response = _register(api, role=Role.ADMIN)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "role_not_allowed"
    assert not User.objects.filter(username="newbie").exists()
    assert not AuditEvent.objects.filter(action=Action.USER_REGISTERED).exists()


@pytest.mark.parametrize(
    "extra",
    [
        {"is_staff": True, "is_superuser": True, "is_active": True},
        {"role": Role.TECHNICIAN, "groups": [1], "user_permissions": [1]},
    ],
)
def test_it_ignores_privilege_fields_in_the_request(api: Any, extra: dict[str, Any]) -> None:
    response = _register(api, **extra)

    assert response.status_code == 202
    user = User.objects.get(username="newbie")
    assert (user.is_active, user.is_staff, user.is_superuser) == (False, False, False)
    assert user.role == Role.TECHNICIAN
    assert not user.groups.exists() and not user.user_permissions.exists()


def test_it_refuses_an_unknown_role(api: Any) -> None:
    response = _register(api, role="superuser")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert "role" in response.json()["error"]["fields"]


@pytest.mark.parametrize("password", ["short1!", "password12345", "12345678901234"])
def test_it_refuses_weak_passwords(api: Any, password: str) -> None:
    response = _register(api, password=password)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_password"
    assert not User.objects.filter(username="newbie").exists()


def test_it_refuses_a_password_like_the_username(api: Any) -> None:
    response = _register(api, username="marigold-waterfall", password="marigoldwaterfall")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_password"
    assert "similar" in response.json()["error"]["message"]


def test_it_answers_a_taken_username_exactly_like_a_free_one(api: Any, technician: Any) -> None:
    free = _register(api, username="nobody-yet")

    for name in (technician.username, technician.username.upper()):
        taken = _register(api, username=name)

        assert taken.status_code == free.status_code == 202
        assert taken.json() == {**free.json(), "username": name}
    assert User.objects.filter(username__iexact=technician.username).count() == 1
    technician.refresh_from_db()
    assert technician.is_active and technician.role == Role.TECHNICIAN
    # The attempts are audited for the administrators, as refused.
    refused = AuditEvent.objects.filter(action=Action.USER_REGISTERED, outcome=Outcome.REFUSED)
    assert [e.actor_username for e in refused.order_by("sequence")] == ["tina", "TINA"]
    assert {e.details["reason"] for e in refused} == {"username_taken"}


def test_it_treats_compatibility_forms_of_a_username_as_taken(
    api: Any, django_user_model: Any
) -> None:
    django_user_model.objects.create_user(username="fiona", role=Role.DOCTOR)

    # Fullwidth "Ｆ": NFKC makes it "Fiona", which differs from "fiona" only in case.
    response = _register(api, username="\uff26iona")

    assert response.status_code == 202
    assert User.objects.filter(username__iexact="fiona").count() == 1
    assert AuditEvent.objects.get(action=Action.USER_REGISTERED).outcome == Outcome.REFUSED


def test_it_checks_the_password_before_the_username(api: Any, technician: Any) -> None:
    # A weak password gets the same answer for a taken and a free name: no probing by
    # sending throwaway passwords.
    taken = _register(api, username=technician.username, password="123")
    free = _register(api, username="nobody-yet", password="123")

    assert taken.json()["error"]["code"] == free.json()["error"]["code"] == "invalid_password"


def test_it_refuses_invalid_usernames(api: Any) -> None:
    response = _register(api, username="bad name/../")

    assert response.status_code == 400
    assert "username" in response.json()["error"]["fields"]


def test_it_takes_as_long_for_a_taken_username_as_for_a_free_one(
    api: Any, technician: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The password is hashed either way (Argon2id, the costly part): no timing difference to
    # read the answer from.
    from medimg.tests.hashers import FastArgon2PasswordHasher

    hashed: list[str] = []
    real = FastArgon2PasswordHasher.encode

    def counting(self: Any, password: str, salt: str) -> str:
        hashed.append(password)
        return real(self, password, salt)

    monkeypatch.setattr(FastArgon2PasswordHasher, "encode", counting)

    _register(api, username="nobody-yet")
    free = len(hashed)
    _register(api, username=technician.username)

    assert free >= 1 and len(hashed) - free == free


def test_it_limits_registrations_per_address(api: Any, settings: Any) -> None:
    settings.MEDIMG_REGISTRATIONS_PER_HOUR = 3

    one = {"REMOTE_ADDR": "198.51.100.7"}
    answers = [_register(api, username=f"newbie{n}", meta=one).status_code for n in range(5)]
    elsewhere = _register(api, username="newbie-elsewhere", meta={"REMOTE_ADDR": "198.51.100.8"})
    # A client-sent X-Forwarded-For does not make a new address.
    spoofed = _register(
        api, username="newbie-spoofed", meta={**one, "HTTP_X_FORWARDED_FOR": "10.9.9.9"}
    )

    assert answers == [202, 202, 202, 429, 429]
    throttled = _register(api, username="newbie9", meta=one)
    assert throttled.json()["error"]["code"] == "throttled"
    assert 0 < int(throttled["Retry-After"]) <= 3600
    assert elsewhere.status_code == 202
    assert spoofed.status_code == 429
    assert User.objects.filter(username__startswith="newbie").count() == 4
