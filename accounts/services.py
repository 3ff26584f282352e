"""Writes for accounts: registration, creation by an operator, roles, activation, JWT sessions.

Roles are set here and nowhere else. `is_staff` and `is_superuser` are derived from the role
(admin role <-> staff and superuser), so no form or request can grant one without the other.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import update_last_login
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.utils import datetime_from_epoch

from accounts.lockout import lockout_reset
from accounts.models import Role, User
from accounts.otp import otp_device_for, otp_required_for, otp_verify
from accounts.session_keys import session_keys_revoke
from accounts.tokens import token_check_valid_after, token_pair_for, token_session_revoke
from audit.models import Action, Outcome
from audit.services import audit_record
from engine import errors
from engine.errors import EngineError, ErrorCode
from medimg.mail import notify_activated, notify_registration

# Self-service registration may ask for these roles only; admins come from `adduser`.
REGISTRABLE_ROLES = frozenset({Role.TECHNICIAN, Role.DOCTOR})


class PasswordRejected(EngineError):
    """The password fails Django's validators; `messages` lists every reason."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__(ErrorCode.INVALID_PASSWORD, " ".join(messages))
        self.messages = messages


def _check_password(password: str, user: User) -> None:
    try:
        validate_password(password, user=user)
    except DjangoValidationError as exc:
        raise PasswordRejected(list(exc.messages)) from None


def _check_username_free(username: str) -> None:
    # Case-insensitive: "Tina" next to "tina" invites impersonation in the audit log.
    if User.objects.filter(username__iexact=username).exists():
        raise errors.username_taken()


def _apply_role(user: User, role: str) -> None:
    user.role = role
    user.is_staff = role == Role.ADMIN
    user.is_superuser = role == Role.ADMIN


def _new_user(*, username: str, password: str, role: str, active: bool, **profile: str) -> User:
    user = User(username=username, is_active=active, **profile)
    _apply_role(user, role)
    # full_clean also NFKC-normalises the username, so "ﬁona" and "fiona" are one name.
    user.full_clean(exclude=["password"], validate_unique=False)
    _check_password(password, user)
    _check_username_free(user.username)
    user.set_password(password)
    try:
        # A savepoint, so a concurrent registration of the same name leaves the outer
        # transaction usable and the caller gets the same error as the check above.
        with transaction.atomic():
            user.save()
    except IntegrityError:
        raise errors.username_taken() from None
    return user


def _full_clean_errors(exc: DjangoValidationError) -> EngineError:
    fields = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
    first = next(iter(fields.items()))
    return errors.invalid(f"{first[0]}: {' '.join(first[1])}")


@transaction.atomic
def user_register(
    *,
    username: str,
    password: str,
    role: str,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    request: HttpRequest | None = None,
) -> User | None:
    """Self-service sign-up: an inactive account until an admin activates it.

    None when the name is taken: the caller answers exactly as for a new account, so that
    registration cannot tell anyone which usernames exist. The password is hashed all the
    same (the time a new account costs), and the attempt is audited as refused."""
    if role == Role.ADMIN:
        raise errors.role_not_allowed()
    if role not in REGISTRABLE_ROLES:
        raise errors.invalid_role("Role must be technician or doctor.")
    try:
        user = _new_user(
            username=username,
            password=password,
            role=role,
            active=False,
            email=email,
            first_name=first_name,
            last_name=last_name,
        )
    except DjangoValidationError as exc:
        raise _full_clean_errors(exc) from None
    except EngineError as exc:
        if exc.code != ErrorCode.USERNAME_TAKEN:
            raise
        make_password(password)
        audit_record(
            action=Action.USER_REGISTERED,
            outcome=Outcome.REFUSED,
            username=username,
            request=request,
            details={"requested_role": role, "reason": ErrorCode.USERNAME_TAKEN},
        )
        return None
    audit_record(
        action=Action.USER_REGISTERED,
        target=user,
        username=user.username,
        request=request,
        details={"requested_role": role},
    )
    # Admins are told an account waits (sent once this transaction commits).
    notify_registration(user)
    return user


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str,
    role: str,
    actor: User | None = None,
    email: str = "",
    request: HttpRequest | None = None,
    via: str = "adduser",
) -> User:
    """An operator creates an active account with any role (the `adduser` command)."""
    if role not in Role.values:
        raise errors.invalid_role(f"Role must be one of: {', '.join(Role.values)}.")
    try:
        user = _new_user(username=username, password=password, role=role, active=True, email=email)
    except DjangoValidationError as exc:
        raise _full_clean_errors(exc) from None
    audit_record(
        action=Action.USER_CREATED,
        actor=actor,
        target=user,
        request=request,
        details={"role": role, "via": via},
    )
    return user


@transaction.atomic
def user_set_role(
    *, user: User, role: str, actor: User, request: HttpRequest | None = None
) -> User:
    """Give `user` a role and the staff flags that go with it (called from Django admin)."""
    if role not in Role.values:
        raise errors.invalid_role("Unknown role.")
    if user.pk == actor.pk and role != Role.ADMIN:
        # An admin demoting themselves could leave no one able to repair it.
        raise errors.cannot_demote_self()
    previous = User.objects.filter(pk=user.pk).values_list("role", flat=True).first()
    _apply_role(user, role)
    user.save(update_fields=["role", "is_staff", "is_superuser"])
    if previous != role:
        audit_record(
            action=Action.ADMIN_CHANGE,
            actor=actor,
            target=user,
            request=request,
            details={"change": "role", "from": previous or "", "to": role},
        )
    return user


@transaction.atomic
def user_set_active(
    *, user: User, active: bool, actor: User, request: HttpRequest | None = None
) -> bool:
    """Activate or deactivate an account. Returns whether anything changed."""
    if user.pk == actor.pk and not active:
        raise errors.cannot_deactivate_self()
    if user.is_active == active:
        return False
    user.is_active = active
    fields = ["is_active"]
    if not active:
        # Reactivating later must not bring back the tokens and keys issued before this.
        user.tokens_valid_after = timezone.now()
        fields.append("tokens_valid_after")
    user.save(update_fields=fields)
    if not active:
        session_keys_revoke(user_id=user.pk)
    audit_record(
        action=Action.ADMIN_CHANGE,
        actor=actor,
        target=user,
        request=request,
        details={"change": "activated" if active else "deactivated"},
    )
    if active:
        notify_activated(user)
    return True


@transaction.atomic
def user_set_password(*, user: User, password: str | None) -> User:
    """Set a new password (None: no usable password) and revoke every earlier token.

    Access and refresh tokens issued before now are refused from here on, and the user's
    session keys die. Validation is the caller's form's (Django admin validates with the
    configured validators); the admin's own change log audits who did it.
    """
    if password is None:
        user.set_unusable_password()
    else:
        user.set_password(password)
    user.tokens_valid_after = timezone.now()
    user.save(update_fields=["password", "tokens_valid_after"])
    session_keys_revoke(user_id=user.pk)
    return user


def strong_password() -> str:
    """A random password that passes every configured validator (about 190 bits)."""
    return secrets.token_urlsafe(24)


# --- JWT sessions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenPair:
    access: str
    refresh: str


def _no_active_account() -> AuthenticationFailed:
    return AuthenticationFailed(
        "No active account found with the given credentials.", code="no_active_account"
    )


def _refresh_token(raw: str) -> RefreshToken:
    """Parse and verify a refresh token: signature, expiry, type and blacklist."""
    try:
        return RefreshToken(raw)  # type: ignore[arg-type]
    except TokenError as exc:
        raise InvalidToken(exc.args[0]) from exc


def _token_user(token: RefreshToken) -> User:
    user = User.objects.filter(pk=token.get(jwt_settings.USER_ID_CLAIM)).first()
    if user is None or not user.is_active:
        raise AuthenticationFailed(
            "No active account found for the given token.", code="no_active_account"
        )
    # A refresh token issued before a password change or a deactivation must not mint new
    # access tokens either.
    token_check_valid_after(token, user)
    return user


def _blacklist_once(token: RefreshToken, user: User | None) -> None:
    """Blacklist `token`, refusing if it already was: each refresh token works exactly once.

    simplejwt's own `blacklist()` uses get_or_create and so lets two concurrent uses of the
    same token both succeed; the unique row created here lets only one of them through.
    """
    outstanding, _ = OutstandingToken.objects.get_or_create(
        jti=token[jwt_settings.JTI_CLAIM],
        defaults={
            "user": user,
            "created_at": token.current_time,
            "token": str(token),
            "expires_at": datetime_from_epoch(token["exp"]),
        },
    )
    try:
        with transaction.atomic():
            BlacklistedToken.objects.create(token=outstanding)
    except IntegrityError:
        raise InvalidToken("Token is blacklisted") from None


def _otp_failure(code: str, message: str) -> AuthenticationFailed:
    return AuthenticationFailed(message, code=code)


def auth_token_obtain(
    *, username: str, password: str, request: Any, otp: str | None = None
) -> TokenPair:
    """Password (and, for a user with a TOTP device, code) login for API clients.

    django-axes counts failures per username and address inside `authenticate()`; a locked
    pair is refused with 429 even with the right password. Failures are audited by
    audit.receivers (Django's user_login_failed). A user with a confirmed device must send
    `otp` (401 `otp_required`; a wrong code is 401 `otp_invalid` and a counted failure); an
    admin without one is refused (401 `otp_enrolment_required`).
    """
    user = authenticate(request, username=username, password=password)
    if getattr(request, "axes_locked_out", False):
        cool_off = int(settings.AXES_COOLOFF_TIME.total_seconds())
        raise Throttled(wait=cool_off, detail="Too many failed logins. Try again later.")
    if user is None or not user.is_active:
        raise _no_active_account()
    device = otp_device_for(user)
    if device is None and otp_required_for(user):
        raise _otp_failure(
            ErrorCode.OTP_ENROLMENT_REQUIRED,
            "Administrators must set up two-factor login (page /account/2fa/) first.",
        )
    if device is not None:
        if not otp:
            raise _otp_failure(
                ErrorCode.OTP_REQUIRED, "This account needs its two-factor code: `otp`."
            )
        if otp_verify(user=user, code=otp) is None:
            request.login_failure_reason = ErrorCode.OTP_INVALID
            user_login_failed.send(
                sender=__name__, credentials={"username": username}, request=request
            )
            if getattr(request, "axes_locked_out", False):
                cool_off = int(settings.AXES_COOLOFF_TIME.total_seconds())
                raise Throttled(wait=cool_off, detail="Too many failed logins. Try again later.")
            raise _otp_failure(ErrorCode.OTP_INVALID, "That two-factor code is not right.")
    lockout_reset(username=username, request=request)
    refresh = token_pair_for(user)
    update_last_login(None, user)  # type: ignore[arg-type]  # a receiver; the sender is unused
    details: dict[str, Any] = {"method": "jwt"}
    if device is not None:
        details["otp"] = True
    audit_record(action=Action.LOGIN, actor=user, request=request, details=details)
    return TokenPair(access=str(refresh.access_token), refresh=str(refresh))


@transaction.atomic
def auth_token_refresh(*, refresh: str, request: Any) -> TokenPair:
    """Swap a refresh token for a new pair; the old refresh token stops working."""
    token = _refresh_token(refresh)
    user = _token_user(token)
    _blacklist_once(token, user)
    # The same login session: logging out with the newest refresh token ends all of it.
    new_refresh = token_pair_for(user, session_id=token.get("sid"))
    audit_record(action=Action.TOKEN_REFRESHED, actor=user, request=request)
    return TokenPair(access=str(new_refresh.access_token), refresh=str(new_refresh))


@transaction.atomic
def auth_logout(*, refresh: str, request: Any) -> None:
    """End an API login: its refresh token is blacklisted, its access tokens refused from now
    on, and the user's session keys end. Holding the refresh token is the credential."""
    token = _refresh_token(refresh)
    user = User.objects.filter(pk=token.get(jwt_settings.USER_ID_CLAIM)).first()
    _blacklist_once(token, user)
    # Committed or not, the access tokens of this login must stop now, not in 15 minutes.
    token_session_revoke(token)
    if user is not None:
        session_keys_revoke(user_id=user.pk)
    audit_record(action=Action.LOGOUT, actor=user, request=request, details={"method": "jwt"})
