"""AES-256-GCM blobs, envelope keys and rotation: round trips, and every tamper refused."""

from __future__ import annotations

import base64
import io
import logging
import os
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from django.core.exceptions import ImproperlyConfigured

from engine.crypto import envelope as crypto
from engine.crypto.envelope import (
    CryptoError,
    WrappedKey,
    data_key_id,
    decrypt_blob,
    encrypt_blob,
    new_data_key,
    original_aad,
    pack_array,
    region_aad,
    unpack_array,
)
from imaging.tests.fixtures.samples import dicom_bytes
from imaging.vault import keys as vault_keys
from imaging.vault.keys import (
    current_kek_id,
    key_ring,
    rewrap_data_key,
    unwrap_data_key,
    wrap_data_key,
)

KEK_A = "11" * 32
KEK_B = "22" * 32
SCAN = "7f1c2a9e-0000-4000-8000-000000000001"
BOX = (10, 20, 50, 40)


def _aad(**overrides: object) -> bytes:
    fields: dict[str, object] = {"scan_ref": SCAN, "index": 0, "frame": 0, "box": BOX}
    fields.update(overrides)
    return region_aad(**fields)  # type: ignore[arg-type]


@pytest.fixture
def keks(settings):
    settings.MEDIMG_KEKS = f"a:{KEK_A},b:{KEK_B}"
    settings.MEDIMG_KEK_CURRENT = "a"
    return settings


@pytest.fixture
def region() -> bytes:
    # A real region: the top-left corner of a CT slice, as the pipeline would pack it.
    import io

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes("CT_small.dcm")))
    return pack_array(ds.pixel_array[np.newaxis, 20:40, 10:50])


def test_it_round_trips_a_region(region):
    key = new_data_key()
    blob = encrypt_blob(key, region, aad=_aad())
    assert decrypt_blob(key, blob, aad=_aad()) == region
    assert region not in blob


def test_it_uses_a_fresh_nonce_per_message(region):
    key = new_data_key()
    first = encrypt_blob(key, region, aad=_aad())
    second = encrypt_blob(key, region, aad=_aad())
    header = 6 + len(data_key_id(key))
    assert first[header : header + 12] != second[header : header + 12]
    assert first != second


def test_it_writes_a_versioned_header_with_the_key_id(region):
    key = new_data_key()
    blob = encrypt_blob(key, region, aad=_aad())
    assert blob[:4] == b"MIMG"
    assert blob[4] == 1
    kid = data_key_id(key)
    assert blob[5] == len(kid)
    assert blob[6 : 6 + len(kid)] == kid.encode()
    assert crypto.blob_key_id(blob) == kid
    # header + nonce + ciphertext + tag
    assert len(blob) == 6 + len(kid) + 12 + len(region) + 16


def _flipped(blob: bytes, index: int) -> bytes:
    data = bytearray(blob)
    data[index] ^= 0x01
    return bytes(data)


def test_it_refuses_every_flipped_byte_of_a_blob():
    # Every byte: magic, version, key-id length, key id, nonce, ciphertext, tag.
    key = new_data_key()
    blob = encrypt_blob(key, b"burned-in patient name", aad=_aad())
    for index in range(len(blob)):
        with pytest.raises(CryptoError) as caught:
            decrypt_blob(key, _flipped(blob, index), aad=_aad())
        assert str(caught.value) == "decryption failed"


@pytest.mark.parametrize(
    "moved",
    [
        {"scan_ref": "another-scan"},
        {"index": 1},
        {"frame": 3},
        {"box": (10, 20, 50, 41)},
        {"box": (11, 20, 50, 40)},
    ],
)
def test_it_refuses_a_region_moved_to_another_context(moved):
    key = new_data_key()
    blob = encrypt_blob(key, b"region pixels", aad=_aad())
    with pytest.raises(CryptoError):
        decrypt_blob(key, blob, aad=_aad(**moved))


def test_it_refuses_another_scans_key_and_a_region_relabelled_with_its_id():
    key, other = new_data_key(), new_data_key()
    blob = encrypt_blob(key, b"region pixels", aad=_aad())
    with pytest.raises(CryptoError):
        decrypt_blob(other, blob, aad=_aad())
    # Rewrite the header to claim the other key: the header is authenticated.
    kid, other_kid = data_key_id(key).encode(), data_key_id(other).encode()
    relabelled = blob.replace(kid, other_kid, 1)
    with pytest.raises(CryptoError):
        decrypt_blob(other, relabelled, aad=_aad())


@pytest.mark.parametrize("blob", [b"", b"MIMG", b"MIMG\x01", b"MIMG\x01\x03abc" + b"\x00" * 27, 42])
def test_it_refuses_malformed_blobs_with_the_same_error(blob):
    with pytest.raises(CryptoError) as caught:
        decrypt_blob(new_data_key(), blob, aad=_aad())
    assert str(caught.value) == "decryption failed"


def test_it_refuses_a_wrong_length_key_on_decrypt_and_encrypt():
    blob = encrypt_blob(new_data_key(), b"x", aad=_aad())
    with pytest.raises(CryptoError):
        decrypt_blob(b"short", blob, aad=_aad())
    with pytest.raises(ValueError):
        encrypt_blob(b"\x00" * 16, b"x", aad=_aad())


def test_it_makes_canonical_associated_data():
    assert region_aad(scan_ref=SCAN, index=np.int64(2), frame=0, box=[1, 2, 3, 4]) == region_aad(
        scan_ref=SCAN, index=2, frame=np.int32(0), box=(1, 2, 3, 4)
    )
    assert region_aad(scan_ref=SCAN, index=0, frame=0, box=BOX) != original_aad(scan_ref=SCAN)
    with pytest.raises(ValueError):
        region_aad(scan_ref=SCAN, index=0, frame=0, box=(1, 2, 3))
    with pytest.raises(ValueError):
        region_aad(scan_ref="", index=0, frame=0, box=BOX)


# --- Envelope -------------------------------------------------------------------------------


def test_it_wraps_and_unwraps_a_data_key_under_the_current_kek(keks):
    data_key = new_data_key()
    wrapped = wrap_data_key(data_key, scan_ref=SCAN)
    assert isinstance(wrapped, WrappedKey)
    assert wrapped.kek_id == "a"
    assert crypto.blob_key_id(wrapped.blob) == "a"
    assert data_key not in wrapped.blob
    assert unwrap_data_key(wrapped.blob, scan_ref=SCAN) == data_key
    assert unwrap_data_key(wrapped, scan_ref=SCAN) == data_key


def test_it_refuses_every_flipped_byte_of_a_wrapped_key(keks):
    wrapped = wrap_data_key(new_data_key(), scan_ref=SCAN)
    for index in range(len(wrapped.blob)):
        with pytest.raises(CryptoError):
            unwrap_data_key(_flipped(wrapped.blob, index), scan_ref=SCAN)


def test_it_refuses_a_wrapped_key_moved_to_another_scan(keks):
    wrapped = wrap_data_key(new_data_key(), scan_ref=SCAN)
    with pytest.raises(CryptoError):
        unwrap_data_key(wrapped.blob, scan_ref="another-scan")


def test_it_refuses_a_wrapped_key_whose_kek_is_unknown(keks):
    wrapped = wrap_data_key(new_data_key(), scan_ref=SCAN)
    keks.MEDIMG_KEKS = f"b:{KEK_B}"
    keks.MEDIMG_KEK_CURRENT = "b"
    with pytest.raises(CryptoError) as caught:
        unwrap_data_key(wrapped.blob, scan_ref=SCAN)
    assert str(caught.value) == "decryption failed"


def test_it_rotates_without_touching_blobs(keks):
    data_key = new_data_key()
    wrapped = wrap_data_key(data_key, scan_ref=SCAN)
    blob = encrypt_blob(data_key, b"region pixels", aad=_aad())

    keks.MEDIMG_KEK_CURRENT = "b"
    rewrapped = rewrap_data_key(wrapped.blob, scan_ref=SCAN)
    assert rewrapped.kek_id == "b"
    assert rewrapped.blob != wrapped.blob

    # Retire KEK a: the re-wrapped key still opens the untouched region blob.
    keks.MEDIMG_KEKS = f"b:{KEK_B}"
    unwrapped = unwrap_data_key(rewrapped.blob, scan_ref=SCAN)
    assert decrypt_blob(unwrapped, blob, aad=_aad()) == b"region pixels"
    with pytest.raises(CryptoError):
        unwrap_data_key(wrapped.blob, scan_ref=SCAN)


def test_it_generates_a_development_kek_with_a_loud_warning(settings, caplog):
    settings.MEDIMG_KEKS = None
    settings.MEDIMG_KEK_CURRENT = None
    with caplog.at_level(logging.WARNING):
        ring = key_ring()
    assert ring.current_id == "dev"
    assert (settings.KEY_DIR / "medimg_dev_kek.key").exists()
    assert "DEVELOPMENT KEY GENERATED" in caplog.text
    data_key = new_data_key()
    wrapped = wrap_data_key(data_key, scan_ref=SCAN)
    assert unwrap_data_key(wrapped.blob, scan_ref=SCAN) == data_key


def test_it_parses_keys_once_per_configuration(keks, monkeypatch):
    first = key_ring()
    calls = []
    monkeypatch.setattr(vault_keys, "parse_keks", lambda *a: calls.append(a))
    assert key_ring() is first
    assert calls == []


def test_it_keeps_development_keys_apart_per_key_dir(settings, tmp_path):
    settings.MEDIMG_KEKS = None
    first = key_ring().keys["dev"]
    settings.KEY_DIR = tmp_path / "other-keys"
    assert key_ring().keys["dev"] != first


def test_it_refuses_to_make_a_development_kek_in_production(settings):
    settings.MEDIMG_KEKS = None
    settings.PRODUCTION = True
    with pytest.raises(ImproperlyConfigured):
        current_kek_id()


@pytest.mark.parametrize(
    ("raw", "current"),
    [
        ("a", None),  # no key
        ("a:zz", None),  # neither hex nor base64
        (f"a:{'11' * 16}", None),  # 16 bytes, not 32
        (f"a:{KEK_A},a:{KEK_B}", "a"),  # duplicate id
        (f"a:{KEK_A},b:{KEK_B}", None),  # several and no current
        (f"a:{KEK_A}", "b"),  # current not among them
        (f"a b:{KEK_A}", None),  # bad id
        (",", None),  # nothing
    ],
)
def test_it_refuses_malformed_kek_settings(raw, current):
    with pytest.raises(ImproperlyConfigured):
        vault_keys.parse_keks(raw, current)


def test_it_accepts_base64_keks_and_a_single_key_without_current():
    encoded = base64.urlsafe_b64encode(bytes.fromhex(KEK_A)).decode().rstrip("=")
    ring = vault_keys.parse_keks(f"2026-q1:{encoded}", None)
    assert ring.current_id == "2026-q1"
    assert ring.keys["2026-q1"] == bytes.fromhex(KEK_A)


def _settings_process(**env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": os.environ.get("PATH", ""),
        "MEDIMG_ENV": "production",
        "DEBUG": "false",
        "SECRET_KEY": "s" * 60,
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused",
        "REDIS_URL": "redis://127.0.0.1:6379/9",  # production needs a shared cache
        "AUDIT_HMAC_KEY": "33" * 32,
        "MEDIMG_DEID_SECRET": "44" * 32,
        "ALLOWED_HOSTS": "example.org",
    }
    base.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import medimg.settings"],
        env=base,
        capture_output=True,
        text=True,
        cwd=str(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))),
        check=False,
    )


def test_it_refuses_to_start_production_without_keks():
    result = _settings_process()
    assert result.returncode != 0
    assert "MEDIMG_KEKS" in result.stderr
    started = _settings_process(MEDIMG_KEKS=f"a:{KEK_A}")
    assert started.returncode == 0, started.stderr


def test_it_refuses_to_start_with_a_current_kek_that_is_not_listed():
    result = _settings_process(MEDIMG_KEKS=f"a:{KEK_A}", MEDIMG_KEK_CURRENT="b")
    assert result.returncode != 0
    assert "MEDIMG_KEK_CURRENT" in result.stderr


# --- Arrays ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.uint8).reshape(1, 2, 4, 3),
        np.arange(12, dtype=np.uint16).reshape(1, 3, 4) * 4000,
        np.array([[[-1024, 3071]]], dtype=np.int16),
        np.arange(6, dtype=">u2").reshape(1, 2, 3),
        np.asfortranarray(np.arange(6, dtype=np.uint32).reshape(2, 3)),
    ],
)
def test_it_packs_arrays_exactly(array):
    unpacked = unpack_array(pack_array(array))
    assert unpacked.dtype == array.dtype
    assert unpacked.shape == array.shape
    assert np.array_equal(unpacked, array)


def test_it_never_packs_or_unpickles_objects():
    with pytest.raises(ValueError):
        pack_array(np.array([{"a": 1}], dtype=object))
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        unpack_array(buffer.getvalue())
    with pytest.raises(ValueError):
        unpack_array(b"not an array")
