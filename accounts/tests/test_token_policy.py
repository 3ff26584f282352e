"""Token policy: password change and deactivation revoke issued tokens (access AND refresh),
issuer and audience are set and checked, lifetimes stay short."""

from __future__ import annotations

import base64
import uuid
from io import StringIO
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from django.conf import settings as django_settings
from django.test import Client
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.services import user_set_active, user_set_password
from accounts.session_keys import session_key_get
from accounts.tests.test_keyexchange import x25519_exchange

pytestmark = pytest.mark.django_db

TOKEN = "/api/auth/token/"
REFRESH = "/api/auth/token/refresh/"
ME = "/api/auth/me/"
NEW_PASSWORD = "lantern-orchard-velvet-93"


def _login(api: Any, user: Any, password: str) -> dict[str, str]:
    response = api.post(TOKEN, {"username": user.username, "password": password}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def _me(api: Any, access: str) -> Any:
    return api.get(ME, HTTP_AUTHORIZATION=f"Bearer {access}")


def _refresh(api: Any, refresh: str) -> Any:
    return api.post(REFRESH, {"refresh": refresh}, format="json")


def _assert_revoked(api: Any, pair: dict[str, str]) -> None:
    me = _me(api, pair["access"])
    assert me.status_code == 401
    assert me.json()["error"]["code"] == "token_revoked"
    refreshed = _refresh(api, pair["refresh"])
    assert refreshed.status_code == 401
    assert refreshed.json()["error"]["code"] == "token_revoked"


# --- Password change ------------------------------------------------------------------------


def test_it_revokes_tokens_when_an_admin_changes_a_password(
    api: Any, client: Client, admin: Any, doctor: Any, password: str
) -> None:
    pair = _login(api, doctor, password)
    client.force_login(admin)

    response = client.post(
        f"/admin/accounts/user/{doctor.pk}/password/",
        {"usable_password": "true", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )

    assert response.status_code == 302, response.content[:2000]
    doctor.refresh_from_db()
    assert doctor.check_password(NEW_PASSWORD) and doctor.tokens_valid_after is not None
    _assert_revoked(api, pair)
    # A token issued right after the change (same second, even) works.
    fresh = _login(api, doctor, NEW_PASSWORD)
    assert _me(api, fresh["access"]).status_code == 200
    assert _refresh(api, fresh["refresh"]).status_code == 200


def test_it_revokes_tokens_when_an_admin_disables_password_login(
    api: Any, client: Client, admin: Any, doctor: Any, password: str
) -> None:
    pair = _login(api, doctor, password)
    client.force_login(admin)

    client.post(
        f"/admin/accounts/user/{doctor.pk}/password/",
        {"usable_password": "false", "unset-password": "1"},
    )

    doctor.refresh_from_db()
    assert not doctor.has_usable_password()
    _assert_revoked(api, pair)


def test_it_revokes_a_token_issued_in_the_same_second_before_the_change(
    api: Any, doctor: Any, password: str
) -> None:
    pair = _login(api, doctor, password)

    user_set_password(user=doctor, password=NEW_PASSWORD)

    # Whole-second `iat` could not tell these apart; the fractional one can.
    assert AccessToken(pair["access"])["iat"] < doctor.tokens_valid_after.timestamp()  # type: ignore[arg-type]
    _assert_revoked(api, pair)


def test_it_refuses_a_token_without_an_issue_time_once_tokens_were_revoked(
    api: Any, doctor: Any, password: str
) -> None:
    user_set_password(user=doctor, password=NEW_PASSWORD)
    claims = _signed_claims(doctor)
    del claims["iat"]

    response = _me(api, _encode(claims))

    assert response.status_code == 401


def test_it_ends_session_keys_when_the_password_changes(api: Any, doctor: Any) -> None:
    key_id, _ = x25519_exchange(api, doctor)

    user_set_password(user=doctor, password=NEW_PASSWORD)

    assert session_key_get(user_id=doctor.pk, key_id=key_id) is None


# --- Deactivation ---------------------------------------------------------------------------


def test_it_revokes_tokens_on_deactivation_even_after_reactivation(
    api: Any, admin: Any, technician: Any, password: str
) -> None:
    pair = _login(api, technician, password)
    key_id, _ = x25519_exchange(api, technician)
    api.force_authenticate(None)

    user_set_active(user=technician, active=False, actor=admin)

    assert _me(api, pair["access"]).status_code == 401
    assert _refresh(api, pair["refresh"]).status_code == 401
    assert session_key_get(user_id=technician.pk, key_id=key_id) is None

    user_set_active(user=technician, active=True, actor=admin)

    _assert_revoked(api, pair)
    assert _me(api, _login(api, technician, password)["access"]).status_code == 200


def test_it_revokes_tokens_on_deactivation_in_admin(
    api: Any, client: Client, admin: Any, doctor: Any, password: str
) -> None:
    pair = _login(api, doctor, password)
    client.force_login(admin)

    client.post(
        "/admin/accounts/user/", {"action": "deactivate_users", "_selected_action": [doctor.pk]}
    )

    doctor.refresh_from_db()
    assert not doctor.is_active and doctor.tokens_valid_after is not None
    assert _me(api, pair["access"]).status_code == 401
    assert _refresh(api, pair["refresh"]).status_code == 401


def test_it_leaves_other_users_tokens_alone(
    api: Any, admin: Any, doctor: Any, technician: Any, password: str
) -> None:
    doctors = _login(api, doctor, password)

    user_set_active(user=technician, active=False, actor=admin)
    user_set_password(user=admin, password=NEW_PASSWORD)

    assert _me(api, doctors["access"]).status_code == 200
    assert _refresh(api, doctors["refresh"]).status_code == 200


def test_it_refuses_an_inactive_user_with_a_token_from_before_revocation_existed(
    api: Any, doctor: Any, password: str
) -> None:
    # Deactivated behind the services' back (a raw update): the active check still holds.
    pair = _login(api, doctor, password)
    type(doctor).objects.filter(pk=doctor.pk).update(is_active=False)

    assert _me(api, pair["access"]).status_code == 401


# --- Logout ---------------------------------------------------------------------------------

LOGOUT = "/api/auth/logout/"


def test_it_refuses_the_access_token_of_a_logged_out_login(
    api: Any, doctor: Any, password: str
) -> None:
    pair = _login(api, doctor, password)
    assert _me(api, pair["access"]).status_code == 200

    assert api.post(LOGOUT, {"refresh": pair["refresh"]}, format="json").status_code == 204

    response = _me(api, pair["access"])
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_revoked"


def test_it_ends_a_login_through_all_its_rotations(api: Any, doctor: Any, password: str) -> None:
    first = _login(api, doctor, password)
    second = _refresh(api, first["refresh"]).json()
    third = _refresh(api, second["refresh"]).json()
    claims = [jwt.decode(t["access"], options={"verify_signature": False}) for t in (first, third)]
    assert claims[0]["sid"] == claims[1]["sid"]

    api.post(LOGOUT, {"refresh": third["refresh"]}, format="json")

    for pair in (first, second, third):
        assert _me(api, pair["access"]).status_code == 401
    assert _refresh(api, third["refresh"]).status_code == 401


def test_it_leaves_the_users_other_logins_alone_at_logout(
    api: Any, doctor: Any, password: str
) -> None:
    laptop = _login(api, doctor, password)
    tablet = _login(api, doctor, password)

    api.post(LOGOUT, {"refresh": laptop["refresh"]}, format="json")

    assert _me(api, laptop["access"]).status_code == 401
    assert _me(api, tablet["access"]).status_code == 200
    assert _refresh(api, tablet["refresh"]).status_code == 200


def test_it_keeps_every_logout_revoked_however_many_there_are(api: Any, doctor: Any) -> None:
    from rest_framework.exceptions import AuthenticationFailed

    from accounts.services import auth_logout
    from accounts.tokens import token_check_session, token_pair_for, token_session_revoke

    # More logouts than a local-memory cache holds (300 keys, then it forgets a third).
    logins = [token_pair_for(doctor) for _ in range(350)]
    auth_logout(refresh=str(logins[0]), request=None)
    for refresh in logins[1:]:
        token_session_revoke(refresh)

    still_working = []
    for n, refresh in enumerate(logins):
        try:
            token_check_session(refresh.access_token)
        except AuthenticationFailed:
            continue
        still_working.append(n)
    assert still_working == []
    # The first logout, the one a cache would have forgotten first, end to end.
    response = _me(api, str(logins[0].access_token))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_revoked"


def test_it_keeps_logouts_in_the_database_and_purges_them_once_expired(
    api: Any, doctor: Any, password: str
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from accounts.models import RevokedLogin

    first = _login(api, doctor, password)
    api.post(LOGOUT, {"refresh": first["refresh"]}, format="json")
    sid = jwt.decode(first["access"], options={"verify_signature": False})["sid"]
    revoked = RevokedLogin.objects.get(sid=sid)
    lifetime = django_settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"]
    assert revoked.expires_at > timezone.now() + lifetime

    # Once every access token of that login has expired anyway, the next logout purges it.
    RevokedLogin.objects.filter(sid=sid).update(expires_at=timezone.now() - timedelta(seconds=1))
    second = _login(api, doctor, password)
    api.post(LOGOUT, {"refresh": second["refresh"]}, format="json")
    assert list(RevokedLogin.objects.values_list("sid", flat=True)) == [
        jwt.decode(second["access"], options={"verify_signature": False})["sid"]
    ]


# --- Issuer and audience --------------------------------------------------------------------


def _signed_claims(user: Any) -> dict[str, Any]:
    # simplejwt adds iss and aud when it encodes; a forger writes them out.
    claims = dict(AccessToken.for_user(user).payload)
    claims["iss"] = django_settings.SIMPLE_JWT["ISSUER"]
    claims["aud"] = django_settings.SIMPLE_JWT["AUDIENCE"]
    return claims


def _encode(claims: dict[str, Any]) -> str:
    key = django_settings.SIMPLE_JWT["SIGNING_KEY"]
    return jwt.encode(claims, key, algorithm="HS256")


def test_it_issues_tokens_with_issuer_and_audience(api: Any, doctor: Any, password: str) -> None:
    pair = _login(api, doctor, password)

    for raw in pair.values():
        claims = jwt.decode(raw, options={"verify_signature": False})
        assert claims["iss"] == django_settings.SIMPLE_JWT["ISSUER"] == "medimg"
        assert claims["aud"] == django_settings.SIMPLE_JWT["AUDIENCE"] == "medimg-api"
        assert isinstance(claims["iat"], float)
    access = jwt.decode(pair["access"], options={"verify_signature": False})
    assert access["exp"] - access["iat"] <= 15 * 60


def test_it_accepts_a_correctly_signed_token_with_the_right_claims(api: Any, doctor: Any) -> None:
    # The control for the refusals below: the forging method itself yields a working token.
    assert _me(api, _encode(_signed_claims(doctor))).status_code == 200


@pytest.mark.parametrize(
    "change",
    [
        {"iss": None},
        {"iss": "someone-else"},
        {"aud": None},
        {"aud": "another-api"},
        {"aud": ["another-api"]},
        {"iss": None, "aud": None},
    ],
)
def test_it_refuses_a_missing_or_wrong_issuer_or_audience(
    api: Any, doctor: Any, change: dict[str, Any]
) -> None:
    claims = _signed_claims(doctor)
    for claim, value in change.items():
        if value is None:
            del claims[claim]
        else:
            claims[claim] = value

    response = _me(api, _encode(claims))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_not_valid"


def test_it_refuses_a_refresh_token_with_a_wrong_audience(api: Any, doctor: Any) -> None:
    claims = dict(RefreshToken.for_user(doctor).payload)
    claims["iss"] = django_settings.SIMPLE_JWT["ISSUER"]
    claims["aud"] = django_settings.SIMPLE_JWT["AUDIENCE"]
    right = _refresh(api, _encode(claims))
    claims["jti"] = uuid.uuid4().hex
    claims["aud"] = "another-api"

    wrong = _refresh(api, _encode(claims))

    assert right.status_code == 200
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "token_not_valid"


# --- Everything together --------------------------------------------------------------------


def test_it_seals_only_for_a_live_login(api: Any, doctor: Any, password: str) -> None:
    """A session key made with a token that is later revoked dies with it."""
    pair = _login(api, doctor, password)
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {pair['access']}")
    offer = api.get("/api/auth/key-exchange/").json()
    client_pub = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    done = api.post(
        "/api/auth/key-exchange/",
        {"exchange_id": offer["exchange_id"], "public_key": base64.b64encode(client_pub).decode()},
        format="json",
    )
    assert done.status_code == 201

    user_set_password(user=doctor, password=NEW_PASSWORD)

    assert api.get("/api/auth/key-exchange/").status_code == 401
    assert session_key_get(user_id=doctor.pk, key_id=done.json()["key_id"]) is None


def test_it_revokes_tokens_when_manage_py_changepassword_sets_a_password(
    api: Any, doctor: Any, password: str, monkeypatch: Any
) -> None:
    from django.contrib.auth.management.commands import changepassword
    from django.core.management import call_command

    pair = _login(api, doctor, password)
    monkeypatch.setattr(changepassword.getpass, "getpass", lambda *args, **kwargs: NEW_PASSWORD)

    call_command("changepassword", doctor.username, stdout=StringIO())

    _assert_revoked(api, pair)
    assert _login(api, doctor, NEW_PASSWORD)["access"]
