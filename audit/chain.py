"""The hash chain: canonical encoding, entry hashes, the signed head and the export key.

No ORM here: these functions take plain values, so the same code checks rows read from the
database and lines read from an export file on a machine that has no database at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings

from medimg.keys import decode_key, load_or_create_dev_key

GENESIS_HASH = "0" * 64

# The fields that the hash covers, in the order they are documented. Adding a field
# here changes every hash: it needs a new chain version, not an edit.
HASHED_FIELDS = (
    "sequence",
    "created_at",
    "actor_id",
    "actor_username",
    "role",
    "action",
    "target_type",
    "target_id",
    "outcome",
    "ip",
    "user_agent",
    "details",
    "prev_hash",
)
# What one export line holds: everything the hash covers, plus the hash.
EXPORTED_FIELDS = (*HASHED_FIELDS, "hash")


def format_time(value: datetime) -> str:
    """UTC, microsecond precision: what both SQLite and PostgreSQL give back unchanged."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def canonical_record(
    fields: dict[str, Any], names: tuple[str, ...] = HASHED_FIELDS
) -> dict[str, Any]:
    record = {name: fields[name] for name in names}
    if isinstance(record["created_at"], datetime):
        record["created_at"] = format_time(record["created_at"])
    return record


def canonical_bytes(fields: dict[str, Any]) -> bytes:
    return canonical_json(canonical_record(fields))


def entry_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(fields)).hexdigest()


def export_line(fields: dict[str, Any]) -> bytes:
    """One event as one JSON Lines record: the hashed fields and the hash, canonical form."""
    return canonical_json(canonical_record(fields, EXPORTED_FIELDS)) + b"\n"


# --- Keys -------------------------------------------------------------------------------------

# Loading a key reads a file (development) or decodes a setting; `audit_record` needs the
# key on every append, so it is loaded once per process. The cache key holds the settings
# the value depends on, so a test (or a reload) that points KEY_DIR elsewhere gets its own.
_key_cache: dict[tuple[str, ...], bytes] = {}
# Re-entrant: the derived signing key loads the anchor key while holding it.
_key_cache_lock = threading.RLock()


def _cached(name: str, configured: str | None, load: Any) -> bytes:
    cache_key = (name, configured or "", str(settings.KEY_DIR), str(settings.PRODUCTION))
    key = _key_cache.get(cache_key)
    if key is None:
        with _key_cache_lock:
            key = _key_cache.get(cache_key)
            if key is None:
                key = load()
                _key_cache[cache_key] = key
    return key


def audit_key() -> bytes:
    """The HMAC key that signs the chain head. Never stored in the database."""
    configured = settings.AUDIT_HMAC_KEY
    return _cached(
        "AUDIT_HMAC_KEY",
        configured,
        lambda: load_or_create_dev_key("AUDIT_HMAC_KEY", configured),
    )


def _signing_seed() -> bytes:
    configured = getattr(settings, "AUDIT_SIGNING_KEY", None)
    if configured:
        return decode_key(configured, name="AUDIT_SIGNING_KEY")
    # Without its own key, the export key is derived from the anchor key: one secret to keep
    # outside the database, and a different key for a different job.
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"medimg audit export signing v1"
    ).derive(audit_key())


def signing_key() -> Ed25519PrivateKey:
    """The Ed25519 key that signs exports (from AUDIT_SIGNING_KEY or derived)."""
    configured = getattr(settings, "AUDIT_SIGNING_KEY", None)
    seed = _cached("AUDIT_SIGNING_KEY", configured, _signing_seed)
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_hex(key: Ed25519PublicKey | None = None) -> str:
    public = key or signing_key().public_key()
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def anchor_mac(sequence: int, head_hash: str, key: bytes | None = None) -> str:
    message = f"medimg-audit-anchor:v1:{sequence}:{head_hash}".encode()
    return hmac.new(key or audit_key(), message, hashlib.sha256).hexdigest()


def anchor_is_valid(sequence: int, head_hash: str, mac: str, key: bytes | None = None) -> bool:
    return hmac.compare_digest(anchor_mac(sequence, head_hash, key), mac)
