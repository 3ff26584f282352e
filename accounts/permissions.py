"""Role permissions for the API. Object access is decided by scoped querysets, not here."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from accounts.models import CLINICAL_ROLES, Role


class _HasRole(BasePermission):
    roles: frozenset[str] = frozenset()
    message = "Your role may not do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(
            user
            and user.is_authenticated
            and user.is_active
            and getattr(user, "role", None) in self.roles
        )


class IsTechnician(_HasRole):
    roles = frozenset({Role.TECHNICIAN})


class IsDoctor(_HasRole):
    roles = frozenset({Role.DOCTOR})


class IsAdmin(_HasRole):
    roles = frozenset({Role.ADMIN})


class IsClinical(_HasRole):
    """Technicians and doctors: the roles that see patient data."""

    roles = frozenset(CLINICAL_ROLES)
