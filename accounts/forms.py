"""Login forms for the browser. The admin site's own form is in accounts/admin_site.py."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm

from accounts.login_guard import login_failure_note, login_failures_clear, login_locked
from audit.models import Action, Outcome
from audit.services import audit_record, client_ip

LOCKED_MESSAGE = "Too many failed logins for this account from here. Try again in 15 minutes."


class LoginGuardMixin:
    """Refuse without checking the password while the failed-login count is over its limit.

    In the form rather than the view so that every login form (ours and the admin site's)
    counts the same failures: a guess spent on one page is not free on the other.
    """

    login_method = "session"
    request: Any
    cleaned_data: dict[str, Any]

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        ip = client_ip(self.request)
        if login_locked(username=username, ip=ip):
            audit_record(
                action=Action.LOGIN_FAILED,
                outcome=Outcome.REFUSED,
                username=username,
                request=self.request,
                details={"method": self.login_method, "reason": "too_many_failures"},
            )
            raise forms.ValidationError(LOCKED_MESSAGE, code="locked")
        try:
            cleaned: dict[str, Any] = super().clean()  # type: ignore[misc]
        except forms.ValidationError:
            if username:
                login_failure_note(username=username, ip=ip)
            raise
        login_failures_clear(username=username, ip=ip)
        return cleaned


class GuardedAuthenticationForm(LoginGuardMixin, AuthenticationForm):
    pass
