"""Reads for accounts."""

from __future__ import annotations

from accounts.models import CLINICAL_ROLES, User


def user_pending_activation_count() -> int:
    """Registered accounts still waiting for an administrator to activate them."""
    return User.objects.filter(is_active=False, last_login__isnull=True).count()


def clinical_user_list() -> list[User]:
    """The active technicians and doctors, by username: who can be named on a care team."""
    return list(
        User.objects.filter(is_active=True, role__in=CLINICAL_ROLES)
        .prefetch_related("departments")
        .order_by("username")
    )
