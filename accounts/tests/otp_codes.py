"""Real TOTP codes for tests: computed with django-otp's own RFC 6238 implementation."""

from __future__ import annotations

from typing import Any

from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice


def enrol(user: Any) -> TOTPDevice:
    """A confirmed authenticator device for `user`, as if set up on /account/2fa/."""
    return TOTPDevice.objects.create(user=user, name="phone", confirmed=True)


def code(device: TOTPDevice, *, steps_ahead: int = 0) -> str:
    """The device's code now, or `steps_ahead` 30-second steps later. The device accepts one
    step either side, and never the same step twice: a second login in one test uses
    steps_ahead=1."""
    value = totp(
        device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=steps_ahead
    )
    return f"{value:0{device.digits}d}"


def wrong_code(device: TOTPDevice) -> str:
    """Six digits that are none of the codes the device accepts right now."""
    accepted = {code(device, steps_ahead=k) for k in (-1, 0, 1)}
    return next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in accepted)
