"""Encryption of scans and regions: AES-256-GCM under envelope keys (pyca `cryptography` only).

Interface (stable; the imaging services call these):

    new_data_key() -> bytes                                   # 32 random bytes, one per scan
    parse_keks(raw, current) -> KeyRing                       # KeyConfigError if malformed
    wrap_data_key(data_key, *, ring, scan_ref, kek_id=None) -> WrappedKey   # default: current
    unwrap_data_key(blob, *, ring, scan_ref) -> bytes         # any KEK of the ring, by header
    rewrap_data_key(blob, *, ring, scan_ref, kek_id=None) -> WrappedKey   # rotation
    data_key_id(data_key) -> str                              # non-secret id of a data key
    encrypt_blob(key, plaintext, *, aad) -> bytes
    decrypt_blob(key, blob, *, aad) -> bytes                  # CryptoError on any failure
    region_aad(*, scan_ref, index, frame, box) -> bytes       # canonical associated data
    derivative_digest(data_key, data, *, scan_ref, kind, frame) -> str   # plain files' binding
    derivative_check(data_key, data, digest, *, scan_ref, kind, frame)   # CryptoError if not
    original_aad(*, scan_ref) -> bytes                        # for the stored original upload
    redacted_pixels_aad(*, scan_ref) / redacted_dataset_aad(*, scan_ref) -> bytes  # redacted copies
    pack_array(array) -> bytes / unpack_array(data) -> np.ndarray   # .npy, no pickle

`scan_ref` is a stable, unique text id of the scan (use `str(scan.uuid)` or `str(scan.pk)`;
it must never change for a scan, since every ciphertext is bound to it). `box` is
`(x0, y0, x1, y1)` in pixels, half-open (rows y0:y1, columns x0:x1), as everywhere in imaging.

Blob layout, on every ciphertext (region blobs, the stored original, wrapped data keys):

    b"MIMG" | version (1 byte, =1) | key-id length (1 byte) | key id (ASCII) | nonce (12) |
    ciphertext || GCM tag (16)

The header (magic, version, key id) is authenticated: the GCM associated data is the header
followed by the caller's `aad`, so a blob whose header, nonce, ciphertext, tag or context was
changed, or that was moved to another scan/region/frame/box, fails to decrypt.

Which key id goes in the header:
- wrapped data keys: the KEK id, so unwrap finds the right KEK after rotation;
- region and original blobs: `data_key_id(data_key)`, a keyed fingerprint of the data key.
  It is deliberately NOT the KEK id: rotation re-wraps the data key under a new KEK without
  touching blobs, so a blob must not be bound to whichever KEK wraps its key today. Binding
  to the data key's own id still ties every blob to one scan's key.

Every failure to decrypt or unwrap raises the same `CryptoError("decryption failed")`.

KEKs never live in the database, and this module never looks for them: the caller passes
a `KeyRing` (the KEKs by id and the current one). `parse_keks` reads the "id1:hex-or-base64,
id2:..." text of the `MEDIMG_KEKS` setting; a malformed text, or a KEK id the ring lacks when
wrapping, raises `KeyConfigError` (a ValueError). Where the ring comes from (settings, the
development KEK "dev" generated under KEY_DIR, one parse per process) is `imaging.vault.keys`,
which turns `KeyConfigError` into Django's ImproperlyConfigured.

Pure: no Django and nothing of the project but `engine`.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.crypto.keytext import KeyConfigError, decode_key
from engine.crypto.transfer import SealError, aead_open, aead_seal, hkdf_sha256
from engine.errors import CryptoError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
MAGIC = b"MIMG"
VERSION = 1
DEV_KEK_ID = "dev"
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

__all__ = [
    "CryptoError",
    "KeyConfigError",
    "KeyRing",
    "WrappedKey",
    "data_key_id",
    "decode_key",
    "decrypt_blob",
    "derivative_check",
    "derivative_digest",
    "encrypt_blob",
    "new_data_key",
    "original_aad",
    "pack_array",
    "parse_keks",
    "region_aad",
    "redacted_dataset_aad",
    "redacted_pixels_aad",
    "rewrap_data_key",
    "unpack_array",
    "unwrap_data_key",
    "wrap_data_key",
]


# --- Key encryption keys --------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRing:
    """The KEKs a process knows, by id, and the one new data keys are wrapped with."""

    current_id: str
    keys: dict[str, bytes]

    def get(self, kek_id: str) -> bytes | None:
        return self.keys.get(kek_id)


def parse_keks(raw: str, current: str | None) -> KeyRing:
    """Parse "id:key,id:key" (hex or urlsafe base64; newlines also separate). KeyConfigError
    for a malformed entry or id, a key that is not 32 bytes, an id named twice, no key, or a
    `current` that is missing among several keys or not one of them."""
    keys: dict[str, bytes] = {}
    for item in raw.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        kek_id, sep, encoded = item.partition(":")
        kek_id = kek_id.strip()
        if not sep or not _KEY_ID_RE.match(kek_id):
            raise KeyConfigError(
                "MEDIMG_KEKS entries must look like id:key with an id of letters, digits, . _ -"
            )
        if kek_id in keys:
            raise KeyConfigError(f"MEDIMG_KEKS names key id {kek_id!r} twice")
        keys[kek_id] = decode_key(encoded, name=f"MEDIMG_KEKS[{kek_id}]", length=KEY_BYTES)
    if not keys:
        raise KeyConfigError("MEDIMG_KEKS holds no keys")
    if current is None:
        if len(keys) != 1:
            raise KeyConfigError("MEDIMG_KEK_CURRENT must name one of several MEDIMG_KEKS")
        current = next(iter(keys))
    if current not in keys:
        raise KeyConfigError(f"MEDIMG_KEK_CURRENT={current!r} is not in MEDIMG_KEKS")
    return KeyRing(current_id=current, keys=keys)


# --- Blobs ----------------------------------------------------------------------------------


def _header(key_id: str) -> bytes:
    encoded = key_id.encode("ascii")
    if not _KEY_ID_RE.match(key_id):
        raise ValueError(f"bad key id {key_id!r}")
    return MAGIC + bytes([VERSION, len(encoded)]) + encoded


def _split(blob: bytes) -> tuple[bytes, str, bytes, bytes]:
    """(header, key id, nonce, ciphertext+tag) or CryptoError."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise CryptoError()
    blob = bytes(blob)
    if len(blob) < 6 or blob[:4] != MAGIC or blob[4] != VERSION:
        raise CryptoError()
    id_len = blob[5]
    end_header = 6 + id_len
    if len(blob) < end_header + NONCE_BYTES + TAG_BYTES:
        raise CryptoError()
    try:
        key_id = blob[6:end_header].decode("ascii")
    except UnicodeDecodeError:
        raise CryptoError() from None
    if not _KEY_ID_RE.match(key_id):
        raise CryptoError()
    nonce = blob[end_header : end_header + NONCE_BYTES]
    return blob[:end_header], key_id, nonce, blob[end_header + NONCE_BYTES :]


def blob_key_id(blob: bytes) -> str:
    """The key id in a blob's header (not authenticated until decryption succeeds)."""
    return _split(blob)[1]


def data_key_id(data_key: bytes) -> str:
    """A non-secret id for a data key: a keyed hash, which reveals nothing about the key."""
    _check_key(data_key)
    return hmac.new(data_key, b"medimg/data-key-id/v1", hashlib.sha256).hexdigest()[:16]


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ValueError("AES-256-GCM keys are 32 bytes")


def _seal(key: bytes, key_id: str, plaintext: bytes, aad: bytes) -> bytes:
    _check_key(key)
    return aead_seal(key, plaintext, header=_header(key_id), aad=aad)


def _open(key: bytes, header: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    try:
        return aead_open(key, nonce, sealed, header=header, aad=aad)
    except SealError:
        raise CryptoError() from None


def encrypt_blob(key: bytes, plaintext: bytes, *, aad: bytes) -> bytes:
    """Encrypt under a data key; the header carries `data_key_id(key)`."""
    return _seal(key, data_key_id(key), plaintext, aad)


def encrypt_blob_file(
    key: bytes, source: IO[bytes], out: IO[bytes], *, aad: bytes, chunk: int = 1 << 20
) -> None:
    """`encrypt_blob` of `source`'s contents (from its start) written into `out`, a chunk at
    a time: the same format (AES-GCM is a stream cipher with the tag at the end), so
    `decrypt_blob` opens it, without the plaintext or the blob ever being in memory whole."""
    _check_key(key)
    header = _header(data_key_id(key))
    nonce = os.urandom(NONCE_BYTES)
    encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(header + aad)
    out.write(header + nonce)
    source.seek(0)
    while block := source.read(chunk):
        out.write(encryptor.update(block))
    out.write(encryptor.finalize())
    out.write(encryptor.tag)
    out.flush()


def decrypt_blob(key: bytes, blob: bytes, *, aad: bytes) -> bytes:
    """The plaintext, or CryptoError for any tampering, wrong key or wrong context."""
    header, key_id, nonce, sealed = _split(blob)
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise CryptoError()
    if not hmac.compare_digest(key_id, data_key_id(key)):
        raise CryptoError()
    return _open(key, header, nonce, sealed, aad)


# --- Associated data ------------------------------------------------------------------------


def _canonical(purpose: str, fields: dict[str, object]) -> bytes:
    # Sorted keys, no spaces, ASCII: one byte string per context, whatever produced it.
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"medimg/{purpose}/v1\n".encode("ascii") + body.encode("ascii")


def _ref(scan_ref: object) -> str:
    text = str(scan_ref)
    if not text:
        raise ValueError("scan_ref must not be empty")
    return text


def region_aad(*, scan_ref: object, index: int, frame: int, box: Sequence[int]) -> bytes:
    """Associated data for region `index` of `scan_ref`, at `frame`, cut from `box`."""
    coords = [int(v) for v in box]
    if len(coords) != 4:
        raise ValueError("box is (x0, y0, x1, y1)")
    return _canonical(
        "region",
        {"scan": _ref(scan_ref), "index": int(index), "frame": int(frame), "box": coords},
    )


def original_aad(*, scan_ref: object) -> bytes:
    """Associated data for a scan's stored original upload."""
    return _canonical("original", {"scan": _ref(scan_ref)})


def identity_aad(*, scan_ref: object) -> bytes:
    """Associated data for the identifying DICOM header values de-identification removed."""
    return _canonical("identity", {"scan": _ref(scan_ref)})


def redacted_pixels_aad(*, scan_ref: object) -> bytes:
    """Associated data for a scan's redacted pixel array (sealed frame by frame, or as one
    blob for scans processed before that). The array is not secret, but restore trusts it:
    sealed under the scan's key, a changed file fails restore instead of giving a wrong image.
    Not JSON like the others: the bytes are what stored files were sealed with."""
    return f"medimg/redacted-pixels/v1\n{_ref(scan_ref)}".encode()


def redacted_dataset_aad(*, scan_ref: object) -> bytes:
    """Associated data for a scan's redacted (de-identified) DICOM dataset."""
    return f"medimg/redacted-dataset/v1\n{_ref(scan_ref)}".encode()


def _data_key_aad(scan_ref: object) -> bytes:
    return _canonical("data-key", {"scan": _ref(scan_ref)})


def derivative_digest(
    data_key: bytes, data: bytes, *, scan_ref: object, kind: str, frame: int
) -> str:
    """A keyed digest (hex HMAC-SHA256) binding a plain stored file to its scan, kind and frame.

    For what is stored unencrypted (the redacted and grid PNGs: nothing secret, but shown as
    this scan's image). Keyed by HKDF of the scan's data key, so a file from another scan
    never matches, and KEK rotation (which re-wraps, never changes, data keys) keeps it valid.
    """
    _check_key(data_key)
    mac_key = hkdf_sha256(data_key, salt=b"medimg/derivative-mac/v1", info=b"derivative")
    context = _canonical(
        "derivative", {"scan": _ref(scan_ref), "kind": str(kind), "frame": int(frame)}
    )
    message = context + b"\n" + hashlib.sha256(bytes(data)).digest()
    return hmac.new(mac_key, message, hashlib.sha256).hexdigest()


def derivative_check(
    data_key: bytes, data: bytes, digest: str, *, scan_ref: object, kind: str, frame: int
) -> None:
    """CryptoError unless `digest` is `derivative_digest` of exactly this file and context."""
    expected = derivative_digest(data_key, data, scan_ref=scan_ref, kind=kind, frame=frame)
    if not isinstance(digest, str) or not hmac.compare_digest(expected, digest):
        raise CryptoError()


def segmentation_aad(*, scan_ref: object, job: int, part: str, frame: int = 0) -> bytes:
    """Associated data for one output of segmentation job `job` of `scan_ref`: its label mask
    ("mask") or an overlay frame ("overlay"). A file moved to another job or scan fails."""
    return _canonical(
        "segmentation", {"scan": _ref(scan_ref), "job": int(job), "part": part, "frame": int(frame)}
    )


# --- Envelope -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrappedKey:
    """A data key encrypted under KEK `kek_id`. Store both; `kek_id` lets rotation find it."""

    kek_id: str
    blob: bytes


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def wrap_data_key(
    data_key: bytes, *, ring: KeyRing, scan_ref: object, kek_id: str | None = None
) -> WrappedKey:
    """Wrap under `ring`'s KEK `kek_id` (default: its current one), bound to `scan_ref`.
    KeyConfigError when the ring has no such KEK."""
    _check_key(data_key)
    kek_id = kek_id or ring.current_id
    kek = ring.get(kek_id)
    if kek is None:
        raise KeyConfigError(f"unknown KEK id {kek_id!r}")
    return WrappedKey(kek_id=kek_id, blob=_seal(kek, kek_id, data_key, _data_key_aad(scan_ref)))


def unwrap_data_key(blob: bytes | WrappedKey, *, ring: KeyRing, scan_ref: object) -> bytes:
    """The data key, or CryptoError (tampered, other scan, or a KEK `ring` lacks)."""
    if isinstance(blob, WrappedKey):
        blob = blob.blob
    header, kek_id, nonce, sealed = _split(blob)
    kek = ring.get(kek_id)
    if kek is None:
        raise CryptoError()
    data_key = _open(kek, header, nonce, sealed, _data_key_aad(scan_ref))
    if len(data_key) != KEY_BYTES:
        raise CryptoError()
    return data_key


def rewrap_data_key(
    blob: bytes | WrappedKey, *, ring: KeyRing, scan_ref: object, kek_id: str | None = None
) -> WrappedKey:
    """Rotation: unwrap with whichever KEK of `ring` wrapped it, wrap again under `kek_id`
    (default: the ring's current KEK)."""
    data_key = unwrap_data_key(blob, ring=ring, scan_ref=scan_ref)
    return wrap_data_key(data_key, ring=ring, scan_ref=scan_ref, kek_id=kek_id)


# --- Arrays ---------------------------------------------------------------------------------


def pack_array(array: np.ndarray) -> bytes:
    """The .npy encoding: dtype, shape and order kept exactly; object arrays refused."""
    if array.dtype.hasobject:
        raise ValueError("object arrays cannot be packed")
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def unpack_array(data: bytes) -> np.ndarray:
    """Inverse of pack_array. Never unpickles; raises ValueError on anything else."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, EOFError) as exc:
        raise ValueError("not an .npy array") from exc
    if not isinstance(array, np.ndarray):
        raise ValueError("not an .npy array")
    return array
