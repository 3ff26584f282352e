"""One vault for keys: the pure engine takes the key ring as an argument, imaging.vault.keys
builds it from settings and opens a scan's data key and original; AES-GCM and HKDF are
written once (engine.crypto.transfer) under every format."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from engine.crypto import envelope, keytext, transfer
from engine.errors import CryptoError
from imaging.models import Scan
from imaging.vault import keys
from imaging.vault.storage import storage_read

KEK_A = bytes(range(32))
KEK_B = bytes(range(32, 64))
SCAN = "0b7f6a52-5c1e-4d6f-9a1b-7e1d3c2b4a59"


@pytest.fixture
def keks(settings: Any) -> Any:
    settings.MEDIMG_KEKS = f"a:{KEK_A.hex()},b:{KEK_B.hex()}"
    settings.MEDIMG_KEK_CURRENT = "a"
    return settings


# --- The engine: no settings, the ring passed in ---------------------------------------------


def test_the_crypto_engine_imports_nothing_of_django_or_the_project() -> None:
    code = (
        "import sys\n"
        "import engine.crypto.envelope, engine.crypto.transfer, engine.crypto.keytext\n"
        "import engine.crypto.sealed_frames\n"
        "ours = ('django', 'rest_framework', 'celery', 'medimg', 'imaging', 'accounts',\n"
        "        'audit', 'patients', 'pages', 'gateway', 'model')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ours))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(django_settings.BASE_DIR),
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_the_engine_wraps_with_the_ring_it_is_given() -> None:
    ring = envelope.KeyRing(current_id="a", keys={"a": KEK_A, "b": KEK_B})
    data_key = envelope.new_data_key()
    wrapped = envelope.wrap_data_key(data_key, ring=ring, scan_ref=SCAN)
    assert wrapped.kek_id == "a"
    assert envelope.unwrap_data_key(wrapped, ring=ring, scan_ref=SCAN) == data_key
    moved = envelope.rewrap_data_key(wrapped, ring=ring, scan_ref=SCAN, kek_id="b")
    assert moved.kek_id == "b" and envelope.blob_key_id(moved.blob) == "b"
    only_b = envelope.KeyRing(current_id="b", keys={"b": KEK_B})
    assert envelope.unwrap_data_key(moved, ring=only_b, scan_ref=SCAN) == data_key
    with pytest.raises(CryptoError):
        envelope.unwrap_data_key(wrapped, ring=only_b, scan_ref=SCAN)


def test_the_engine_refuses_a_bad_configuration_with_its_own_error() -> None:
    ring = envelope.KeyRing(current_id="a", keys={"a": KEK_A})
    with pytest.raises(envelope.KeyConfigError) as caught:
        envelope.wrap_data_key(envelope.new_data_key(), ring=ring, scan_ref=SCAN, kek_id="zz")
    assert isinstance(caught.value, ValueError)
    assert not isinstance(caught.value, ImproperlyConfigured)
    for raw, current in [("a:zz", None), (f"a:{KEK_A.hex()}", "b"), (",", None)]:
        with pytest.raises(envelope.KeyConfigError):
            envelope.parse_keks(raw, current)
    with pytest.raises(keytext.KeyConfigError, match="must be 32 bytes, got 16"):
        keytext.decode_key("11" * 16, name="K")


# --- The vault: the ring from settings -------------------------------------------------------


def test_the_vault_reports_a_bad_setting_as_improperly_configured(keks: Any) -> None:
    with pytest.raises(ImproperlyConfigured, match="is not in MEDIMG_KEKS"):
        keys.parse_keks(f"a:{KEK_A.hex()}", "b")
    with pytest.raises(ImproperlyConfigured, match="unknown KEK id 'zz'"):
        keys.wrap_data_key(envelope.new_data_key(), scan_ref=SCAN, kek_id="zz")
    with pytest.raises(ImproperlyConfigured, match="unknown KEK id 'zz'"):
        keys.rewrap_data_key(
            keys.wrap_data_key(envelope.new_data_key(), scan_ref=SCAN), scan_ref=SCAN, kek_id="zz"
        )


def test_a_new_scan_key_is_wrapped_under_the_current_kek_of_the_settings(keks: Any) -> None:
    data_key, wrapped = keys.new_scan_key(SCAN)
    assert wrapped.kek_id == "a"
    ring = envelope.KeyRing(current_id="a", keys={"a": KEK_A})
    assert envelope.unwrap_data_key(wrapped.blob, ring=ring, scan_ref=SCAN) == data_key
    keks.MEDIMG_KEK_CURRENT = "b"
    assert keys.new_scan_key(SCAN)[1].kek_id == "b"


@pytest.mark.django_db
def test_it_opens_a_stored_scans_data_key_and_original(
    completed_dicom_upload: tuple[Scan, Any, bytes],
) -> None:
    scan, _, uploaded = completed_dicom_upload
    data_key = keys.open_data_key(scan)
    assert data_key == keys.unwrap_data_key(bytes(scan.wrapped_key), scan_ref=str(scan.uid))
    assert keys.open_original(scan) == uploaded
    assert keys.open_original(scan, data_key=data_key) == uploaded
    # What seal_original writes is what open_original reads: the stored file is one of them.
    resealed = keys.seal_original(data_key, uploaded, scan_ref=str(scan.uid))
    assert envelope.decrypt_blob(
        data_key, resealed, aad=envelope.original_aad(scan_ref=str(scan.uid))
    ) == envelope.decrypt_blob(
        data_key,
        storage_read(scan.original_path),
        aad=envelope.original_aad(scan_ref=str(scan.uid)),
    )


@pytest.mark.django_db
def test_it_refuses_a_changed_original_a_foreign_key_and_a_missing_file(
    completed_dicom_upload: tuple[Scan, Any, bytes], settings: Any
) -> None:
    scan, _, _ = completed_dicom_upload
    path = Path(settings.MEDIA_ROOT) / scan.original_path
    stored = path.read_bytes()
    path.write_bytes(stored[:-1] + bytes([stored[-1] ^ 1]))
    with pytest.raises(CryptoError):
        keys.open_original(scan)
    path.write_bytes(stored)
    assert keys.open_original(scan)

    # Another scan's wrapped key, even a valid one, does not open this scan's key.
    _, foreign = keys.new_scan_key("another-scan")
    moved = Scan(pk=scan.pk, uid=scan.uid, wrapped_key=foreign.blob)
    with pytest.raises(CryptoError):
        keys.open_data_key(moved)

    path.unlink()
    with pytest.raises(OSError):
        keys.open_original(scan)


# --- Primitives written once ------------------------------------------------------------------


def test_hkdf_is_rfc_5869() -> None:
    # RFC 5869, Appendix A.1 (Test Case 1).
    okm = transfer.hkdf_sha256(
        bytes.fromhex("0b" * 22),
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        length=42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_aead_authenticates_the_header_and_the_context() -> None:
    key = hashlib.sha256(b"aead test key").digest()
    sealed = transfer.aead_seal(key, b"payload", header=b"HDR1", aad=b"context")
    assert sealed[:4] == b"HDR1" and len(sealed) == 4 + 12 + len(b"payload") + 16
    nonce, body = sealed[4:16], sealed[16:]
    # The layout is plain AES-GCM with header || aad as associated data.
    assert AESGCM(key).decrypt(nonce, body, b"HDR1context") == b"payload"
    assert transfer.aead_open(key, nonce, body, header=b"HDR1", aad=b"context") == b"payload"
    for header, aad in [(b"HDR2", b"context"), (b"HDR1", b"contexT"), (b"", b"HDR1context!")]:
        with pytest.raises(transfer.SealError):
            transfer.aead_open(key, nonce, body, header=header, aad=aad)
    with pytest.raises(transfer.SealError):
        transfer.aead_open(key, nonce, body[:-1] + bytes([body[-1] ^ 1]), header=b"HDR1")
    with pytest.raises(transfer.SealError):
        transfer.aead_open(key[:16], nonce, body, header=b"HDR1", aad=b"context")
    # A fresh nonce each time.
    assert transfer.aead_seal(key, b"payload")[:12] != transfer.aead_seal(key, b"payload")[:12]
