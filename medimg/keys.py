"""Secrets that must never live in the database: where they come from.

A secret is taken from its setting (itself from `NAME` or `NAME_FILE` in the environment).
In development, a missing secret is generated once into KEY_DIR with a loud warning, so
`make run` works on a fresh machine; in production a missing secret stops the process.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from engine.crypto import keytext

logger = logging.getLogger(__name__)
_lock = threading.Lock()


def decode_key(raw: str, *, name: str, length: int = 32) -> bytes:
    """Keys are written as hex or urlsafe base64 of exactly `length` bytes
    (`engine.crypto.keytext.decode_key`); ImproperlyConfigured naming `name` otherwise."""
    try:
        return keytext.decode_key(raw, name=name, length=length)
    except keytext.KeyConfigError as exc:
        raise ImproperlyConfigured(str(exc)) from None


def dev_key_file(name: str, key_dir: Path, *, length: int = 32) -> str:
    """The text (hex) of the development key `name` under `key_dir`, generated on first use.

    Needs no Django settings, so settings.py itself can use it (SECRET_KEY). The file appears
    complete or not at all (written aside, then linked into place), so two processes starting
    at once both read the one key that won."""
    path = Path(key_dir) / f"{name.lower()}.key"
    with _lock:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            part = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(length))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(part, path)
            except FileExistsError:
                pass  # Another process was first: use its key.
            else:
                logger.warning(
                    "DEVELOPMENT KEY GENERATED: %s was not set, so a random key was written "
                    "to %s. Anything protected by it is lost if that file is lost. "
                    "Never use this in production.",
                    name,
                    path,
                )
            finally:
                part.unlink()
        return path.read_text().strip()


def load_or_create_dev_key(name: str, configured: str | None, *, length: int = 32) -> bytes:
    """The configured key, or (development only) a generated one kept under KEY_DIR."""
    if configured:
        return decode_key(configured, name=name, length=length)
    if settings.PRODUCTION:
        raise ImproperlyConfigured(f"MEDIMG_ENV=production needs {name} (or {name}_FILE)")
    text = dev_key_file(name, Path(settings.KEY_DIR), length=length)
    return decode_key(text, name=name, length=length)
