"""Browser pages for the second factor: the code step of the session login, and enrolment.

The password step (accounts.views.SessionLoginView) does not log a user with a device in: it
leaves a pending entry in the session (user, backend, next page, time) and sends them here.
Only a right code logs them in, so no session is ever authenticated on the password alone.
"""

from __future__ import annotations

import time
from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from django import forms
from django.contrib.auth import login as auth_login
from django.contrib.auth.mixins import LoginRequiredMixin
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View
from django_otp import login as otp_session_login

from accounts.lockout import locked_message
from accounts.models import User
from accounts.otp import (
    otp_device_for,
    otp_enrolment_confirm,
    otp_enrolment_start,
    otp_qr_svg,
    otp_remove,
    otp_required_for,
    otp_secret_text,
    otp_verify,
)
from audit.models import Action
from audit.services import audit_record
from engine.errors import EngineError

PENDING_KEY = "otp_pending"
PENDING_SECONDS = 300


class OtpCodeForm(forms.Form):
    code = forms.CharField(label="Code from your authenticator app", max_length=10)


def otp_pending_start(request: HttpRequest, *, user: Any, next_url: str) -> None:
    """After a right password for a user with a device: remember who, for PENDING_SECONDS."""
    request.session.cycle_key()  # A fresh session id for the half-logged-in state.
    request.session[PENDING_KEY] = {
        "user_id": user.pk,
        "backend": user.backend,
        "next": next_url,
        "at": time.time(),
    }


def _pending_user(request: HttpRequest) -> tuple[Any, dict[str, Any]] | None:
    pending = request.session.get(PENDING_KEY)
    if not isinstance(pending, dict) or time.time() - pending.get("at", 0) > PENDING_SECONDS:
        request.session.pop(PENDING_KEY, None)
        return None
    user_id = pending.get("user_id")
    if user_id is None:
        return None
    user = User.objects.filter(pk=user_id, is_active=True).first()
    return (user, pending) if user is not None else None


def _safe_next(request: HttpRequest, url: str | None) -> str:
    if url and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return "/"


class OtpLoginView(View):
    """Second step of the session login: the code, then the session is logged in."""

    template_name = "registration/login_otp.html"

    def _render(self, request: HttpRequest, form: OtpCodeForm, status: int = 200) -> HttpResponse:
        return render(request, self.template_name, {"form": form}, status=status)

    def get(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            # is_verified is set on the user by django-otp's middleware.
            if request.user.is_verified():  # type: ignore[attr-defined]
                return redirect(_safe_next(request, request.GET.get("next")))
        elif _pending_user(request) is None:
            return redirect("login")
        return self._render(request, OtpCodeForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        form = OtpCodeForm(request.POST)
        if request.user.is_authenticated:
            user: Any = request.user
            pending: dict[str, Any] = {"next": request.GET.get("next")}
        else:
            found = _pending_user(request)
            if found is None:
                return redirect("login")
            user, pending = found
        credentials = {"username": user.get_username()}
        if not AxesProxyHandler.is_allowed(request, credentials):
            request.login_failure_reason = "too_many_failures"  # type: ignore[attr-defined]
            request.axes_locked_out = True  # type: ignore[attr-defined]
            user_login_failed.send(sender=__name__, credentials=credentials, request=request)
            request.session.pop(PENDING_KEY, None)
            form.add_error(None, locked_message())
            return self._render(request, form, status=429)
        device = (
            otp_verify(user=user, code=request.POST.get("code", "")) if form.is_valid() else None
        )
        if device is None:
            # A wrong code is a failed login: django-axes counts it, the audit log records it.
            request.login_failure_reason = "otp_invalid"  # type: ignore[attr-defined]
            user_login_failed.send(sender=__name__, credentials=credentials, request=request)
            form.add_error(None, "That code is not right. Try again.")
            return self._render(request, form, status=400)
        if request.user.is_authenticated:
            otp_session_login(request, device)
            audit_record(
                action=Action.LOGIN, actor=user, request=request, details={"method": "otp"}
            )
        else:
            request.session.pop(PENDING_KEY, None)
            user.backend = pending["backend"]
            user.otp_device = device  # django-otp marks the session verified at login.
            auth_login(request, user)
        return redirect(_safe_next(request, pending.get("next")))


class OtpEnrolView(LoginRequiredMixin, View):
    """Set up (or, for non-admins, turn off) the authenticator app for the signed-in user."""

    template_name = "accounts/otp_enrol.html"

    def _render(self, request: HttpRequest, form: OtpCodeForm, status: int = 200) -> HttpResponse:
        user: Any = request.user
        device = otp_device_for(user)
        context: dict[str, Any] = {
            "form": form,
            "enrolled": device is not None,
            "required": otp_required_for(user),
        }
        if device is None:
            pending = otp_enrolment_start(user=user)
            context.update(qr_svg=otp_qr_svg(pending), secret=otp_secret_text(pending))
        return render(request, self.template_name, context, status=status)

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request, OtpCodeForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        form = OtpCodeForm(request.POST)
        if not form.is_valid():
            return self._render(request, form, status=400)
        user: Any = request.user
        try:
            if otp_device_for(user) is None:
                otp_enrolment_confirm(user=user, code=form.cleaned_data["code"], request=request)
            else:
                if not user.is_verified():
                    return redirect("login-otp")
                otp_remove(user=user, code=form.cleaned_data["code"], request=request)
        except EngineError as exc:
            form.add_error(None, exc.message)
            return self._render(request, form, status=400)
        return redirect("home")
