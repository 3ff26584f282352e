"""Reads for accounts."""

from __future__ import annotations

from collections.abc import Iterable

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


def user_names(user_ids: Iterable[int]) -> dict[int, str]:
    """Usernames by id, for pages that show stored user ids (the audit log's care-team
    changes); ids of deleted users are missing."""
    return dict(User.objects.filter(pk__in=set(user_ids)).values_list("pk", "username"))
