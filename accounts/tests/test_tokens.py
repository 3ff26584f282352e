from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import jwt
import pytest
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.services import user_set_password
from audit.models import Action, AuditEvent, Outcome

pytestmark = pytest.mark.django_db

TOKEN = "/api/auth/token/"
REFRESH = "/api/auth/token/refresh/"
LOGOUT = "/api/auth/logout/"
ME = "/api/auth/me/"


def _login(api: Any, user: Any, password: str) -> dict[str, str]:
    response = api.post(TOKEN, {"username": user.username, "password": password}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def _me(api: Any, access: str) -> Any:
    return api.get(ME, HTTP_AUTHORIZATION=f"Bearer {access}")


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(segment: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


# --- Login ------------------------------------------------------------------------------------


def test_it_issues_a_token_pair_that_authenticates(api: Any, doctor: Any, password: str) -> None:
    pair = _login(api, doctor, password)

    response = _me(api, pair["access"])

    assert response.status_code == 200
    assert response.json() == {"id": doctor.pk, "username": doctor.username, "role": "doctor"}
    claims = AccessToken(pair["access"])  # type: ignore[arg-type]
    assert claims["exp"] - claims["iat"] <= 15 * 60


def test_it_audits_a_jwt_login_once(api: Any, technician: Any, password: str) -> None:
    _login(api, technician, password)

    events = AuditEvent.objects.filter(action=Action.LOGIN)
    assert events.count() == 1
    assert events.get().actor_id == technician.pk
    assert events.get().details == {"method": "jwt"}
    technician.refresh_from_db()
    assert technician.last_login is not None


def test_it_refuses_a_wrong_password_and_audits_one_failure(api: Any, technician: Any) -> None:
    response = api.post(
        TOKEN, {"username": technician.username, "password": "not-the-password"}, format="json"
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "no_active_account"
    assert response["WWW-Authenticate"].startswith("Bearer")
    failures = AuditEvent.objects.filter(action=Action.LOGIN_FAILED)
    assert failures.count() == 1
    assert failures.get().actor_username == technician.username
    assert failures.get().outcome == Outcome.FAILURE
    assert not AuditEvent.objects.filter(action=Action.LOGIN).exists()


def test_it_refuses_an_inactive_user_with_401(api: Any, technician: Any, password: str) -> None:
    technician.is_active = False
    technician.save(update_fields=["is_active"])

    response = api.post(
        TOKEN, {"username": technician.username, "password": password}, format="json"
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "no_active_account"
    assert AuditEvent.objects.filter(action=Action.LOGIN_FAILED).count() == 1


def test_it_refuses_an_unknown_user_like_a_wrong_password(api: Any, technician: Any) -> None:
    unknown = api.post(TOKEN, {"username": "ghost", "password": "whatever-123"}, format="json")
    wrong = api.post(
        TOKEN, {"username": technician.username, "password": "whatever-123"}, format="json"
    )

    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()


def test_it_wants_both_fields(api: Any) -> None:
    response = api.post(TOKEN, {"username": "x"}, format="json")

    assert response.status_code == 400
    assert "password" in response.json()["error"]["fields"]


# --- Refresh and rotation ---------------------------------------------------------------------


def test_it_rotates_the_refresh_token(api: Any, doctor: Any, password: str) -> None:
    pair = _login(api, doctor, password)

    response = api.post(REFRESH, {"refresh": pair["refresh"]}, format="json")

    assert response.status_code == 200
    new = response.json()
    assert new["refresh"] != pair["refresh"] and new["access"] != pair["access"]
    assert _me(api, new["access"]).status_code == 200
    event = AuditEvent.objects.get(action=Action.TOKEN_REFRESHED)
    assert event.actor_id == doctor.pk


def test_it_refuses_a_refresh_token_used_again_after_rotation(
    api: Any, doctor: Any, password: str
) -> None:
    pair = _login(api, doctor, password)
    rotated = api.post(REFRESH, {"refresh": pair["refresh"]}, format="json").json()

    replay = api.post(REFRESH, {"refresh": pair["refresh"]}, format="json")

    assert replay.status_code == 401
    assert replay.json()["error"]["code"] == "token_not_valid"
    assert AuditEvent.objects.filter(action=Action.TOKEN_REFRESHED).count() == 1
    # The rotated token still works.
    assert api.post(REFRESH, {"refresh": rotated["refresh"]}, format="json").status_code == 200


def test_it_refuses_refresh_for_a_deactivated_user(api: Any, doctor: Any, password: str) -> None:
    pair = _login(api, doctor, password)
    doctor.is_active = False
    doctor.save(update_fields=["is_active"])

    response = api.post(REFRESH, {"refresh": pair["refresh"]}, format="json")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "no_active_account"
    assert _me(api, pair["access"]).status_code == 401


def test_it_refuses_refresh_for_a_deleted_user(api: Any, doctor: Any, password: str) -> None:
    pair = _login(api, doctor, password)
    doctor.delete()

    response = api.post(REFRESH, {"refresh": pair["refresh"]}, format="json")

    assert response.status_code == 401


def test_it_refuses_an_access_token_as_a_refresh_token(
    api: Any, doctor: Any, password: str
) -> None:
    pair = _login(api, doctor, password)

    response = api.post(REFRESH, {"refresh": pair["access"]}, format="json")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_not_valid"


# --- Logout -----------------------------------------------------------------------------------


def test_it_blacklists_the_refresh_token_on_logout(api: Any, doctor: Any, password: str) -> None:
    pair = _login(api, doctor, password)

    response = api.post(LOGOUT, {"refresh": pair["refresh"]}, format="json")

    assert response.status_code == 204
    refused = api.post(REFRESH, {"refresh": pair["refresh"]}, format="json")
    assert refused.status_code == 401
    event = AuditEvent.objects.get(action=Action.LOGOUT)
    assert event.actor_id == doctor.pk
    assert event.details == {"method": "jwt"}


def test_it_refuses_logout_with_a_blacklisted_or_bogus_token(
    api: Any, doctor: Any, password: str
) -> None:
    pair = _login(api, doctor, password)
    api.post(LOGOUT, {"refresh": pair["refresh"]}, format="json")

    again = api.post(LOGOUT, {"refresh": pair["refresh"]}, format="json")
    bogus = api.post(LOGOUT, {"refresh": "not-a-token"}, format="json")

    assert again.status_code == bogus.status_code == 401
    assert AuditEvent.objects.filter(action=Action.LOGOUT).count() == 1


# --- Attacks on /api/auth/me/ -----------------------------------------------------------------


def test_it_refuses_an_anonymous_caller(api: Any) -> None:
    response = api.get(ME)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_it_refuses_alg_none(api: Any, technician: Any, password: str) -> None:
    pair = _login(api, technician, password)
    payload = _unb64(pair["access"].split(".")[1])
    forged = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."

    assert _me(api, forged).status_code == 401


@pytest.mark.parametrize("claim", ["user_id", "role"])
def test_it_refuses_a_tampered_payload(
    api: Any, technician: Any, admin: Any, password: str, claim: str
) -> None:
    pair = _login(api, technician, password)
    header, payload_segment, signature = pair["access"].split(".")
    payload = _unb64(payload_segment)
    payload[claim] = admin.pk if claim == "user_id" else "admin"
    forged = f"{header}.{_b64(payload)}.{signature}"

    response = _me(api, forged)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_not_valid"


def test_it_refuses_a_token_signed_with_a_foreign_key(
    api: Any, technician: Any, password: str
) -> None:
    pair = _login(api, technician, password)
    payload = _unb64(pair["access"].split(".")[1])  # every claim valid, except who signed it
    forged = jwt.encode(payload, "an-attackers-own-secret-key-0123456789", algorithm="HS256")

    assert _me(api, forged).status_code == 401


def test_it_refuses_an_expired_token(api: Any, technician: Any) -> None:
    token = AccessToken.for_user(technician)
    token.set_exp(lifetime=-timedelta(seconds=1))

    response = _me(api, str(token))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_not_valid"


def test_it_refuses_a_refresh_token_used_as_an_access_token(
    api: Any, technician: Any, password: str
) -> None:
    pair = _login(api, technician, password)

    assert _me(api, pair["refresh"]).status_code == 401
    assert _me(api, str(RefreshToken.for_user(technician))).status_code == 401


def test_it_audits_refused_token_requests(api: Any) -> None:
    api.get(ME, HTTP_AUTHORIZATION="Bearer garbage")

    event = AuditEvent.objects.get(action=Action.REQUEST_REFUSED)
    assert event.details["path"] == ME
    assert event.details["status"] == 401


def test_it_refuses_old_tokens_after_a_password_change(
    api: Any, doctor: Any, password: str
) -> None:
    # Revocation is the per-user valid-after time set by the password service (see
    # accounts/tests/test_token_policy.py), not simplejwt's CHECK_REVOKE_TOKEN MD5 claim.
    pair = _login(api, doctor, password)
    assert _me(api, pair["access"]).status_code == 200

    user_set_password(user=doctor, password="a-brand-new-passphrase-77")

    assert _me(api, pair["access"]).status_code == 401
    response = api.post(REFRESH, {"refresh": pair["refresh"]}, format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_revoked"
    fresh = _login(api, doctor, "a-brand-new-passphrase-77")
    assert api.post(REFRESH, {"refresh": fresh["refresh"]}, format="json").status_code == 200
