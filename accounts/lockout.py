"""Brute-force lockout: django-axes, wired to this project's client address and responses.

Axes counts failed logins (its `AccessAttempt` table, so every web process sees the same
count) per username and client address together (AXES_LOCKOUT_PARAMETERS), on every path that
calls `authenticate()` with a request: the session login, the admin site's login and the JWT
token endpoint; a wrong second-factor code is counted too (accounts.otp_views and
accounts.services send `user_login_failed` for it). After AXES_FAILURE_LIMIT failures the
pair is refused, even with the right password, until AXES_COOLOFF_TIME has passed since the
last failure. A right login resets the count. Each failure and each refusal is audited by
audit.receivers (LOGIN_FAILED; outcome refused with reason `too_many_failures` when locked).
"""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.exceptions import AxesBackendPermissionDenied
from axes.utils import reset
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from audit.services import client_ip
from engine.errors import ErrorCode

LOCKED_CODE = ErrorCode.LOCKED_OUT


def locked_message() -> str:
    """What a locked-out login is told, with how long the lock lasts (AXES_COOLOFF_TIME,
    counted from the last failed attempt: trying again while locked does not extend it)."""
    minutes = max(1, round(settings.AXES_COOLOFF_TIME.total_seconds() / 60))
    unit = "minute" if minutes == 1 else "minutes"
    return (
        "Too many failed logins for this account from here. Logging in is blocked for "
        f"{minutes} {unit} after the last failed attempt; try again then, or ask an "
        "administrator to unlock it."
    )


class LockoutBackend(AxesStandaloneBackend):
    """Axes' lockout check, first in AUTHENTICATION_BACKENDS.

    A call without a request (a management command, a shell, Django's test `Client.login`)
    comes from inside the machine, not over the network, so there is nothing to count: it is
    passed on to the next backend instead of raising like axes' own class does.
    """

    def authenticate(self, request: HttpRequest | None, *args: Any, **kwargs: Any) -> None:
        if request is None:
            return None
        try:
            return super().authenticate(request, *args, **kwargs)
        except AxesBackendPermissionDenied:
            # Refused without checking the password: audit.receivers records it as such.
            request.login_failure_reason = "too_many_failures"  # type: ignore[attr-defined]
            raise


def lockout_client_ip(request: HttpRequest) -> str | None:
    """The same address the audit log records (REMOTE_ADDR only; see audit.services), or None
    when there is none (axes' address columns are IP fields: PostgreSQL refuses a placeholder)."""
    return client_ip(request)


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    """What a locked-out login gets: our own page when a view already rendered a 429 for it
    (the login forms do), otherwise a JSON 429 in the API error shape."""
    if original_response is not None and original_response.status_code == 429:
        return original_response
    return JsonResponse({"error": {"code": LOCKED_CODE, "message": locked_message()}}, status=429)


def lockout_reset(*, username: str, request: HttpRequest) -> None:
    """A right login forgets the failures of that username and address (axes does this itself
    on Django's user_logged_in; the JWT login sends no such signal, so it calls this)."""
    reset(ip=lockout_client_ip(request), username=username)
