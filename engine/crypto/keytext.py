"""Keys written as text (settings, environment, key files): hex or urlsafe base64.

    decode_key(raw, *, name, length=32) -> bytes      # KeyConfigError if malformed
    KeyConfigError                                    # a ValueError: a configuration mistake

Standard library only, so settings can use it while they load.
"""

from __future__ import annotations

import base64
import binascii


class KeyConfigError(ValueError):
    """A key or key ring that is not usable as configured: malformed text, a wrong length, an
    unknown or duplicate KEK id. A configuration mistake, never a decryption failure."""


def decode_key(raw: str, *, name: str, length: int = 32) -> bytes:
    """A key written as hex or urlsafe base64 (padding optional) of exactly `length` bytes;
    KeyConfigError naming `name` otherwise."""
    text = raw.strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        try:
            key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise KeyConfigError(f"{name} is neither hex nor base64") from None
    if len(key) != length:
        raise KeyConfigError(f"{name} must be {length} bytes, got {len(key)}")
    return key
