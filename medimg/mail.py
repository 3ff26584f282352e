"""E-mail: who is told what, through Django's mail framework (SMTP settings from the
environment; the console backend when EMAIL_HOST is unset, as under `make run`).

- `notify_registration(user)`: active admins (with an address; else ALERT_EMAIL) learn that
  an account waits for activation.
- `notify_activated(user)`: the user learns the account is active.
- `alert_lockout(username, ip_address)`: ALERT_EMAIL, once per name and address per cool-off
  (django-axes' `user_locked_out`, connected by `connect_receivers`).
- `alert_integrity_failure(check, message)`: ALERT_EMAIL, when the audit chain does not verify
  (`medimg.tasks.verify_audit_chain`, run by beat) or a restore or region decryption fails its
  integrity check (counted from the audit log: `on_audit_event`).
- `notify_emergency_access(user, patient_reference, reason, expires_at)`: the privacy officer
  (PRIVACY_OFFICER_EMAIL) and ALERT_EMAIL, for every break-glass grant.

Mails never carry patient names, ids, images or secrets: a patient appears only as its
pseudonymous reference. Each mail goes after the transaction that caused it commits (nothing
is sent for an action that was rolled back) and a mail server that is down is logged, never
raised into the request that caused the mail.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.utils import timezone

from medimg.ratelimit import rate_limit_hit

logger = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _clean(text: object, limit: int = 80) -> str:
    """One line, no control characters (a typed username must not add mail headers)."""
    return _CONTROL.sub(" ", str(text)).strip()[:limit]


def _link(path: str) -> str:
    base = getattr(settings, "MEDIMG_BASE_URL", "")
    return f"{base}{path}" if base else path


def _when(value: datetime) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M %Z")


def _deliver(kind: str, subject: str, body: str, recipients: list[str]) -> None:
    """Send one message per recipient (no one sees the others' addresses)."""
    try:
        connection = get_connection(fail_silently=False)
        messages = [
            EmailMessage(subject=subject, body=body, to=[address]) for address in recipients
        ]
        connection.send_messages(messages)
    except Exception as exc:  # noqa: BLE001 - a mail server that is down must not fail the action
        logger.warning("mail %s not sent (%s)", kind, type(exc).__name__)


def send(kind: str, subject: str, body: str, recipients: Iterable[str]) -> int:
    """Queue a mail for when the current transaction commits (now, outside one). Returns how
    many recipients it will go to."""
    addresses = sorted({address.strip() for address in recipients if address and address.strip()})
    if not addresses:
        logger.info("mail %s: no recipient configured", kind)
        return 0
    subject = settings.EMAIL_SUBJECT_PREFIX + _clean(subject, 150)
    transaction.on_commit(lambda: _deliver(kind, subject, body, addresses))
    return len(addresses)


def _admin_addresses() -> list[str]:
    user_model = get_user_model()
    return list(
        user_model.objects.filter(role="admin", is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
    )


# --- Accounts ----------------------------------------------------------------------------------


def notify_registration(user: Any) -> int:
    recipients = _admin_addresses() or list(settings.ALERT_EMAIL)
    username = _clean(user.get_username())
    role = _clean(getattr(user, "role", "") or "no role")
    body = (
        f"A new account is waiting for activation.\n\n"
        f"Username: {username}\n"
        f"Requested role: {role}\n"
        f"Registered: {_when(user.date_joined)}\n\n"
        f"Check who this is before activating it, then tick 'active' in the admin site:\n"
        f"{_link(f'/admin/accounts/user/{user.pk}/change/')}\n\n"
        f"If you do not know this person, leave the account inactive.\n"
    )
    return send("registration", f"Account waiting for activation: {username}", body, recipients)


def notify_activated(user: Any) -> int:
    if not user.email:
        return 0
    body = (
        f"Hello {_clean(user.get_username())},\n\n"
        f"Your medimg account has been activated by an administrator. You can log in at\n"
        f"{_link('/login/')}\n\n"
        f"If you did not ask for an account, tell your IT service desk.\n"
    )
    return send("activated", "Your account is active", body, [user.email])


def alert_lockout(username: str, ip_address: str | None) -> int:
    """Once per name and address per cool-off period, however many attempts follow."""
    cool_off = int(settings.AXES_COOLOFF_TIME.total_seconds())
    ident = hashlib.sha256(f"{username}\x00{ip_address or '-'}".encode()).hexdigest()
    # Counted in the shared cache (medimg.ratelimit): one mail per window, across processes.
    if rate_limit_hit("mail-lockout", ident, window_seconds=cool_off) != 1:
        return 0
    name = _clean(username) or "(empty)"
    body = (
        f"Logins were locked after {settings.AXES_FAILURE_LIMIT} failed attempts.\n\n"
        f"Username tried: {name}\n"
        f"Client address: {ip_address or 'unknown'}\n"
        f"Time: {_when(timezone.now())}\n"
        f"Locked for: {cool_off // 60} minutes\n\n"
        f"The audit log (action login_failed) has every attempt. Many lockouts from one\n"
        f"address, or of many names, look like password guessing.\n"
    )
    return send("lockout", f"Login locked out: {name}", body, settings.ALERT_EMAIL)


def alert_integrity_failure(check: str, message: str) -> int:
    body = (
        f"An integrity check failed: {_clean(check)}.\n\n"
        f"{_clean(message, 500)}\n\n"
        f"Time: {_when(timezone.now())}\n\n"
        f"This can mean tampering with the database or the stored files, or lost data. Keep\n"
        f"the evidence (do not restore over it yet) and follow docs/operations.md,\n"
        f"'Integrity alerts'.\n"
    )
    return send("integrity", f"Integrity check failed: {_clean(check)}", body, settings.ALERT_EMAIL)


# --- Governance ----------------------------------------------------------------------------


def notify_emergency_access(
    user: Any, patient_reference: str, reason: str, expires_at: datetime
) -> int:
    """Every emergency (break-glass) access: who, which patient (pseudonymous reference
    only), why, and until when."""
    recipients = [*settings.PRIVACY_OFFICER_EMAIL, *settings.ALERT_EMAIL]
    username = _clean(user.get_username())
    body = (
        f"Emergency access was granted.\n\n"
        f"User: {username} ({_clean(getattr(user, 'role', '') or 'no role')})\n"
        f"Patient reference: {_clean(patient_reference)}\n"
        f"Reason given: {_clean(reason, 500)}\n"
        f"Granted: {_when(timezone.now())}\n"
        f"Expires: {_when(expires_at)}\n\n"
        f"Review it in the audit log; the reference finds the patient's record there.\n"
    )
    return send("emergency_access", f"Emergency access by {username}", body, recipients)


# --- Receivers -------------------------------------------------------------------------------


def _on_user_locked_out(
    sender: Any, request: Any = None, username: str = "", ip_address: str = "", **kwargs: Any
) -> None:
    try:
        alert_lockout(username or "", ip_address or None)
    except Exception:  # noqa: BLE001 - the lockout itself must go on
        logger.exception("mail: lockout alert failed")


def on_audit_event(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    """post_save on audit.AuditEvent: a restore or decryption that failed its integrity check
    (the services record error `restore_failed` when a ciphertext or blob does not verify)."""
    if not created:
        return
    from audit.models import Action, Outcome

    details = instance.details if isinstance(instance.details, dict) else {}
    if (
        instance.action in (Action.SCAN_RESTORED, Action.REGION_DECRYPTED)
        and instance.outcome == Outcome.FAILURE
        and details.get("error") == "restore_failed"
    ):
        what = "restore" if instance.action == Action.SCAN_RESTORED else "region decryption"
        alert_integrity_failure(
            what,
            f"A {what} of scan {_clean(instance.target_id)} by "
            f"{_clean(instance.actor_username) or 'a user'} failed: a stored ciphertext or "
            f"file did not verify (audit event #{instance.sequence}).",
        )


def connect_receivers() -> None:
    from axes.signals import user_locked_out

    user_locked_out.connect(_on_user_locked_out, dispatch_uid="medimg_mail_lockout")
