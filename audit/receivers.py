"""Audit events that Django itself announces: session logins, logouts, failures, admin edits.

Signals are used only here, because these events happen inside Django's own views
(login, admin) where there is no service of ours to call.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_save
from django.dispatch import receiver

from audit.models import Action, Outcome
from audit.services import audit_record


@receiver(user_logged_in, dispatch_uid="audit_login")
def _on_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    audit_record(action=Action.LOGIN, actor=user, request=request, details={"method": "session"})


@receiver(user_logged_out, dispatch_uid="audit_logout")
def _on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        audit_record(
            action=Action.LOGOUT, actor=user, request=request, details={"method": "session"}
        )


@receiver(user_login_failed, dispatch_uid="audit_login_failed")
def _on_login_failed(
    sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any
) -> None:
    # Django has already masked the password in `credentials`; keep only the username.
    # The lockout backend (accounts.lockout) or a view may name the reason on the request.
    reason = getattr(request, "login_failure_reason", None)
    locked = reason == "too_many_failures"
    audit_record(
        action=Action.LOGIN_FAILED,
        outcome=Outcome.REFUSED if locked else Outcome.FAILURE,
        username=str(credentials.get("username", "")),
        request=request,
        details={"reason": reason} if reason else None,
    )


@receiver(post_save, sender=LogEntry, dispatch_uid="audit_admin_change")
def _on_admin_change(sender: Any, instance: LogEntry, created: bool, **kwargs: Any) -> None:
    if not created:
        return
    audit_record(
        action=Action.ADMIN_CHANGE,
        actor=instance.user,
        target_type=instance.content_type.model if instance.content_type else "",
        target_id=instance.object_id or "",
        details={
            "change": {1: "added", 2: "changed", 3: "deleted"}.get(instance.action_flag, "other"),
            "object": instance.object_repr,
            "message": instance.get_change_message(),
        },
    )
