"""Login forms for the browser. The admin site's own form is in accounts/admin_site.py."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm

from accounts.lockout import LOCKED_MESSAGE


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
                raise forms.ValidationError(LOCKED_MESSAGE, code="locked") from None
            raise


class GuardedAuthenticationForm(LockoutMixin, AuthenticationForm):
    pass
