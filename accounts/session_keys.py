"""Key exchanges and the session keys they produce: kept in the cache, never in the database.

Writes (`key_exchange_begin`, `key_exchange_complete`, `session_keys_revoke`), the read the
imaging APIs need (`session_key_for_request`, from the `X-Medimg-Seal: <key id>` and
`X-Medimg-Seal-Nonce: <fresh nonce>` headers, refusing a replayed nonce) and
the two calls that seal a download or open a sealed upload with it (`seal_for`,
`unseal_from`). The crypto itself is engine.crypto.transfer.

Everything secret that goes into the cache (the server's ephemeral private key between GET and
POST, and each session key) is first sealed with AES-256-GCM under a key derived from
SECRET_KEY, with the cache entry's own name as associated data: a cache dump (Redis RDB file,
a `MONITOR` session) reveals no key, and an entry copied under another name does not open.

- An exchange lives `KEY_EXCHANGE_SECONDS` (120 s), belongs to the user who began it, and can
  be completed once (`cache.add` on a claim entry is atomic in Redis and in locmem).
- A session key lives `SESSION_KEY_SECONDS` (default 3600 s). Each user has an epoch; every
  key records the epoch it was made in, and logout, a password change or deactivation sets a
  new epoch, so all of that user's keys die at once even if deleting one of them was missed.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from rest_framework.authentication import SessionAuthentication

from audit.models import Action, Outcome
from audit.services import audit_record
from engine import errors
from engine.crypto import transfer
from engine.errors import EngineError

KEY_EXCHANGE_SECONDS = 120
SEAL_HEADER = "X-Medimg-Seal"
_SEAL_META = "HTTP_X_MEDIMG_SEAL"
SEAL_NONCE_HEADER = "X-Medimg-Seal-Nonce"
_SEAL_NONCE_META = "HTTP_X_MEDIMG_SEAL_NONCE"
_NONCE_RE = re.compile(r"^[0-9a-f]{32}$")
_EXCHANGE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{32}$")
_PREFIX = "kx"
# Keys of a user that outlive their epoch are dead; the index is only for tidying up.
_INDEX_SECONDS_MARGIN = 60


def session_key_seconds() -> int:
    return int(getattr(settings, "SESSION_KEY_SECONDS", 3600))


# --- Sealed cache entries --------------------------------------------------------------------


def _cache_wrap_key() -> bytes:
    return transfer.hkdf_sha256(
        settings.SECRET_KEY.encode(), salt=b"medimg/cache-wrap/v1", info=b"session-keys"
    )


def _put(name: str, secret: bytes, timeout: int) -> None:
    # nonce (12) | ciphertext || tag, the entry's name as associated data.
    cache.set(name, transfer.aead_seal(_cache_wrap_key(), secret, aad=name.encode()), timeout)


def _get(name: str) -> bytes | None:
    blob = cache.get(name)
    if not isinstance(blob, bytes) or len(blob) < transfer.NONCE_BYTES + transfer.TAG_BYTES:
        return None
    nonce, sealed = blob[: transfer.NONCE_BYTES], blob[transfer.NONCE_BYTES :]
    try:
        return transfer.aead_open(_cache_wrap_key(), nonce, sealed, aad=name.encode())
    except transfer.SealError:
        return None


def _exchange_name(exchange_id: str, user_id: int) -> str:
    # The user is part of the name: another user's lookup finds nothing at all.
    return f"{_PREFIX}:exchange:{user_id}:{exchange_id}"


def _session_name(user_id: int, key_id: str) -> str:
    return f"{_PREFIX}:session-key:{user_id}:{key_id}"


def _epoch_name(user_id: int) -> str:
    return f"{_PREFIX}:epoch:{user_id}"


def _index_name(user_id: int) -> str:
    return f"{_PREFIX}:index:{user_id}"


def _epoch(user_id: int) -> str:
    # timeout=None: the epoch must outlive every key made under it. Lost to eviction, a new
    # one is made and the old keys die early, which is the safe way to fail.
    cache.add(_epoch_name(user_id), secrets.token_hex(8), timeout=None)
    return str(cache.get(_epoch_name(user_id)) or "")


# --- Exchange --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExchangeOffer:
    exchange_id: str
    group: str
    server_public_key: bytes
    expires_in: int


@dataclass(frozen=True)
class SessionKeyInfo:
    key_id: str
    group: str
    expires_in: int


def _invalid_exchange() -> EngineError:
    return errors.invalid_exchange()


def key_exchange_begin(*, user: Any, group: str) -> ExchangeOffer:
    """A fresh server key for `group`, kept (sealed) for KEY_EXCHANGE_SECONDS for `user` only."""
    if group not in transfer.GROUPS:
        raise errors.invalid_group(transfer.GROUPS)
    pair = transfer.generate_server_key(group)
    exchange_id = secrets.token_urlsafe(24)
    entry = bytes([len(group)]) + group.encode() + len(pair.public).to_bytes(2, "big")
    _put(
        _exchange_name(exchange_id, user.pk),
        entry + pair.public + pair.private,
        KEY_EXCHANGE_SECONDS,
    )
    return ExchangeOffer(
        exchange_id=exchange_id,
        group=group,
        server_public_key=pair.public,
        expires_in=KEY_EXCHANGE_SECONDS,
    )


def _take_exchange(*, user: Any, exchange_id: str) -> tuple[str, bytes, bytes]:
    """(group, server public, server private) for a live exchange of `user`, claimed once."""
    if not _EXCHANGE_ID_RE.match(exchange_id):
        raise _invalid_exchange()
    name = _exchange_name(exchange_id, user.pk)
    entry = _get(name)
    if entry is None:
        raise _invalid_exchange()
    # Atomic claim: of two concurrent completions, exactly one gets past this line.
    if not cache.add(f"{name}:used", 1, KEY_EXCHANGE_SECONDS):
        raise _invalid_exchange()
    cache.delete(name)
    group_len = entry[0]
    group = entry[1 : 1 + group_len].decode()
    pub_len = int.from_bytes(entry[1 + group_len : 3 + group_len], "big")
    rest = entry[3 + group_len :]
    return group, rest[:pub_len], rest[pub_len:]


def key_exchange_complete(
    *, user: Any, exchange_id: str, public_key: str, request: HttpRequest | None = None
) -> SessionKeyInfo:
    """Check the client's public key, derive and store the session key, return its id.

    The exchange is used up even when the public key is refused: a client cannot probe one
    server key with many bad points.
    """
    group, server_public, server_private = _take_exchange(user=user, exchange_id=exchange_id)
    try:
        client_public = transfer.b64decode_public_key(public_key, group=group)
        secret = transfer.shared_secret(group, server_private, client_public)
    except transfer.InvalidPublicKey as exc:
        audit_record(
            action=Action.KEY_EXCHANGED,
            actor=user,
            outcome=Outcome.REFUSED,
            request=request,
            details={"group": group, "reason": "invalid_public_key"},
        )
        raise errors.invalid_public_key(str(exc)) from None
    session_key, key_id = transfer.derive_session_key(
        secret,
        group=group,
        user_id=user.pk,
        exchange_id=exchange_id,
        server_public=server_public,
        client_public=client_public,
    )
    lifetime = session_key_seconds()
    epoch = _epoch(user.pk).encode()
    _put(_session_name(user.pk, key_id), bytes([len(epoch)]) + epoch + session_key, lifetime)
    index = list(cache.get(_index_name(user.pk)) or [])
    cache.set(_index_name(user.pk), [*index[-63:], key_id], lifetime + _INDEX_SECONDS_MARGIN)
    audit_record(
        action=Action.KEY_EXCHANGED,
        actor=user,
        request=request,
        details={"group": group, "key_id": key_id},
    )
    return SessionKeyInfo(key_id=key_id, group=group, expires_in=lifetime)


# --- Session keys ----------------------------------------------------------------------------


def session_key_get(*, user_id: int, key_id: str) -> bytes | None:
    """The live session key `key_id` of `user_id`, or None (unknown, expired or revoked)."""
    if not transfer.KEY_ID_RE.match(key_id):
        return None
    entry = _get(_session_name(user_id, key_id))
    if entry is None:
        return None
    epoch_len = entry[0]
    current = cache.get(_epoch_name(user_id))
    if current is None or entry[1 : 1 + epoch_len].decode() != str(current):
        return None
    return entry[1 + epoch_len :]


def session_keys_revoke(*, user_id: int) -> None:
    """Every session key of `user_id` stops working now (logout, password change, deactivation)."""
    cache.set(_epoch_name(user_id), secrets.token_hex(8), timeout=None)
    index = cache.get(_index_name(user_id)) or []
    cache.delete_many([_session_name(user_id, key_id) for key_id in index])
    cache.delete(_index_name(user_id))


@dataclass(frozen=True)
class SealContext:
    key_id: str
    key: bytes
    # The request's X-Medimg-Seal-Nonce: bound into every seal made or opened for it.
    nonce: str


def _nonce_name(user_id: int, key_id: str, nonce: str) -> str:
    return f"{_PREFIX}:nonce:{user_id}:{key_id}:{nonce}"


def _is_browser_session(request: Any) -> bool:
    return isinstance(getattr(request, "successful_authenticator", None), SessionAuthentication)


def session_key_for_request(
    request: Any, *, api_clients_must_seal: bool = False
) -> SealContext | None:
    """The session key named by the `X-Medimg-Seal` header, or None when there is no header.

    Every sealed request also carries `X-Medimg-Seal-Nonce`: 32 lower-case hex characters,
    fresh per request. It is bound into the associated data of what is sealed for it (a
    download) or in it (an upload), and a nonce already seen with that key is refused, so a
    captured sealed request cannot be played again. Nonces are remembered in the cache (the
    shared Redis in production) for as long as a session key can live.

    With `api_clients_must_seal` (restores, region decryptions) and the setting
    MEDIMG_REQUIRE_SEALED_TRANSFERS on (the default in production), a request without the
    header from anything but a browser session (whose pages seal with WebCrypto themselves)
    is refused: 400 `seal_required`.

    400 `invalid_seal_header` for a malformed key id; 401 `not_authenticated` without a user;
    401 `session_key_expired` for a key that is unknown, expired, revoked or another user's;
    400 `invalid_seal_nonce` for a missing or malformed nonce; 409 `seal_replayed` for a
    nonce already used with this key.
    """
    raw = request.META.get(_SEAL_META)
    if raw is None:
        if (
            api_clients_must_seal
            and settings.MEDIMG_REQUIRE_SEALED_TRANSFERS
            and not _is_browser_session(request)
        ):
            raise errors.seal_required(SEAL_HEADER, SEAL_NONCE_HEADER)
        return None
    key_id = raw.strip()
    if not transfer.KEY_ID_RE.match(key_id):
        raise errors.invalid_seal_header(SEAL_HEADER)
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        raise errors.not_authenticated("Sealed transfers need a signed-in user.")
    key = session_key_get(user_id=user.pk, key_id=key_id)
    if key is None:
        raise errors.session_key_expired()
    nonce = (request.META.get(_SEAL_NONCE_META) or "").strip()
    if not _NONCE_RE.match(nonce):
        raise errors.invalid_seal_nonce(SEAL_NONCE_HEADER)
    # Atomic in Redis and in locmem: of two requests with one nonce, exactly one gets past.
    if not cache.add(_nonce_name(user.pk, key_id, nonce), 1, session_key_seconds()):
        raise errors.seal_replayed(SEAL_NONCE_HEADER)
    return SealContext(key_id=key_id, key=key, nonce=nonce)


SEALED_CONTENT_TYPE = "application/vnd.medimg.sealed"


def seal_for(context: SealContext, data: bytes, *, purpose: str, **fields: object) -> bytes:
    """Seal a download for the client holding `context`'s key, bound to `purpose`, `fields`
    and the request's nonce (for a restore: `seal_for(ctx, png, purpose="restore",
    scan=scan.pk, format="png")`, associated data `transfer_aad("restore", ..., nonce=)`)."""
    aad = transfer.transfer_aad(purpose, **fields, nonce=context.nonce)
    return transfer.seal(context.key, data, key_id=context.key_id, aad=aad)


def unseal_from(context: SealContext, data: bytes, *, purpose: str, **fields: object) -> bytes:
    """Open a sealed upload, or 400 `invalid_sealed_body` (tampered, other key or context).

    The request's nonce is part of the associated data: a body sealed for another request
    (a replay under a fresh nonce) does not open."""
    aad = transfer.transfer_aad(purpose, **fields, nonce=context.nonce)
    try:
        return transfer.unseal(context.key, data, key_id=context.key_id, aad=aad)
    except transfer.SealError:
        raise errors.invalid_sealed_body() from None
