"""Session logout happens inside Django's own views (ours and the admin's): the signal is the
only place to end the user's session keys there. JWT logout calls the service directly."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver

from accounts.session_keys import session_keys_revoke


@receiver(user_logged_out, dispatch_uid="accounts_session_keys_revoke")
def _on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None and user.pk is not None:
        session_keys_revoke(user_id=user.pk)
