"""Users in Django admin: role, activation, last login. Roles change only through services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import (
    AdminPasswordChangeForm,
    AdminUserCreationForm,
    UserChangeForm,
)
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from accounts.models import Department, User
from accounts.services import user_set_active, user_set_password, user_set_role
from engine.errors import EngineError


class UserCreationAdminForm(AdminUserCreationForm):
    class Meta(AdminUserCreationForm.Meta):
        model = User
        fields = ("username", "role")


class UserChangeAdminForm(UserChangeForm):
    class Meta(UserChangeForm.Meta):
        model = User


class PasswordChangeAdminForm(AdminPasswordChangeForm):
    """Django admin's "change password" form, saving through the service that also revokes
    every token and session key issued before the change."""

    def set_password_and_save(self, user: Any, commit: bool = True, **kwargs: Any) -> Any:
        usable = self.cleaned_data.get("set_usable_password", True)
        password = self.cleaned_data["password1"] if usable else None
        if not commit:
            # Django 5.1's BaseUserCreationForm method, not in django-stubs yet.
            return super().set_password_and_save(user, commit=False, **kwargs)  # type: ignore[misc]
        return user_set_password(user=user, password=password)


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserChangeAdminForm
    add_form = UserCreationAdminForm
    change_password_form = PasswordChangeAdminForm
    list_display = ("username", "role", "is_active", "last_login", "date_joined")
    list_filter = ("role", "is_active", "departments")
    search_fields = ("username", "first_name", "last_name", "email")
    ordering = ("username",)
    actions = ["activate_users", "deactivate_users"]
    # Staff and superuser flags follow the role; groups and per-user permissions are unused
    # (access is by role), so none of them is editable here.
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name", "email")}),
        ("Access", {"fields": ("role", "is_active", "is_staff", "is_superuser")}),
        # Which patients a clinical user sees (patients.models.PatientQuerySet.visible_to).
        ("Departments", {"fields": ("departments",)}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("username", "role", "usable_password", "password1", "password2"),
            },
        ),
    )
    readonly_fields = ("is_staff", "is_superuser", "last_login", "date_joined")
    filter_horizontal = ("departments",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is not None and obj.pk == request.user.pk:
            # An admin cannot lock themselves out by demoting or deactivating their own account.
            fields += ("role", "is_active")
        return fields

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        role, active = obj.role, obj.is_active
        if change:
            # Save everything else with the stored role and activation first; the services
            # then change those (the role together with the staff flags) and audit them.
            if "role" in form.changed_data:
                obj.role = form.initial["role"]
            if "is_active" in form.changed_data:
                obj.is_active = form.initial["is_active"]
        super().save_model(request, obj, form, change)
        actor: User = request.user  # type: ignore[assignment]
        user_set_role(user=obj, role=role, actor=actor, request=request)
        if change:
            user_set_active(user=obj, active=active, actor=actor, request=request)

    def _set_active(self, request: HttpRequest, queryset: QuerySet[User], active: bool) -> None:
        changed = 0
        for user in queryset:
            try:
                changed += user_set_active(
                    user=user,
                    active=active,
                    actor=request.user,  # type: ignore[arg-type]
                    request=request,
                )
            except EngineError as exc:
                self.message_user(request, f"{user.username}: {exc.message}", messages.WARNING)
        verb = "activated" if active else "deactivated"
        self.message_user(request, f"{changed} account(s) {verb}.", messages.SUCCESS)

    @admin.action(description="Activate selected accounts", permissions=["change"])
    def activate_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._set_active(request, queryset, True)

    @admin.action(description="Deactivate selected accounts", permissions=["change"])
    def deactivate_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._set_active(request, queryset, False)


@admin.register(Department)
class DepartmentAdmin(admin.ModelAdmin):
    """Departments: names and counts. Members are set on each user's page; which patients
    belong where is set by clinical staff (patients.services), never shown here."""

    list_display = ("name", "slug", "member_count", "patient_count")
    prepopulated_fields = {"slug": ("name",)}
    search_fields = ("name", "slug")
    ordering = ("name",)
    actions = None

    def get_queryset(self, request: HttpRequest) -> QuerySet[Department]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                member_total=Count("members", distinct=True),
                patient_total=Count("patients", distinct=True),
            )
        )

    @admin.display(description="members", ordering="member_total")
    def member_count(self, obj: Department) -> int:
        return int(obj.member_total)  # type: ignore[attr-defined]

    @admin.display(description="patients", ordering="patient_total")
    def patient_count(self, obj: Department) -> int:
        return int(obj.patient_total)  # type: ignore[attr-defined]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A department that still has patients keeps them visible to its staff; removing it
        # would hide those records from everyone.
        if obj is not None and obj.patients.exists():
            return False
        return super().has_delete_permission(request, obj)
