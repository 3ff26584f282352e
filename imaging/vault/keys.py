"""A scan's keys: where the key-encryption keys come from, and opening a scan's data key and
its stored original. The cryptography is `engine.crypto.envelope`; this module gives it the
key ring from settings, so no other code handles KEKs or unwraps a data key by hand.

    key_ring() -> KeyRing                                 # MEDIMG_KEKS, or the development KEK
    current_kek_id() -> str
    parse_keks(raw, current) -> KeyRing                   # ImproperlyConfigured if malformed
    wrap_data_key(data_key, *, scan_ref, kek_id=None) -> WrappedKey
    unwrap_data_key(blob, *, scan_ref) -> bytes           # CryptoError
    rewrap_data_key(blob, *, scan_ref, kek_id=None) -> WrappedKey   # rotation
    new_scan_key(scan_ref) -> (data_key, WrappedKey)      # a fresh data key, wrapped
    open_data_key(scan) -> bytes                          # the scan's data key; CryptoError
    seal_original(data_key, data, *, scan_ref) -> bytes   # an upload, encrypted for storing
    open_original(scan, *, data_key=None) -> bytes        # the stored upload; CryptoError, OSError

Settings:
- `MEDIMG_KEKS`: "id1:hex-or-base64,id2:..." (or `MEDIMG_KEKS_FILE`), 32-byte keys;
- `MEDIMG_KEK_CURRENT`: the id new data keys are wrapped with (may be omitted when there is
  exactly one KEK).
In development, with no `MEDIMG_KEKS`, one KEK with id "dev" is generated under KEY_DIR by
`medimg.keys.load_or_create_dev_key` (with its loud warning); production refuses to start
without `MEDIMG_KEKS` (see settings). Keys are parsed once per process and cached, keyed by
the setting values, so tests that change KEY_DIR or the settings get a fresh key ring.
A configuration the engine refuses (`KeyConfigError`) is raised as ImproperlyConfigured.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from engine.crypto import envelope
from engine.crypto.envelope import KeyRing, WrappedKey
from imaging.models import Scan
from imaging.vault.storage import storage_read
from medimg.erasures import erased_scan_uids
from medimg.keys import load_or_create_dev_key

__all__ = [
    "current_kek_id",
    "key_ring",
    "new_scan_key",
    "open_data_key",
    "open_original",
    "parse_keks",
    "rewrap_data_key",
    "seal_original",
    "unwrap_data_key",
    "wrap_data_key",
]


@contextmanager
def _as_improperly_configured() -> Iterator[None]:
    try:
        yield
    except envelope.KeyConfigError as exc:
        raise ImproperlyConfigured(str(exc)) from None


def parse_keks(raw: str, current: str | None) -> KeyRing:
    """`envelope.parse_keks`, a malformed setting raised as ImproperlyConfigured."""
    with _as_improperly_configured():
        return envelope.parse_keks(raw, current)


_ring_lock = threading.Lock()
_ring_cache: dict[tuple[object, ...], KeyRing] = {}


def key_ring() -> KeyRing:
    """The process's KEKs, parsed once per distinct configuration."""
    raw = getattr(settings, "MEDIMG_KEKS", None) or None
    current = getattr(settings, "MEDIMG_KEK_CURRENT", None) or None
    cache_key = (raw, current, str(settings.KEY_DIR), bool(settings.PRODUCTION))
    ring = _ring_cache.get(cache_key)
    if ring is not None:
        return ring
    with _ring_lock:
        ring = _ring_cache.get(cache_key)
        if ring is None:
            if raw:
                ring = parse_keks(raw, current)
            else:
                # Raises ImproperlyConfigured in production; warns loudly in development.
                dev = load_or_create_dev_key("MEDIMG_DEV_KEK", None, length=envelope.KEY_BYTES)
                ring = KeyRing(current_id=envelope.DEV_KEK_ID, keys={envelope.DEV_KEK_ID: dev})
            if len(_ring_cache) >= 64:
                _ring_cache.clear()  # Only tests change key settings often; stay bounded.
            _ring_cache[cache_key] = ring
    return ring


def current_kek_id() -> str:
    return key_ring().current_id


def wrap_data_key(data_key: bytes, *, scan_ref: object, kek_id: str | None = None) -> WrappedKey:
    """Wrap under `kek_id` (default: the current KEK), bound to `scan_ref`."""
    ring = key_ring()
    with _as_improperly_configured():
        return envelope.wrap_data_key(data_key, ring=ring, scan_ref=scan_ref, kek_id=kek_id)


def unwrap_data_key(blob: bytes | WrappedKey, *, scan_ref: object) -> bytes:
    """The data key, or CryptoError (tampered, other scan, or a KEK this process lacks)."""
    return envelope.unwrap_data_key(blob, ring=key_ring(), scan_ref=scan_ref)


def rewrap_data_key(
    blob: bytes | WrappedKey, *, scan_ref: object, kek_id: str | None = None
) -> WrappedKey:
    """Rotation: unwrap with whichever KEK wrapped it, wrap again under `kek_id` (or current)."""
    ring = key_ring()
    with _as_improperly_configured():
        return envelope.rewrap_data_key(blob, ring=ring, scan_ref=scan_ref, kek_id=kek_id)


def new_scan_key(scan_ref: object) -> tuple[bytes, WrappedKey]:
    """A fresh data key for the scan `scan_ref` and that key wrapped under the current KEK:
    keep the key for encrypting, store `wrapped.blob` and `wrapped.kek_id` on the scan."""
    data_key = envelope.new_data_key()
    return data_key, wrap_data_key(data_key, scan_ref=scan_ref)


def open_data_key(scan: Scan) -> bytes:
    """The scan's data key, unwrapped from its row. CryptoError if it does not unwrap, or if
    the scan was erased (a row brought back by an older backup: the erasure ledger names it)."""
    if str(scan.uid) in erased_scan_uids():
        raise envelope.CryptoError()  # Erased: its data key is destroyed.
    return unwrap_data_key(bytes(scan.wrapped_key), scan_ref=str(scan.uid))


def seal_original(data_key: bytes, data: bytes, *, scan_ref: object) -> bytes:
    """The original upload `data` of scan `scan_ref`, encrypted as `open_original` reads it."""
    return envelope.encrypt_blob(data_key, data, aad=envelope.original_aad(scan_ref=scan_ref))


def open_original(scan: Scan, *, data_key: bytes | None = None) -> bytes:
    """The scan's stored original upload, decrypted (`data_key`: the scan's, when the caller
    has it already). CryptoError when it fails its check, OSError when it cannot be read."""
    blob = storage_read(scan.original_path)  # First: a missing file is OSError, retried.
    if data_key is None:
        data_key = open_data_key(scan)
    return envelope.decrypt_blob(data_key, blob, aad=envelope.original_aad(scan_ref=str(scan.uid)))
