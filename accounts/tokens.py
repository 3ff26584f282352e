"""JWT policy: tokens carry a precise issue time, and a per-user "valid after" time revokes them.

`User.tokens_valid_after` is set (by accounts.services) when a password changes or an account
is deactivated. Any access or refresh token issued before it is refused, on every request
(`MedimgJWTAuthentication`) and on refresh (`token_check_valid_after`, from the refresh
service). This replaces simplejwt's CHECK_REVOKE_TOKEN, which puts an MD5 of the password
hash in every token and cannot revoke on deactivation.

Logout: every token carries a login-session id (`sid`), kept through refresh rotation and
copied into each access token. JWT logout blacklists the refresh token and records the `sid`
as revoked (`RevokedLogin`, in the database) for as long as an access token lives, so the
access tokens of that login stop working at once in every process, and other logins of the
same user are untouched.

Issuer and audience are simplejwt settings (ISSUER, AUDIENCE from JWT_ISSUER, JWT_AUDIENCE):
PyJWT then refuses a token whose `iss` or `aud` is missing or different.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from django.utils import timezone
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken, Token

from accounts.models import RevokedLogin


class _PreciseIssuedAt(Token):
    def set_iat(self, claim: str = "iat", at_time: datetime | None = None) -> None:
        # RFC 7519 NumericDate may be fractional. Whole seconds (simplejwt's default) would
        # leave a token issued in the same second as a password change on either side of it.
        moment = at_time if at_time is not None else self.current_time
        self.payload[claim] = round(moment.timestamp(), 6)


class MedimgAccessToken(_PreciseIssuedAt, AccessToken):
    pass


# The stubs give BlacklistMixin.for_user and Token.for_user different signatures; RefreshToken
# combines them already, and so does this subclass.
class MedimgRefreshToken(_PreciseIssuedAt, RefreshToken):  # type: ignore[misc]
    access_token_class = MedimgAccessToken


SESSION_CLAIM = "sid"


def token_pair_for(user: Any, *, session_id: str | None = None) -> MedimgRefreshToken:
    """A refresh token (and, through it, access tokens) for `user` in login session
    `session_id`; a new login starts a session named after its first refresh token."""
    # for_user builds `cls(...)`: a MedimgRefreshToken.
    refresh = cast(MedimgRefreshToken, MedimgRefreshToken.for_user(user))
    refresh[SESSION_CLAIM] = session_id or refresh[jwt_settings.JTI_CLAIM]
    return refresh


def token_session_revoke(token: Token) -> None:
    """Logout: the access tokens of `token`'s login session stop working now."""
    sid = token.get(SESSION_CLAIM)
    if isinstance(sid, str) and sid:
        # Only access tokens need the mark: the session's last refresh token is blacklisted
        # by the caller and the earlier ones were blacklisted when they were rotated. An
        # access token issued now dies within its lifetime; a minute more covers clock skew.
        now = timezone.now()
        RevokedLogin.objects.filter(expires_at__lte=now).delete()
        RevokedLogin.objects.update_or_create(
            sid=sid[:64],
            defaults={
                "expires_at": now + jwt_settings.ACCESS_TOKEN_LIFETIME + timedelta(minutes=1)
            },
        )


def token_check_session(token: Token) -> None:
    sid = token.get(SESSION_CLAIM)
    if (
        isinstance(sid, str)
        and RevokedLogin.objects.filter(sid=sid[:64], expires_at__gt=timezone.now()).exists()
    ):
        raise AuthenticationFailed("This login has been logged out.", code="token_revoked")


def token_check_valid_after(token: Token, user: Any) -> None:
    """Refuse a token issued before `user.tokens_valid_after` (401 `token_revoked`)."""
    valid_after = getattr(user, "tokens_valid_after", None)
    if valid_after is None:
        return
    issued_at = token.get("iat")
    if not isinstance(issued_at, int | float) or issued_at < valid_after.timestamp():
        raise AuthenticationFailed(
            "This token was issued before the password changed or the account was "
            "deactivated. Log in again.",
            code="token_revoked",
        )


class MedimgJWTAuthentication(JWTAuthentication):
    """simplejwt's authentication (signature, expiry, type, iss, aud, active user) plus the
    per-user valid-after time and the logged-out sessions."""

    def get_user(self, validated_token: Token) -> Any:
        user = super().get_user(validated_token)
        if not user.is_active:  # Whatever CHECK_USER_IS_ACTIVE says.
            raise AuthenticationFailed("User is inactive", code="user_inactive")
        token_check_valid_after(validated_token, user)
        token_check_session(validated_token)
        return user


class MedimgJWTScheme(SimpleJWTScheme):
    """OpenAPI: the same Bearer JWT scheme as simplejwt's class (drf-spectacular matches
    authentication classes exactly, not by subclass)."""

    target_class = "accounts.tokens.MedimgJWTAuthentication"
