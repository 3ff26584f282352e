"""Login forms for the browser. The admin site's own form is in accounts/admin_site.py."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.hashers import make_password

from accounts.lockout import locked_message

PENDING_MESSAGE = (
    "Your password is right, but your account is waiting for an administrator to activate it. "
    "You can log in once it is activated."
)
DEACTIVATED_MESSAGE = (
    "Your password is right, but your account has been deactivated. Ask an administrator if "
    "you need it again."
)


class LockoutMixin:
    """Say "locked out" (code `locked`, the view answers 429) when django-axes refused the
    login, instead of the wrong-password message; axes itself counts and audit.receivers logs.

    In the form rather than the view so that every login form (ours and the admin site's)
    gives the same answer: a guess spent on one page is not free on the other.
    """

    request: Any

    def clean(self) -> dict[str, Any]:
        try:
            return super().clean()  # type: ignore[misc]
        except forms.ValidationError:
            if getattr(self.request, "axes_locked_out", False):
                raise forms.ValidationError(locked_message(), code="locked") from None
            raise


class GuardedAuthenticationForm(LockoutMixin, AuthenticationForm):
    """The session login form. A login refused for an inactive account says why, but only
    after the right password, so the answer tells nothing to someone probing usernames."""

    def clean(self) -> dict[str, Any]:
        try:
            return super().clean()
        except forms.ValidationError as refused:
            if refused.code == "locked" or getattr(self.request, "axes_locked_out", False):
                raise
            inactive = self._inactive_with_right_password()
            if inactive is None:
                raise
            message, code = (
                (PENDING_MESSAGE, "pending")
                if inactive.last_login is None
                else (DEACTIVATED_MESSAGE, "inactive")
            )
            raise forms.ValidationError(message, code=code) from None

    def _inactive_with_right_password(self) -> Any:
        username = self.cleaned_data.get("username") or ""
        password = self.cleaned_data.get("password") or ""
        user = get_user_model()._default_manager.filter(username=username).first()
        if user is None:
            # The same work as checking a password, so an unknown name answers no faster.
            make_password(password)
            return None
        right = user.check_password(password)
        return user if right and not user.is_active else None
