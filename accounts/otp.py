"""Second factor: TOTP (RFC 6238) devices from django-otp, one per user.

Optional for technicians and doctors, required for admins: an admin without a confirmed device
is sent to enrolment before anything else (accounts.otp_middleware), and the admin site and
admin JWT logins need a verified code. A user with a confirmed device must give a code at
every login: the session login asks for it as a second step (accounts.otp_views), the JWT
token endpoint takes it in the `otp` field.

django-otp keeps the TOTP secret in its own table (`otp_totp_totpdevice.key`, hex); its
verify_token refuses a code already used (`last_t`) and throttles repeated failures with an
exponential back-off, on top of the django-axes lockout that counts each wrong code as a
failed login.
"""

from __future__ import annotations

import io
import re
from base64 import b32encode
from typing import Any

import qrcode
import qrcode.image.svg
from django.db import transaction
from django.http import HttpRequest
from django_otp import login as otp_session_login
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import Role
from audit.models import Action, Outcome
from audit.services import audit_record
from engine import errors
from engine.errors import EngineError

DEVICE_NAME = "authenticator app"
_CODE_RE = re.compile(r"^[0-9]{6}$")


def otp_required_for(user: Any) -> bool:
    """Admins must have a second factor; for other roles it is their choice."""
    return getattr(user, "role", None) == Role.ADMIN


def otp_device_for(user: Any) -> TOTPDevice | None:
    """The user's confirmed TOTP device, or None when they have not enrolled."""
    if user is None or user.pk is None:
        return None
    return TOTPDevice.objects.filter(user_id=user.pk, confirmed=True).order_by("id").first()


def otp_check(device: TOTPDevice, code: str) -> bool:
    """Whether `code` is the device's current code (and not used before, and not throttled)."""
    code = (code or "").strip().replace(" ", "")
    if not _CODE_RE.match(code):
        return False
    allowed, _ = device.verify_is_allowed()
    if not allowed:
        return False
    return bool(device.verify_token(code))


def otp_verify(*, user: Any, code: str) -> TOTPDevice | None:
    """The user's confirmed device when `code` is right for it, else None."""
    device = otp_device_for(user)
    if device is None or not otp_check(device, code):
        return None
    return device


@transaction.atomic
def otp_enrolment_start(*, user: Any) -> TOTPDevice:
    """The unconfirmed device the user is enrolling (made on first call, the same one after)."""
    device = TOTPDevice.objects.filter(user_id=user.pk, confirmed=False).order_by("id").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)
    return device


def _refused(*, user: Any, change: str, request: HttpRequest) -> EngineError:
    # Audited outside any transaction of the caller's, so the refusal is not rolled back.
    audit_record(
        action=Action.ADMIN_CHANGE,
        actor=user,
        target=user,
        outcome=Outcome.FAILURE,
        request=request,
        details={"change": change, "reason": "otp_invalid"},
    )
    return errors.otp_invalid()


def otp_enrolment_confirm(*, user: Any, code: str, request: HttpRequest) -> TOTPDevice:
    """Confirm the pending device with a code from the app; the session is then verified."""
    device = TOTPDevice.objects.filter(user_id=user.pk, confirmed=False).order_by("id").first()
    if device is None or not otp_check(device, code):
        raise _refused(user=user, change="otp_enrolment", request=request)
    with transaction.atomic():
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        # One device per user: anything else enrolled before is replaced by this one.
        TOTPDevice.objects.filter(user_id=user.pk).exclude(pk=device.pk).delete()
        audit_record(
            action=Action.ADMIN_CHANGE,
            actor=user,
            target=user,
            request=request,
            details={"change": "otp_enrolled"},
        )
    otp_session_login(request, device)
    return device


def otp_remove(*, user: Any, code: str, request: HttpRequest) -> None:
    """Turn the second factor off (not for admins), proven with a current code."""
    if otp_required_for(user):
        raise errors.otp_required("Administrators cannot turn off two-factor login.")
    if otp_verify(user=user, code=code) is None:
        raise _refused(user=user, change="otp_removed", request=request)
    with transaction.atomic():
        TOTPDevice.objects.filter(user_id=user.pk).delete()
        audit_record(
            action=Action.ADMIN_CHANGE,
            actor=user,
            target=user,
            request=request,
            details={"change": "otp_removed"},
        )
    request.session.pop("otp_device_id", None)


def otp_secret_text(device: TOTPDevice) -> str:
    """The secret as authenticator apps take it when typed: base32 in groups of four."""
    text = b32encode(device.bin_key).decode("ascii").rstrip("=")
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def otp_qr_svg(device: TOTPDevice) -> str:
    """The device's otpauth:// URL as an inline SVG QR code, made here (no external service)."""
    image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage)
    buffer = io.BytesIO()
    image.save(buffer)
    svg = buffer.getvalue().decode("utf-8")
    # Inline in the page: drop the XML declaration, keep the <svg> element.
    return svg[svg.index("<svg") :]
