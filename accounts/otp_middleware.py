"""Nothing past the second factor until it is given.

Runs after django-otp's OTPMiddleware, on session users only (an API caller with a JWT has
already given the code at the token endpoint). A signed-in session that is not OTP-verified:

- belongs to a user with a confirmed device: pages go to the code step (/login/otp/),
  API calls get 403 `otp_required`;
- belongs to an admin with no device: pages go to enrolment (/account/2fa/), API calls get 403
  `otp_enrolment_required`.

The enrolment and code pages, logout and static files stay reachable, or no one could finish.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse

from accounts.otp import otp_device_for, otp_required_for
from engine.errors import ErrorCode


def _error(code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=403)


class OtpRequiredMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def _open_paths(self) -> tuple[str, ...]:
        return (
            reverse("otp-enrol"),
            reverse("login-otp"),
            reverse("logout"),
            reverse("login"),
            settings.STATIC_URL,
        )

    def __call__(self, request: HttpRequest) -> HttpResponse:
        refusal = self._refusal(request)
        return refusal if refusal is not None else self.get_response(request)

    def _refusal(self, request: HttpRequest) -> HttpResponse | None:
        user: Any = getattr(request, "user", None)
        if user is None or not user.is_authenticated or user.is_verified():
            return None
        if request.path.startswith(self._open_paths()):
            return None
        api = request.path.startswith("/api/")
        if otp_device_for(user) is not None:
            if api:
                return _error(
                    ErrorCode.OTP_REQUIRED, "Give your two-factor code at /login/otp/ first."
                )
            return redirect(
                f"{reverse('login-otp')}?{urlencode({'next': request.get_full_path()})}"
            )
        if otp_required_for(user):
            if api:
                return _error(
                    ErrorCode.OTP_ENROLMENT_REQUIRED,
                    "Administrators must set up two-factor login at /account/2fa/ first.",
                )
            return redirect("otp-enrol")
        return None
