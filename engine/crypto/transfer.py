"""Transfer cryptography: the AES-256-GCM and HKDF primitives, written once for the whole
project, and the key agreement and sealed transfers built on them. Pure: no Django.

Primitives (every AES-GCM seal and open and every HKDF in the project goes through these)
    hkdf_sha256(ikm, *, salt, info, length=32) -> bytes
    aead_seal(key, plaintext, *, header=b"", aad=b"") -> header | nonce (12) | ciphertext || tag
    aead_open(key, nonce, ciphertext, *, header=b"", aad=b"") -> plaintext   # SealError
The GCM associated data is `header || aad`: a header written in front of the nonce (a
format's magic, version and key id) is authenticated together with the caller's context.
The nonce is 12 random bytes per seal. `engine.crypto.envelope` (stored blobs), this module's
sealed transfers and `accounts.session_keys` (cache entries) are the three formats on them.

Key agreement (the endpoints are accounts.apis and accounts.session_keys)

Groups
    x25519     RFC 7748. Public keys are the 32 raw bytes.
    ffdhe3072  RFC 7919 finite-field Diffie-Hellman, g = 2, prime below. Public keys are the
               big-endian value left-padded with zeros to 384 bytes (the length of p).

Public keys travel as standard base64 of those bytes. A key of any other length, a DH value
outside 1 < y < p - 1 or outside the prime-order subgroup (y^q mod p != 1, q = (p - 1) / 2),
and an X25519 point of small order (its shared secret is all zeros) are refused with
`InvalidPublicKey` (API code `invalid_public_key`).

Session key derivation (both sides compute exactly this)
    Z    = X25519(private, peer) (32 bytes), or y_peer^x mod p left-padded to 384 bytes
    info = b"medimg/session-key/v1"
           || lp(group) || lp(user id as ASCII decimal) || lp(exchange id)
           || lp(server public key bytes) || lp(client public key bytes)
           where lp(b) = 4-byte big-endian length of b || b
    okm  = HKDF-SHA256(ikm=Z, salt=b"medimg/key-exchange/v1", info=info, length=48)
    session key = okm[:32]; key id = hex(okm[32:48]) (32 lower-case hex characters)

The key id is a key confirmation: a client that computes the same id as the server's answer
knows both sides hold the same key. Binding the user, the exchange id and both public keys
in `info` means a key agreed for one user or one exchange is useless for any other.

Sealed transfers (AES-256-GCM under a session key)
    b"MSEAL" | version (1 byte, = 1) | key-id length (1 byte) | key id (ASCII) | nonce (12) |
    ciphertext || tag (16)
The GCM associated data is the header followed by the caller's `aad` (see `transfer_aad`),
so the header, the key id and the context are all authenticated. Session keys seal data in
transit only; they never encrypt anything that is stored.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dh, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.utils import CryptographyDeprecationWarning

X25519 = "x25519"
FFDHE3072 = "ffdhe3072"
GROUPS = (X25519, FFDHE3072)

# RFC 7919, Appendix A.2 (ffdhe3072): p = 2^3072 - 2^3008 + {[2^2942 * e] + 2625351} * 2^64 - 1,
# a safe prime; g = 2 generates the subgroup of prime order q = (p - 1) / 2. Written out as
# published; accounts/tests/test_keyexchange.py recomputes it from that formula.
FFDHE3072_P = int(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695"
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A"
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935"
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A"
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4"
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61"
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005"
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B4238611FCFDCDE355B3B6519035B"
    "BC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C"
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF"
    "5CAE82AB9C9DF69EE86D2BC522363A0DABC521979B0DEADA1DBF9A42D5C4484E"
    "0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B66C62E37FFFFFFFFFFFFFFFF",
    16,
)
FFDHE3072_G = 2
FFDHE3072_Q = (FFDHE3072_P - 1) // 2
FFDHE3072_BYTES = 384
X25519_BYTES = 32

SESSION_KEY_BYTES = 32
KEY_ID_BYTES = 16
HKDF_SALT = b"medimg/key-exchange/v1"
HKDF_INFO_LABEL = b"medimg/session-key/v1"

SEAL_MAGIC = b"MSEAL"
SEAL_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ID_RE = re.compile(r"^[0-9a-f]{32}$")


@contextmanager
def _ffdh() -> Iterator[dh.DHParameterNumbers]:
    """The ffdhe3072 parameters, with pyca's FFDH deprecation warning (cryptography 50) quieted.

    The architecture asks for RFC 7919 DH for clients without X25519, and pyca still
    implements it; the warning is for the maintainers (pin and watch cryptography's
    changelog), not something to print on every exchange.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        yield dh.DHParameterNumbers(FFDHE3072_P, FFDHE3072_G, FFDHE3072_Q)


class InvalidPublicKey(ValueError):
    """A peer public key that must not be used: wrong length, out of range, small order."""


class SealError(ValueError):
    """A sealed message that does not open: tampered, wrong key, wrong context, malformed."""


# --- Primitives ------------------------------------------------------------------------------


def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) of `ikm`: `length` bytes for `salt` and `info`."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def aead_seal(key: bytes, plaintext: bytes, *, header: bytes = b"", aad: bytes = b"") -> bytes:
    """`header` | a fresh random nonce (12 bytes) | AES-256-GCM of `plaintext` with its tag,
    the associated data being `header || aad`."""
    nonce = os.urandom(NONCE_BYTES)  # Random 96-bit nonce: never reused under one key in practice.
    return header + nonce + AESGCM(key).encrypt(nonce, bytes(plaintext), header + aad)


def aead_open(
    key: bytes, nonce: bytes, ciphertext: bytes, *, header: bytes = b"", aad: bytes = b""
) -> bytes:
    """The plaintext of `aead_seal`'s nonce and ciphertext (with its tag) under `key`, the
    associated data being `header || aad`; SealError for any tampering, wrong key or context."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, header + aad)
    except (InvalidTag, ValueError, TypeError):
        raise SealError("sealed message does not open") from None


# --- Public keys -----------------------------------------------------------------------------


def public_key_length(group: str) -> int:
    if group == X25519:
        return X25519_BYTES
    if group == FFDHE3072:
        return FFDHE3072_BYTES
    raise ValueError(f"unknown group {group!r}")


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode_public_key(text: str, *, group: str) -> bytes:
    """Strict standard base64 of exactly the group's public-key length, or InvalidPublicKey."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPublicKey("The public key is not valid base64.") from None
    if len(raw) != public_key_length(group):
        raise InvalidPublicKey(
            f"A {group} public key is {public_key_length(group)} bytes, not {len(raw)}."
        )
    return raw


def dh_check_public(y: int) -> None:
    """Refuse a DH public value that is out of range or outside the prime-order subgroup.

    1 < y < p - 1 rules out 0, 1, p - 1 and anything not reduced mod p; y^q = 1 puts y in
    the subgroup of prime order q, so no small-subgroup confinement can leak the private key.
    """
    if not 1 < y < FFDHE3072_P - 1:
        raise InvalidPublicKey("The Diffie-Hellman public value is out of range.")
    if pow(y, FFDHE3072_Q, FFDHE3072_P) != 1:
        raise InvalidPublicKey("The Diffie-Hellman public value is not in the right subgroup.")


@dataclass(frozen=True)
class ServerKeyPair:
    """An ephemeral server key: `private` is what must be kept secret between GET and POST."""

    group: str
    private: bytes
    public: bytes


def generate_server_key(group: str) -> ServerKeyPair:
    if group == X25519:
        x_key = x25519.X25519PrivateKey.generate()
        return ServerKeyPair(
            group=group,
            private=x_key.private_bytes_raw(),
            public=x_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
        )
    if group == FFDHE3072:
        with _ffdh() as parameters:
            numbers = parameters.parameters().generate_private_key().private_numbers()
        return ServerKeyPair(
            group=group,
            private=numbers.x.to_bytes(FFDHE3072_BYTES, "big"),
            public=numbers.public_numbers.y.to_bytes(FFDHE3072_BYTES, "big"),
        )
    raise ValueError(f"unknown group {group!r}")


def shared_secret(group: str, private: bytes, peer_public: bytes) -> bytes:
    """Z for `group`, after every check on `peer_public`; InvalidPublicKey if it fails one."""
    if len(peer_public) != public_key_length(group):
        raise InvalidPublicKey(f"A {group} public key is {public_key_length(group)} bytes.")
    if group == X25519:
        own = x25519.X25519PrivateKey.from_private_bytes(private)
        try:
            # cryptography raises ValueError when the result is all zeros: the peer sent a
            # point of small order (RFC 7748 section 6.1), which would fix the shared secret.
            secret = own.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:
            raise InvalidPublicKey("The X25519 public key has small order.") from None
        if not any(secret):  # Belt and braces, should a backend ever return zeros.
            raise InvalidPublicKey("The X25519 public key has small order.")
        return secret
    y = int.from_bytes(peer_public, "big")
    dh_check_public(y)
    x = int.from_bytes(private, "big")
    with _ffdh() as parameters:
        own_dh = dh.DHPrivateNumbers(
            x, dh.DHPublicNumbers(pow(FFDHE3072_G, x, FFDHE3072_P), parameters)
        ).private_key()
        try:
            secret = own_dh.exchange(dh.DHPublicNumbers(y, parameters).public_key())
        except ValueError:
            raise InvalidPublicKey("The Diffie-Hellman public value was refused.") from None
    # RFC 7919: Z keeps its leading zero bytes, so both sides hash the same 384 bytes.
    return secret.rjust(FFDHE3072_BYTES, b"\0")


# --- Derivation ------------------------------------------------------------------------------


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def hkdf_info(
    *, group: str, user_id: int | str, exchange_id: str, server_public: bytes, client_public: bytes
) -> bytes:
    """The HKDF info of the module docstring, length-prefixed so no two inputs collide."""
    return (
        HKDF_INFO_LABEL
        + _lp(group.encode("ascii"))
        + _lp(str(user_id).encode("ascii"))
        + _lp(exchange_id.encode("ascii"))
        + _lp(server_public)
        + _lp(client_public)
    )


def derive_session_key(
    secret: bytes,
    *,
    group: str,
    user_id: int | str,
    exchange_id: str,
    server_public: bytes,
    client_public: bytes,
) -> tuple[bytes, str]:
    """(session key, key id) from the shared secret, as the module docstring specifies."""
    info = hkdf_info(
        group=group,
        user_id=user_id,
        exchange_id=exchange_id,
        server_public=server_public,
        client_public=client_public,
    )
    okm = hkdf_sha256(secret, salt=HKDF_SALT, info=info, length=SESSION_KEY_BYTES + KEY_ID_BYTES)
    return okm[:SESSION_KEY_BYTES], okm[SESSION_KEY_BYTES:].hex()


# --- Sealing ---------------------------------------------------------------------------------


def transfer_aad(purpose: str, **fields: object) -> bytes:
    """Canonical associated data for one transfer, e.g. transfer_aad("restore", scan=uid).

    Sorted keys, compact JSON, ASCII: client and server build the same bytes from the same
    fields. Binding the purpose and the resource stops a sealed body being replayed elsewhere.
    """
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"medimg/sealed-{purpose}/v1\n".encode("ascii") + body.encode("ascii")


def _seal_header(key_id: str) -> bytes:
    if not KEY_ID_RE.match(key_id):
        raise ValueError(f"bad session key id {key_id!r}")
    return SEAL_MAGIC + bytes([SEAL_VERSION, len(key_id)]) + key_id.encode("ascii")


def seal(session_key: bytes, plaintext: bytes, *, key_id: str, aad: bytes) -> bytes:
    """Encrypt `plaintext` for the client holding `session_key` (see the module docstring)."""
    if len(session_key) != SESSION_KEY_BYTES:
        raise ValueError("session keys are 32 bytes")
    return aead_seal(session_key, plaintext, header=_seal_header(key_id), aad=aad)


def sealed_key_id(sealed: bytes) -> str:
    """The key id in a sealed message's header (authenticated only once `unseal` succeeds)."""
    head = len(SEAL_MAGIC)
    if len(sealed) < head + 2 or sealed[:head] != SEAL_MAGIC or sealed[head] != SEAL_VERSION:
        raise SealError("not a sealed message")
    id_len = sealed[head + 1]
    end = head + 2 + id_len
    if len(sealed) < end + NONCE_BYTES + TAG_BYTES:
        raise SealError("sealed message too short")
    try:
        key_id = sealed[head + 2 : end].decode("ascii")
    except UnicodeDecodeError:
        raise SealError("bad key id") from None
    if not KEY_ID_RE.match(key_id):
        raise SealError("bad key id")
    return key_id


def unseal(session_key: bytes, sealed: bytes, *, key_id: str, aad: bytes) -> bytes:
    """The plaintext, or SealError for any tampering, wrong key, wrong key id or context."""
    sealed = bytes(sealed)
    if not hmac.compare_digest(sealed_key_id(sealed), key_id):
        raise SealError("sealed under another key")
    end = len(SEAL_MAGIC) + 2 + len(key_id)
    header, nonce, body = sealed[:end], sealed[end : end + NONCE_BYTES], sealed[end + NONCE_BYTES :]
    return aead_open(session_key, nonce, body, header=header, aad=aad)
