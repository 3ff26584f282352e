"""Reads for accounts."""

from __future__ import annotations

from accounts.models import User


def user_pending_activation_count() -> int:
    """Registered accounts still waiting for an administrator to activate them."""
    return User.objects.filter(is_active=False, last_login__isnull=True).count()
