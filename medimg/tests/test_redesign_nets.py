"""Safety nets for the issue-15 restructuring: the move must change no stored byte and no
API schema. Everything here was captured from the code as it was BEFORE the move; a test
that fails after it means a format changed, not that the test needs refreshing.

Four nets:

1. Golden bytes of every associated-data builder, key derivation and keyed digest (the
   literals below were printed by the pre-move code from the fixed inputs shown).
2. The sealed formats, checked against a reference written out here from the documented
   layouts (pyca AES-GCM/HKDF only, no project code): a blob built by the reference with a
   fixed nonce equals a committed hex literal and opens with the project's functions, and
   what the project seals today parses and opens with the reference.
3. Restore of blobs encrypted by the pre-move code (medimg/tests/fixtures/legacy_v1/),
   through the crypto functions and through the public services on a real database row.
4. The OpenAPI schema, regenerated and compared byte for byte with
   medimg/tests/fixtures/openapi_schema.yaml.

How the legacy_v1 fixtures were made (once, by hand, not part of the repository): a script
run with `env -u DATABASE_URL -u REDIS_URL .venv/bin/python gen.py` on commit d468a84 that,
under `override_settings(MEDIMG_KEKS="legacy-v1:<kek_hex>", MEDIMG_KEK_CURRENT="legacy-v1",
SECRET_KEY=<secret_key>)` (values in manifest.json), did:
- `crypto.wrap_data_key(DATA_KEY, scan_ref=scan_uid)` -> wrapped_key.bin;
- `crypto.encrypt_blob(dk, upload, aad=crypto.original_aad(...))` -> original.enc, where the
  upload is b"legacy_v1 original upload (opaque bytes)\\n" + pixels.tobytes() and pixels is
  `(np.arange(2*10*14, dtype=np.uint16) * 257).reshape(2, 10, 14)`;
- `pipeline.seal_region(...)` for each region of manifest["regions"] -> region-<i>.enc, the
  redacted pixels being the pixels with those boxes set to 0;
- `sealed_frames.SealedFramesWriter(..., aad=services._redacted_pixels_aad(uid))` over the
  redacted frames -> redacted_pixels.sealed, and the older single blob
  `crypto.encrypt_blob(dk, crypto.pack_array(redacted), aad=<same>)` -> redacted_pixels_single.enc;
- `crypto.encrypt_blob_file(dk, plain, out, aad=services._redacted_dataset_aad(uid), chunk=16)`
  of b"legacy_v1 redacted dataset (opaque bytes, not a DICOM file)\\n" * 3 -> redacted_dataset.enc;
- `identity.identity_seal(DeidOutcome(...), ...)` -> identity.enc (document in the manifest);
- `crypto.encrypt_blob(dk, crypto.pack_array((pixels % 3).astype(np.uint8)),
  aad=crypto.segmentation_aad(scan_ref=uid, job=7, part="mask"))` -> segmentation-mask.enc;
- `deidentify.Command._write_mapping(dir, "legacy-v1-run", {...}, data_key=dk, plain=False)`
  -> deid-mapping.json.enc;
- `keyexchange.seal(session_key, b"legacy_v1 sealed download (opaque bytes)\\n", key_id=...,
  aad=keyexchange.transfer_aad("restore", scan=1, format="png", nonce=...))` -> transfer.sealed;
- `session_keys._put` of a session-key entry and an exchange entry, read back raw from the
  cache -> cache-session-key.bin, cache-exchange.bin.

The OpenAPI snapshot was written by `env -u DATABASE_URL -u REDIS_URL .venv/bin/python
manage.py spectacular --file medimg/tests/fixtures/openapi_schema.yaml` (the same bytes on
every run and under any PYTHONHASHSEED).
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import io
import json
import struct
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.core.cache import cache
from django.core.management import call_command

from accounts import keyexchange, session_keys
from engine.crypto import envelope as crypto
from engine.crypto import sealed_frames
from engine.detection import pipeline
from engine.dicom import deid
from engine.pixels import restoration
from imaging.management.commands import deidentify as deidentify_command
from imaging.models import Region, Scan, ScanFormat, ScanStatus
from imaging.services import deid as deid_services
from imaging.services import restore as restore_services
from imaging.vault import derivatives
from imaging.vault import identity as imaging_identity
from imaging.vault import keys as vault_keys
from imaging.vault import pixels as vault_pixels
from imaging.vault import storage as imaging_storage
from patients.models import Patient

FIXTURES = Path(__file__).parent / "fixtures"
LEGACY = FIXTURES / "legacy_v1"
SCHEMA_SNAPSHOT = FIXTURES / "openapi_schema.yaml"

SCAN = "5f0c3c1e-6a43-4d2b-9a57-0c1d2e3f4a5b"
DATA_KEY = hashlib.sha256(b"medimg nets data key").digest()
KEK_ID = "nets-kek"
KEK = hashlib.sha256(b"medimg nets KEK (not a secret)").digest()
SESSION_KEY = hashlib.sha256(b"medimg nets session key").digest()
SESSION_KEY_ID = "0123456789abcdef0123456789abcdef"
SECRET_KEY = "nets-secret-key-0123456789-not-a-secret-abcdefghijklmnop"
NONCE = bytes(range(12))  # fixed nonce for the reference blobs below


# --- 1. Associated data, derivations and digests: golden bytes ------------------------------

AAD_CASES: list[tuple[str, Callable[[], bytes], bytes]] = [
    (
        "crypto.region_aad",
        lambda: crypto.region_aad(scan_ref=SCAN, index=3, frame=1, box=(10, 20, 30, 40)),
        b'medimg/region/v1\n{"box":[10,20,30,40],"frame":1,"index":3,'
        b'"scan":"5f0c3c1e-6a43-4d2b-9a57-0c1d2e3f4a5b"}',
    ),
    (
        "crypto.original_aad",
        lambda: crypto.original_aad(scan_ref=SCAN),
        b'medimg/original/v1\n{"scan":"5f0c3c1e-6a43-4d2b-9a57-0c1d2e3f4a5b"}',
    ),
    (
        "crypto.original_aad(int scan_ref)",
        lambda: crypto.original_aad(scan_ref=17),
        b'medimg/original/v1\n{"scan":"17"}',
    ),
    (
        "crypto.identity_aad",
        lambda: crypto.identity_aad(scan_ref=SCAN),
        b'medimg/identity/v1\n{"scan":"5f0c3c1e-6a43-4d2b-9a57-0c1d2e3f4a5b"}',
    ),
    (
        "crypto._data_key_aad",
        lambda: crypto._data_key_aad(SCAN),
        b'medimg/data-key/v1\n{"scan":"5f0c3c1e-6a43-4d2b-9a57-0c1d2e3f4a5b"}',
    ),
    (
        "crypto.segmentation_aad(overlay)",
        lambda: crypto.segmentation_aad(scan_ref=SCAN, job=7, part="overlay", frame=2),
        b'medimg/segmentation/v1\n{"frame":2,"job":7,"part":"overlay",'
        b'"scan":"5f0c3c1e-6a43-4d2b-9a57-0c1d2e3f4a5b"}',
    ),
    (
        "crypto.segmentation_aad(mask, default frame)",
        lambda: crypto.segmentation_aad(scan_ref=SCAN, job=7, part="mask"),
        b'medimg/segmentation/v1\n{"frame":0,"job":7,"part":"mask",'
        b'"scan":"5f0c3c1e-6a43-4d2b-9a57-0c1d2e3f4a5b"}',
    ),
    (
        "crypto.redacted_pixels_aad",
        lambda: crypto.redacted_pixels_aad(scan_ref=SCAN),
        b"medimg/redacted-pixels/v1\n5f0c3c1e-6a43-4d2b-9a57-0c1d2e3f4a5b",
    ),
    (
        "crypto.redacted_dataset_aad",
        lambda: crypto.redacted_dataset_aad(scan_ref=SCAN),
        b"medimg/redacted-dataset/v1\n5f0c3c1e-6a43-4d2b-9a57-0c1d2e3f4a5b",
    ),
    (
        "sealed_frames._chunk_aad",
        lambda: sealed_frames._chunk_aad(b"ctx", 2, 5),
        b"ctx\nchunk 2 of 5",
    ),
    (
        "keyexchange.transfer_aad",
        lambda: keyexchange.transfer_aad(
            "restore", scan=12, format="png", nonce="00112233445566778899aabbccddeeff"
        ),
        b'medimg/sealed-restore/v1\n{"format":"png","nonce":"00112233445566778899aabbccddeeff",'
        b'"scan":12}',
    ),
    (
        "keyexchange.hkdf_info",
        lambda: keyexchange.hkdf_info(
            group="x25519",
            user_id=42,
            exchange_id="ex-1",
            server_public=bytes(range(32)),
            client_public=bytes(range(32, 64)),
        ),
        bytes.fromhex(
            "6d6564696d672f73657373696f6e2d6b65792f7631000000067832353531390000000234320000"
            "000465782d3100000020000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c"
            "1d1e1f00000020202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
        ),
    ),
]


@pytest.mark.parametrize(("name", "build", "expected"), AAD_CASES, ids=[c[0] for c in AAD_CASES])
def test_associated_data_is_byte_identical(
    name: str, build: Callable[[], bytes], expected: bytes
) -> None:
    assert build() == expected, f"{name} changed: {build()!r}"


def test_format_constants_are_unchanged() -> None:
    assert (crypto.MAGIC, crypto.VERSION, crypto.NONCE_BYTES, crypto.TAG_BYTES) == (
        b"MIMG",
        1,
        12,
        16,
    )
    assert crypto.DEV_KEK_ID == "dev"
    assert sealed_frames.MAGIC == b"MEDIMG-SEALED-FRAMES/1\n"
    assert (keyexchange.SEAL_MAGIC, keyexchange.SEAL_VERSION) == (b"MSEAL", 1)
    assert keyexchange.HKDF_SALT == b"medimg/key-exchange/v1"
    assert keyexchange.HKDF_INFO_LABEL == b"medimg/session-key/v1"
    assert (keyexchange.SESSION_KEY_BYTES, keyexchange.KEY_ID_BYTES) == (32, 16)
    assert deidentify_command.MAPPING_FORMAT == "medimg-deid-mapping/v1"
    assert imaging_identity.IDENTITY_VERSION == 1


def test_data_key_id_and_derivative_digests_are_unchanged() -> None:
    assert crypto.data_key_id(DATA_KEY) == "2d08d309a6d05d12"
    assert (
        crypto.derivative_digest(DATA_KEY, b"png bytes", scan_ref=SCAN, kind="redacted", frame=1)
        == "9db8da3e2f546061c829ae0126dc1f17edf0010aaba35e40edcf2d35d9738b05"
    )
    assert derivatives.frame_digests(
        DATA_KEY, scan_ref=SCAN, frames={"redacted": [b"r0", b"r1"], "grid": [b"g0"]}
    ) == {
        "redacted": [
            "0917936038accfd73e15b19f42fb18042007684757a89b6c08ff0de879505a7a",
            "7c5955c39ebb3ecf8c7318b59e15375e70f73e7c05a4c90490a4b87910f8922f",
        ],
        "grid": ["f462d71642bb1b6eac5c6b67a4037f5f13715b8b526e0674de1fa9686b3871ad"],
    }


def test_derivative_digest_matches_its_reference() -> None:
    """HKDF(salt "medimg/derivative-mac/v1", info "derivative") of the data key keys an
    HMAC-SHA256 over the derivative context, a newline and sha256 of the file."""
    mac_key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"medimg/derivative-mac/v1", info=b"derivative"
    ).derive(DATA_KEY)
    context = (
        b'medimg/derivative/v1\n{"frame":1,"kind":"redacted",'
        b'"scan":"5f0c3c1e-6a43-4d2b-9a57-0c1d2e3f4a5b"}'
    )
    import hmac

    expected = hmac.new(
        mac_key, context + b"\n" + hashlib.sha256(b"png bytes").digest(), hashlib.sha256
    ).hexdigest()
    assert (
        crypto.derivative_digest(DATA_KEY, b"png bytes", scan_ref=SCAN, kind="redacted", frame=1)
        == expected
    )


def test_pixel_digest_and_array_packing_are_unchanged() -> None:
    """`Scan.pixels_sha256` and the .npy plaintext of region and redacted-pixel blobs."""
    assert (
        vault_pixels.pixels_digest(np.arange(24, dtype=np.uint16).reshape(2, 3, 4))
        == "14da514fe80f3edbef75a83fd01d325685c9fe347d52a1c723787d9cbb7eb9f5"
    )
    assert crypto.pack_array(np.arange(6, dtype=np.uint16).reshape(2, 3)) == bytes.fromhex(
        "934e554d5059010076007b276465736372273a20273c7532272c2027666f727472616e5f6f726465"
        "72273a2046616c73652c20277368617065273a2028322c2033292c207d2020202020202020202020"
        "20202020202020202020202020202020202020202020202020202020202020202020202020202020"
        "202020202020200a000001000200030004000500"
    )


def test_session_key_derivation_is_unchanged() -> None:
    server_public, client_public = bytes(range(32)), bytes(range(32, 64))
    key, key_id = keyexchange.derive_session_key(
        hashlib.sha256(b"shared secret").digest(),
        group="x25519",
        user_id=42,
        exchange_id="ex-1",
        server_public=server_public,
        client_public=client_public,
    )
    assert key.hex() == "f84b6b5c71d0175ba36c9b1086ac436d72d78498941163d384ce73d73392cb6b"
    assert key_id == "2f2bab4d8439aebdcbdfa9d48c883adb"
    # The reference: HKDF-SHA256(salt, info of the module docstring), 48 bytes, split 32/16.
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=48,
        salt=b"medimg/key-exchange/v1",
        info=AAD_CASES[-1][2],
    ).derive(hashlib.sha256(b"shared secret").digest())
    assert (okm[:32], okm[32:].hex()) == (key, key_id)


def test_shared_secrets_are_unchanged() -> None:
    server = bytes(range(1, 33))
    client = x25519.X25519PrivateKey.from_private_bytes(bytes(range(101, 133)))
    z = keyexchange.shared_secret("x25519", server, client.public_key().public_bytes_raw())
    assert z.hex() == "c9ea6a3f79a000b60b076d4afc990b272f3f0b5aaa3f0b8713c209273e363863"
    xs = int.from_bytes(hashlib.sha256(b"ffdhe server").digest(), "big")
    # Client 1486 is the first whose shared secret starts with a zero byte: Z keeps it.
    xc = int.from_bytes(hashlib.sha256(b"ffdhe client 1486").digest(), "big")
    client_public = pow(2, xc, keyexchange.FFDHE3072_P).to_bytes(384, "big")
    z = keyexchange.shared_secret("ffdhe3072", xs.to_bytes(384, "big"), client_public)
    assert len(z) == 384 and z[:2] == b"\x00\x25"
    assert (
        hashlib.sha256(z).hexdigest()
        == "cc7ae80427f46cece2fbc34cb4cce1102b9b8143cd5293530a483fffd76fa14d"
    )


def test_session_key_cache_wrapping_key_and_names_are_unchanged(settings: Any) -> None:
    """Session keys and exchanges live in the shared cache across a deploy: the key that seals
    them (HKDF of SECRET_KEY) and the entry names must not change under in-flight entries."""
    settings.SECRET_KEY = SECRET_KEY
    assert (
        session_keys._cache_wrap_key().hex()
        == "29420f8e2871bae4fbf1884f28d60151c58a73a2811148ee0d92f2dc9e0886ee"
    )
    assert session_keys._cache_wrap_key() == HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"medimg/cache-wrap/v1", info=b"session-keys"
    ).derive(SECRET_KEY.encode())
    assert [
        session_keys._exchange_name("E", 4),
        session_keys._session_name(4, "K"),
        session_keys._epoch_name(4),
        session_keys._index_name(4),
        session_keys._nonce_name(4, "K", "N"),
    ] == ["kx:exchange:4:E", "kx:session-key:4:K", "kx:epoch:4", "kx:index:4", "kx:nonce:4:K:N"]


def test_deidentification_secrets_and_stand_ins_are_unchanged(settings: Any) -> None:
    """The remapped UIDs, pseudonyms and date shifts written into stored DICOM files."""
    settings.MEDIMG_DEID_SECRET = "aa" * 32
    uid_secret, date_secret = imaging_identity.uid_secret(), imaging_identity.date_secret()
    assert uid_secret.hex() == "74b07f3f76603505d19c13edb366df08e7165c9604cace0db3e1ac6bdf362119"
    assert date_secret.hex() == "c86f70dd5f73c6ad4fd3f145404c6d87c55def4465fac6bb9a536b8039c0d191"
    for purpose, secret in (("uids-and-pseudonyms", uid_secret), ("date-shift", date_secret)):
        reference = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=f"medimg/deid/{purpose}/v1".encode(),
        ).derive(bytes.fromhex("aa" * 32))
        assert secret == reference
    assert (
        deid.remap_uid("1.2.840.113619.2.55.3", uid_secret)
        == "2.25.110887201228863100352703110690636217843"
    )
    assert deid.patient_pseudonym("MRN-0001", uid_secret) == "ANON-DC491D1DB8AF"
    assert deid.patient_date_shift("PatientID:MRN-0001", date_secret) == -2064


# --- 2. Sealed formats against a reference ---------------------------------------------------


def _ref_mimg(key: bytes, key_id: str, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """crypto's blob: b"MIMG" | 1 | len(key id) | key id | nonce (12) | ciphertext || tag;
    GCM associated data = header || aad."""
    header = b"MIMG" + bytes([1, len(key_id)]) + key_id.encode("ascii")
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header + aad)


def _ref_mimg_open(key: bytes, blob: bytes, aad: bytes) -> tuple[str, bytes]:
    assert blob[:4] == b"MIMG" and blob[4] == 1
    end = 6 + blob[5]
    header, nonce = blob[:end], blob[end : end + 12]
    return blob[6:end].decode("ascii"), AESGCM(key).decrypt(nonce, blob[end + 12 :], header + aad)


def _ref_mseal(key: bytes, key_id: str, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """keyexchange's sealed transfer: b"MSEAL" | 1 | len(key id) | key id | nonce | ct || tag."""
    header = b"MSEAL" + bytes([1, len(key_id)]) + key_id.encode("ascii")
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header + aad)


def _ref_frames_open(blob: bytes, key: bytes, aad: bytes) -> tuple[bytes, list[bytes]]:
    """sealed_frames' container: MAGIC, then chunks of 8-byte big-endian length + MIMG blob;
    chunk i's associated data is aad + b"\\nchunk {i} of {count}"."""
    assert blob.startswith(b"MEDIMG-SEALED-FRAMES/1\n")
    position, chunks = len(b"MEDIMG-SEALED-FRAMES/1\n"), []
    while position < len(blob):
        (length,) = struct.unpack_from(">Q", blob, position)
        chunks.append(blob[position + 8 : position + 8 + length])
        position += 8 + length
    assert position == len(blob)
    plain = []
    for index, chunk in enumerate(chunks):
        key_id, data = _ref_mimg_open(
            key, chunk, aad + f"\nchunk {index} of {len(chunks)}".encode()
        )
        assert key_id == crypto.data_key_id(key)
        plain.append(data)
    return plain[0], plain[1:]


REF_DATA_BLOB = bytes.fromhex(
    "4d494d47011032643038643330396136643035643132000102030405060708090a0b0dbd893cfc80"
    "849ceeb89cdac8691b3739bbd42dd18a27db3fe13a4c04bddb"
)
REF_WRAPPED_KEY = bytes.fromhex(
    "4d494d4701086e6574732d6b656b000102030405060708090a0bb736b93586a228f87852f589460e"
    "c13f520c7431ce5812ee2ac2f3ca240cc1c98c10dfec7a9785e14fc2310ee528fd85"
)
REF_SEALED_TRANSFER = bytes.fromhex(
    "4d5345414c0120303132333435363738396162636465663031323334353637383961626364656600"
    "0102030405060708090a0b511782bb6e7d6bd37c6b48f7beb9c1d352b345a7f3e8176556e057ae"
)
REF_CACHE_ENTRY = bytes.fromhex(
    "000102030405060708090a0bdbf0391869e77bcbeec934cec57e8d7876591b7fe21c"
)
REF_FRAMES_SHA256 = "ed8ccc31d3b0d1eb7051afdbd344fb30f06db46e97e576f05fa6873d96221eb3"


def test_data_blob_format_is_unchanged() -> None:
    aad = crypto.original_aad(scan_ref=SCAN)
    blob = _ref_mimg(DATA_KEY, crypto.data_key_id(DATA_KEY), NONCE, b"original upload", aad)
    assert blob == REF_DATA_BLOB, blob.hex()
    assert crypto.decrypt_blob(DATA_KEY, REF_DATA_BLOB, aad=aad) == b"original upload"
    assert crypto.blob_key_id(REF_DATA_BLOB) == "2d08d309a6d05d12"
    # What the code seals today opens with the reference, whole or written in chunks.
    fresh = crypto.encrypt_blob(DATA_KEY, b"original upload", aad=aad)
    assert len(fresh) == len(REF_DATA_BLOB)
    assert _ref_mimg_open(DATA_KEY, fresh, aad) == ("2d08d309a6d05d12", b"original upload")
    out = io.BytesIO()
    crypto.encrypt_blob_file(DATA_KEY, io.BytesIO(b"original upload"), out, aad=aad, chunk=4)
    assert _ref_mimg_open(DATA_KEY, out.getvalue(), aad) == ("2d08d309a6d05d12", b"original upload")


def test_wrapped_data_key_format_is_unchanged(settings: Any) -> None:
    settings.MEDIMG_KEKS = f"{KEK_ID}:{KEK.hex()}"
    settings.MEDIMG_KEK_CURRENT = KEK_ID
    aad = b'medimg/data-key/v1\n{"scan":"5f0c3c1e-6a43-4d2b-9a57-0c1d2e3f4a5b"}'
    blob = _ref_mimg(KEK, KEK_ID, NONCE, DATA_KEY, aad)
    assert blob == REF_WRAPPED_KEY, blob.hex()
    assert vault_keys.unwrap_data_key(REF_WRAPPED_KEY, scan_ref=SCAN) == DATA_KEY
    wrapped = vault_keys.wrap_data_key(DATA_KEY, scan_ref=SCAN)
    assert wrapped.kek_id == KEK_ID
    assert _ref_mimg_open(KEK, wrapped.blob, aad) == (KEK_ID, DATA_KEY)


def test_sealed_transfer_format_is_unchanged() -> None:
    aad = keyexchange.transfer_aad("restore", scan=12, format="png", nonce="ab" * 16)
    blob = _ref_mseal(SESSION_KEY, SESSION_KEY_ID, NONCE, b"restored png", aad)
    assert blob == REF_SEALED_TRANSFER, blob.hex()
    assert keyexchange.sealed_key_id(blob) == SESSION_KEY_ID
    assert keyexchange.unseal(SESSION_KEY, blob, key_id=SESSION_KEY_ID, aad=aad) == b"restored png"
    fresh = keyexchange.seal(SESSION_KEY, b"restored png", key_id=SESSION_KEY_ID, aad=aad)
    header = b"MSEAL\x01\x20" + SESSION_KEY_ID.encode()
    assert fresh[: len(header)] == header and len(fresh) == len(blob)
    nonce = fresh[len(header) : len(header) + 12]
    assert AESGCM(SESSION_KEY).decrypt(nonce, fresh[len(header) + 12 :], header + aad) == (
        b"restored png"
    )
    # The session_keys wrappers bind the request's nonce into the same associated data.
    context = session_keys.SealContext(key_id=SESSION_KEY_ID, key=SESSION_KEY, nonce="ab" * 16)
    assert session_keys.unseal_from(context, blob, purpose="restore", scan=12, format="png") == (
        b"restored png"
    )
    sealed = session_keys.seal_for(
        context, b"restored png", purpose="restore", scan=12, format="png"
    )
    assert (
        keyexchange.unseal(SESSION_KEY, sealed, key_id=SESSION_KEY_ID, aad=aad) == b"restored png"
    )


def test_session_key_cache_entry_format_is_unchanged(settings: Any) -> None:
    """A cache entry is nonce (12) | AES-GCM(HKDF(SECRET_KEY)) of the secret, AAD = its name."""
    settings.SECRET_KEY = SECRET_KEY
    name = "kx:session-key:4:" + SESSION_KEY_ID
    wrap_key = session_keys._cache_wrap_key()
    entry = NONCE + AESGCM(wrap_key).encrypt(NONCE, b"secret", name.encode())
    assert entry == REF_CACHE_ENTRY, entry.hex()
    cache.set(name, REF_CACHE_ENTRY, 60)
    try:
        assert session_keys._get(name) == b"secret"
        session_keys._put(name, b"secret", 60)
        fresh = cache.get(name)
        assert AESGCM(wrap_key).decrypt(fresh[:12], fresh[12:], name.encode()) == b"secret"
    finally:
        cache.delete(name)


def test_sealed_frames_container_is_unchanged() -> None:
    aad = crypto.redacted_pixels_aad(scan_ref=SCAN)
    frames = np.arange(12, dtype=np.uint16).reshape(2, 2, 3)
    header = b'{"chunks": 3, "dtype": "<u2", "shape": [2, 2, 3]}'
    # Reference container, each chunk under its own fixed nonce.
    parts = [header, frames[0].tobytes(), frames[1].tobytes()]
    blob = b"MEDIMG-SEALED-FRAMES/1\n"
    for index, plain in enumerate(parts):
        chunk = _ref_mimg(
            DATA_KEY,
            crypto.data_key_id(DATA_KEY),
            bytes([index]) * 12,
            plain,
            aad + f"\nchunk {index} of 3".encode(),
        )
        blob += struct.pack(">Q", len(chunk)) + chunk
    assert hashlib.sha256(blob).hexdigest() == REF_FRAMES_SHA256, hashlib.sha256(blob).hexdigest()
    opened = sealed_frames.unseal_frames(blob, DATA_KEY, aad=aad)
    assert opened.dtype == np.dtype("<u2") and np.array_equal(opened, frames)
    assert np.array_equal(
        vault_pixels.redacted_pixels_unseal(blob, data_key=DATA_KEY, scan_ref=SCAN), frames
    )
    # What the writer produces today parses and opens with the reference.
    out = io.BytesIO()
    writer = sealed_frames.SealedFramesWriter(
        out, DATA_KEY, aad=aad, shape=frames.shape, dtype=frames.dtype
    )
    for frame in frames:
        writer.add(frame)
    writer.close()
    assert len(out.getvalue()) == len(blob)
    first, rest = _ref_frames_open(out.getvalue(), DATA_KEY, aad)
    assert first == header
    assert rest == [frames[0].tobytes(), frames[1].tobytes()]


def test_identity_blob_format_is_unchanged() -> None:
    outcome = imaging_identity.DeidOutcome(
        data=b"",
        removed_values={"00100010": {"keyword": "PatientName", "vr": "PN", "display": "X",
                                     "element": None}},
        date_shift_days=-5,
        pseudonym="ANON-000000000000",
        report={},
        study_uid="",
        series_uid="",
        sop_instance_uid="",
        instance_number=None,
        modality="",
        scanner="",
    )  # fmt: skip
    blob = imaging_identity.identity_seal(outcome, data_key=DATA_KEY, scan_ref=SCAN)
    aad = b'medimg/identity/v1\n{"scan":"5f0c3c1e-6a43-4d2b-9a57-0c1d2e3f4a5b"}'
    key_id, plaintext = _ref_mimg_open(DATA_KEY, blob, aad)
    assert key_id == crypto.data_key_id(DATA_KEY)
    assert plaintext == (
        b'{"date_shift_days": -5, "pseudonym": "ANON-000000000000", "removed_values": '
        b'{"00100010": {"display": "X", "element": null, "keyword": "PatientName", "vr": "PN"}}, '
        b'"version": 1}'
    )
    reference = _ref_mimg(DATA_KEY, key_id, NONCE, plaintext, aad)
    assert imaging_identity.identity_open(reference, data_key=DATA_KEY, scan_ref=SCAN) == (
        json.loads(plaintext)
    )


def test_deid_mapping_envelope_format_is_unchanged(settings: Any, tmp_path: Path) -> None:
    """`manage.py deidentify`'s encrypted mapping file: a JSON envelope whose ciphertext is a
    MIMG blob under identity_aad("deidentify/<run>") and whose data key is wrapped for it."""
    settings.MEDIMG_KEKS = f"{KEK_ID}:{KEK.hex()}"
    settings.MEDIMG_KEK_CURRENT = KEK_ID
    path = deidentify_command.Command._write_mapping(
        tmp_path, "run-1", {"a.dcm": {"x": 1}}, data_key=DATA_KEY, plain=False
    )
    assert path.name == "deid-mapping-run-1.json.enc"
    envelope = json.loads(path.read_text())
    assert sorted(envelope) == ["ciphertext", "format", "kek_id", "run", "scan_ref", "wrapped_key"]
    assert (envelope["format"], envelope["run"], envelope["scan_ref"], envelope["kek_id"]) == (
        "medimg-deid-mapping/v1",
        "run-1",
        "deidentify/run-1",
        KEK_ID,
    )
    wrapped = base64.b64decode(envelope["wrapped_key"])
    data_key_aad = b'medimg/data-key/v1\n{"scan":"deidentify/run-1"}'
    assert _ref_mimg_open(KEK, wrapped, data_key_aad) == (KEK_ID, DATA_KEY)
    identity_aad = b'medimg/identity/v1\n{"scan":"deidentify/run-1"}'
    _, document = _ref_mimg_open(DATA_KEY, base64.b64decode(envelope["ciphertext"]), identity_aad)
    assert document == (
        b'{\n  "files": {\n    "a.dcm": {\n      "x": 1\n    }\n  },\n'
        b'  "format": "medimg-deid-mapping/v1",\n  "run": "run-1"\n}'
    )
    plain = deidentify_command.Command._write_mapping(
        tmp_path, "run-2", {"a.dcm": {"x": 1}}, data_key=DATA_KEY, plain=True
    )
    assert plain.name == "deid-mapping-run-2.json"
    assert deidentify_command.mapping_open(plain) == {
        "files": {"a.dcm": {"x": 1}},
        "format": "medimg-deid-mapping/v1",
        "run": "run-2",
    }


# --- 3. Restore of blobs written by the pre-move code ----------------------------------------


def _manifest() -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((LEGACY / "manifest.json").read_text())
    return manifest


def _legacy(name: str) -> bytes:
    return (LEGACY / name).read_bytes()


def _legacy_pixels() -> np.ndarray:
    return (np.arange(2 * 10 * 14, dtype=np.uint16) * 257).reshape(2, 10, 14)


@pytest.fixture
def legacy_keys(settings: Any) -> dict[str, Any]:
    manifest = _manifest()
    settings.MEDIMG_KEKS = f"{manifest['kek_id']}:{manifest['kek_hex']}"
    settings.MEDIMG_KEK_CURRENT = manifest["kek_id"]
    settings.SECRET_KEY = manifest["secret_key"]
    return manifest


def test_legacy_blobs_restore_exactly_through_the_crypto_functions(
    legacy_keys: dict[str, Any],
) -> None:
    manifest, scan_ref = legacy_keys, legacy_keys["scan_uid"]
    data_key = vault_keys.unwrap_data_key(_legacy("wrapped_key.bin"), scan_ref=scan_ref)
    assert data_key.hex() == manifest["data_key_hex"]

    original = crypto.decrypt_blob(
        data_key, _legacy("original.enc"), aad=crypto.original_aad(scan_ref=scan_ref)
    )
    assert hashlib.sha256(original).hexdigest() == manifest["original_upload_sha256"]
    assert original.endswith(_legacy_pixels().tobytes())

    for name in ("redacted_pixels.sealed", "redacted_pixels_single.enc"):
        redacted = vault_pixels.redacted_pixels_unseal(
            _legacy(name), data_key=data_key, scan_ref=scan_ref
        )
        assert redacted.dtype == np.dtype("<u2") and redacted.shape == (2, 10, 14)
        assert hashlib.sha256(redacted.tobytes()).hexdigest() == manifest["redacted_sha256"]
        pieces = [
            (
                region["frame"],
                region["box"],
                pipeline.open_region(
                    ciphertext=_legacy(f"region-{region['index']}.enc"),
                    data_key=data_key,
                    scan_ref=scan_ref,
                    index=region["index"],
                    frame=region["frame"],
                    box=region["box"],
                ),
            )
            for region in manifest["regions"]
        ]
        restored = restoration.paste_regions(redacted, pieces)
        assert np.array_equal(restored, _legacy_pixels())
        assert vault_pixels.pixels_digest(restored) == manifest["pixels_digest"]

    dataset = crypto.decrypt_blob(
        data_key,
        _legacy("redacted_dataset.enc"),
        aad=crypto.redacted_dataset_aad(scan_ref=scan_ref),
    )
    assert hashlib.sha256(dataset).hexdigest() == manifest["redacted_dataset_sha256"]

    document = imaging_identity.identity_open(
        _legacy("identity.enc"), data_key=data_key, scan_ref=scan_ref
    )
    assert document == manifest["identity_document"]
    view = imaging_identity.identity_view(document)
    assert view["patient"] == {"PatientName": "DOE^JANE"}

    mask = crypto.unpack_array(
        crypto.decrypt_blob(
            data_key,
            _legacy("segmentation-mask.enc"),
            aad=crypto.segmentation_aad(
                scan_ref=scan_ref, job=manifest["segmentation"]["job"], part="mask"
            ),
        )
    )
    assert np.array_equal(mask, (_legacy_pixels() % 3).astype(np.uint8))
    assert hashlib.sha256(mask.tobytes()).hexdigest() == manifest["segmentation"]["mask_sha256"]


def test_legacy_deid_mapping_file_opens(legacy_keys: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "deid-mapping-legacy-v1-run.json.enc"
    path.write_bytes(_legacy("deid-mapping.json.enc"))
    assert deidentify_command.mapping_open(path) == legacy_keys["deid_mapping"]


def test_legacy_sealed_transfer_and_cache_entries_open(legacy_keys: dict[str, Any]) -> None:
    transfer, entries = legacy_keys["transfer"], legacy_keys["cache"]
    context = session_keys.SealContext(
        key_id=transfer["key_id"],
        key=bytes.fromhex(transfer["session_key_hex"]),
        nonce=transfer["nonce"],
    )
    opened = session_keys.unseal_from(
        context, _legacy("transfer.sealed"), purpose=transfer["purpose"], **transfer["fields"]
    )
    assert opened == transfer["plaintext"].encode()

    user = SimpleNamespace(pk=entries["user_id"])
    session_name = session_keys._session_name(user.pk, transfer["key_id"])
    exchange_name = session_keys._exchange_name(entries["exchange_id"], user.pk)
    try:
        cache.set(session_keys._epoch_name(user.pk), entries["epoch"], None)
        cache.set(session_name, _legacy("cache-session-key.bin"), 60)
        key = session_keys.session_key_get(user_id=user.pk, key_id=transfer["key_id"])
        assert key == bytes.fromhex(transfer["session_key_hex"])

        cache.set(exchange_name, _legacy("cache-exchange.bin"), 60)
        group, public, private = session_keys._take_exchange(
            user=user, exchange_id=entries["exchange_id"]
        )
        assert (group, public.hex(), private.hex()) == (
            "x25519",
            entries["server_public_hex"],
            entries["server_private_hex"],
        )
    finally:
        cache.delete_many(
            [
                session_name,
                exchange_name,
                f"{exchange_name}:used",
                session_keys._epoch_name(user.pk),
            ]
        )


@pytest.mark.django_db
def test_legacy_scan_restores_through_the_services(
    legacy_keys: dict[str, Any], technician: Any, doctor: Any
) -> None:
    """A scan row pointing at the legacy files: restore, identity and export give the exact
    pixels and bytes the pre-move code stored."""
    manifest = legacy_keys
    pixels = _legacy_pixels()
    patient = Patient.objects.create(id="MRN-LEGACY", name="Legacy Patient", created_by=technician)
    base = f"scans/{manifest['scan_uid']}/legacy"
    scan = Scan.objects.create(
        patient=patient,
        uid=manifest["scan_uid"],
        original_filename="legacy.dcm",
        format=ScanFormat.DICOM,
        size_bytes=len(_legacy("original.enc")),
        width=14,
        height=10,
        frames=2,
        pixel_dtype="uint16",
        pixels_sha256=manifest["pixels_digest"],
        status=ScanStatus.COMPLETED,
        original_path=imaging_storage.storage_write(
            f"{base}/original.enc", _legacy("original.enc")
        ),
        redacted_path=imaging_storage.storage_write(
            f"{base}/redacted.dcm.enc", _legacy("redacted_dataset.enc")
        ),
        redacted_pixels_path=imaging_storage.storage_write(
            f"{base}/redacted-pixels.enc", _legacy("redacted_pixels.sealed")
        ),
        identity_ciphertext=_legacy("identity.enc"),
        wrapped_key=_legacy("wrapped_key.bin"),
        key_id=manifest["kek_id"],
    )
    for region in manifest["regions"]:
        x0, y0, x1, y1 = region["box"]
        Region.objects.create(
            scan=scan, index=region["index"], frame=region["frame"], label="phi_text",
            confidence=0.9, x1=x0, y1=y0, x2=x1, y2=y1,
            ciphertext=_legacy(f"region-{region['index']}.enc"), dtype=region["dtype"],
        )  # fmt: skip
    scan.refresh_from_db()

    restored = vault_pixels.scan_restore_pixels(scan=scan)
    assert restored.dtype == pixels.dtype and np.array_equal(restored, pixels)

    rendered = restore_services.scan_restore(scan=scan, actor=doctor, fmt="dicom")
    assert hashlib.sha256(rendered.content).hexdigest() == manifest["original_upload_sha256"]

    identity = deid_services.scan_identity(scan=scan, actor=doctor)
    assert identity["patient"] == {"PatientName": "DOE^JANE"}
    assert identity["pseudonym"] == manifest["identity_document"]["pseudonym"]

    exported = deid_services.scan_export(scan=scan, actor=doctor)
    assert hashlib.sha256(exported.content).hexdigest() == manifest["redacted_dataset_sha256"]

    # The older single-blob redacted pixels restore the same.
    scan.redacted_pixels_path = imaging_storage.storage_write(
        f"{base}/redacted-pixels-single.enc", _legacy("redacted_pixels_single.enc")
    )
    assert np.array_equal(vault_pixels.scan_restore_pixels(scan=scan), pixels)


# --- 4. OpenAPI schema ------------------------------------------------------------------------


def test_openapi_schema_is_byte_identical_to_the_snapshot(tmp_path: Path) -> None:
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--file", str(out))
    expected, actual = SCHEMA_SNAPSHOT.read_text(), out.read_text()
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=str(SCHEMA_SNAPSHOT),
                tofile="generated",
            )
        )
        pytest.fail(f"the OpenAPI schema changed:\n{diff}")
    assert SCHEMA_SNAPSHOT.read_bytes() == out.read_bytes()
