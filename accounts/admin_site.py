"""The Django admin site, open to active users with the admin role and no one else.

`is_staff` alone is not enough: a technician or doctor who somehow has the flag (a stale
row, a hand-edited database) must still be kept out, so the role is checked too.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.http import HttpRequest

from accounts.forms import LoginGuardMixin
from accounts.models import Role
from audit.models import Action, Outcome
from audit.services import audit_record


def is_site_admin(user: object) -> bool:
    return bool(
        getattr(user, "is_authenticated", False)
        and getattr(user, "is_active", False)
        and getattr(user, "is_staff", False)
        and getattr(user, "role", None) == Role.ADMIN
    )


class RoleAdminAuthenticationForm(LoginGuardMixin, AdminAuthenticationForm):
    """The admin site's login: the staff flag and the admin role, both required."""

    login_method = "admin"

    def confirm_login_allowed(self, user: Any) -> None:
        super().confirm_login_allowed(user)
        if not is_site_admin(user):
            # The password was right, so Django's user_login_failed did not fire: log it here.
            audit_record(
                action=Action.LOGIN_FAILED,
                outcome=Outcome.REFUSED,
                actor=user,
                request=self.request,
                details={"method": "admin", "reason": "not_admin"},
            )
            raise forms.ValidationError(
                self.error_messages["invalid_login"],
                code="invalid_login",
                params={"username": self.username_field.verbose_name},
            )


class MedimgAdminSite(admin.AdminSite):
    site_header = "medimg administration"
    site_title = "medimg admin"
    index_title = "Users, settings and audit"
    login_form = RoleAdminAuthenticationForm

    def has_permission(self, request: HttpRequest) -> bool:
        return is_site_admin(request.user)
