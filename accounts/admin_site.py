"""The Django admin site, open to active users with the admin role and no one else.

`is_staff` alone is not enough: a technician or doctor who somehow has the flag (a stale
row, a hand-edited database) must still be kept out, so the role is checked too.

Every list on the site filters only by what its `list_filter` and `date_hierarchy` offer
(`ListFilterLookupsOnly`, mixed into every ModelAdmin the site registers, ours and the
installed apps' alike). Django admin otherwise honours any lookup on a model's own fields
from the query string (`/admin/imaging/scan/?patient__exact=MRN-1234`,
`?original_filename__startswith=Smith`), and the row count that comes back lets an admin test
medical record numbers and file names one guess at a time.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.filters import SimpleListFilter
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Model
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest

from accounts.forms import LockoutMixin
from accounts.models import Role
from accounts.otp import otp_device_for, otp_verify
from audit.models import Action, Outcome
from audit.services import audit_record


def is_site_admin(user: object) -> bool:
    return bool(
        getattr(user, "is_authenticated", False)
        and getattr(user, "is_active", False)
        and getattr(user, "is_staff", False)
        and getattr(user, "role", None) == Role.ADMIN
    )


class RoleAdminAuthenticationForm(LockoutMixin, AdminAuthenticationForm):
    """The admin site's login: the staff flag, the admin role and a TOTP code, all required."""

    otp_token = forms.CharField(label="Two-factor code", max_length=10, required=False, strip=True)

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
        if otp_device_for(user) is None:
            raise forms.ValidationError(
                "Set up two-factor login first: log in on the main login page.",
                code="otp_enrolment_required",
            )
        device = otp_verify(user=user, code=self.data.get("otp_token", ""))
        if device is None:
            # A wrong code is a failed login: django-axes counts it, audit.receivers logs it.
            self.request.login_failure_reason = "otp_invalid"
            user_login_failed.send(
                sender=__name__, credentials={"username": user.get_username()}, request=self.request
            )
            raise forms.ValidationError("Wrong or missing two-factor code.", code="otp_invalid")
        user.otp_device = device  # django-otp marks the session verified at login.


def _field_path(model: type[Model], lookup: str) -> str:
    """The fields a lookup filters on, without its lookups and transforms:
    `patient__name__startswith` -> `patient__name`. A relation's own target field (the
    `patient__id__exact` that Django's related-field filter sends) names the relation."""
    path: list[str] = []
    previous: Any = None
    for part in lookup.split(LOOKUP_SEP):
        try:
            field: Any = model._meta.get_field(part)
        except FieldDoesNotExist:
            break
        targets = getattr(previous, "to_fields", None) or []
        if previous is not None and (part in targets or field is model._meta.pk):
            break
        path.append(part)
        if not getattr(field, "path_infos", None):
            break
        previous = field
        model = field.path_infos[-1].to_opts.model
    return LOOKUP_SEP.join(path)


class ListFilterLookupsOnly:
    """Query-string lookups only on the fields the list offers as filters.

    Allowed: the field of each `list_filter` entry (and of `date_hierarchy`) with any lookup
    or transform (`status__exact`, `created_at__gte`, `created_at__year`), and the parameter
    of each SimpleListFilter. Anything else is refused: Django answers 400
    (DisallowedModelAdminLookup). Checked before the ModelAdmin's own rule, which still
    applies (PatientAdmin allows even less).
    """

    model: type[Model]
    date_hierarchy: str | None
    list_filter: Any

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        model_admin: Any = self
        filters = (
            model_admin.list_filter if request is None else model_admin.get_list_filter(request)
        )
        fields = {self.date_hierarchy} if self.date_hierarchy else set()
        for item in filters:
            if isinstance(item, type) and issubclass(item, SimpleListFilter):
                if lookup == item.parameter_name:
                    return super().lookup_allowed(lookup, value, request)  # type: ignore[misc]
                continue
            fields.add(item[0] if isinstance(item, list | tuple) else item)
        if _field_path(self.model, lookup) not in fields:
            return False
        return super().lookup_allowed(lookup, value, request)  # type: ignore[misc]


def delete_selected_audited(modeladmin: Any, request: HttpRequest, queryset: Any) -> Any:
    """Django's "delete selected" action, audited per object.

    Django logs a bulk deletion with LogEntry.objects.bulk_create, which sends no post_save,
    so audit.receivers never hears of it (a single object is saved one by one and is heard).
    """
    confirmed = bool(request.POST.get("post"))
    doomed = [(obj.pk, str(obj)[:200]) for obj in queryset] if confirmed else []
    response = delete_selected(modeladmin, request, queryset)
    if confirmed and response is None and len(doomed) > 1:
        for pk, label in doomed:
            audit_record(
                action=Action.ADMIN_CHANGE,
                actor=request.user,
                target_type=modeladmin.model._meta.model_name,
                target_id=str(pk),
                request=request,
                details={"change": "deleted", "object": label, "message": "bulk delete"},
            )
    return response


delete_selected_audited.short_description = delete_selected.short_description  # type: ignore[attr-defined]
delete_selected_audited.allowed_permissions = ("delete",)  # type: ignore[attr-defined]


class MedimgAdminSite(admin.AdminSite):
    site_header = "medimg administration"
    site_title = "medimg admin"
    index_title = "Users, settings and audit"
    login_form = RoleAdminAuthenticationForm
    login_template = "admin/medimg_login.html"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._actions["delete_selected"] = delete_selected_audited
        self._global_actions["delete_selected"] = delete_selected_audited

    def register(self, model_or_iterable: Any, admin_class: Any = None, **options: Any) -> None:
        # Every list, ours and the installed apps' (axes, django-otp, simplejwt), filters only
        # by its list_filter: see the module docstring.
        base = admin_class or admin.ModelAdmin
        if not issubclass(base, ListFilterLookupsOnly):
            base = type(
                base.__name__, (ListFilterLookupsOnly, base), {"__module__": base.__module__}
            )
        super().register(model_or_iterable, base, **options)

    def has_permission(self, request: HttpRequest) -> bool:
        # An OTP-verified session only (django-otp's OTPMiddleware sets is_verified).
        user: Any = request.user
        return is_site_admin(user) and bool(getattr(user, "is_verified", lambda: False)())
