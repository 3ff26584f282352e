"""Attacks on the ciphertexts: a flipped byte in the nonce, the ciphertext, the tag or the
associated data fails with one generic error (the same type and text whatever was touched),
for stored blobs (engine.crypto.envelope) and sealed transfers (accounts.keyexchange, and the upload
API that opens them); and 100,000 encryptions under one key never repeat a nonce."""

from __future__ import annotations

import os
import secrets
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts import keyexchange
from accounts.session_keys import key_exchange_begin, key_exchange_complete
from engine.crypto import envelope as crypto
from engine.errors import CryptoError
from imaging.tests import factories
from patients.models import Patient

KEY = bytes(range(32))
AAD = crypto.region_aad(scan_ref="scan-uid", index=0, frame=0, box=(1, 2, 30, 40))
PLAINTEXT = b"burned-in patient name pixels" * 4


def _flip(data: bytes, position: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 0x80
    return bytes(changed)


def _blob_parts(blob: bytes, header_len: int, nonce_len: int) -> dict[str, int]:
    """One byte position inside each part of a framed AES-GCM message."""
    return {
        "nonce": header_len + nonce_len // 2,
        "ciphertext": header_len + nonce_len + 3,
        "tag": len(blob) - 1,
    }


# --- Stored blobs ---------------------------------------------------------------------------


def _stored_failure(blob: bytes, aad: bytes) -> tuple[type, str]:
    with pytest.raises(CryptoError) as caught:
        crypto.decrypt_blob(KEY, blob, aad=aad)
    return type(caught.value), str(caught.value)


def test_it_refuses_a_stored_blob_with_any_part_flipped_with_one_error() -> None:
    blob = crypto.encrypt_blob(KEY, PLAINTEXT, aad=AAD)
    assert crypto.decrypt_blob(KEY, blob, aad=AAD) == PLAINTEXT
    header_len = 6 + blob[5]
    errors = {
        part: _stored_failure(_flip(blob, position), AAD)
        for part, position in _blob_parts(blob, header_len, crypto.NONCE_BYTES).items()
    }
    for position in (0, len(AAD) // 2, len(AAD) - 1):
        errors[f"aad[{position}]"] = _stored_failure(blob, _flip(AAD, position))

    assert len(set(errors.values())) == 1, errors


# --- Sealed transfers -----------------------------------------------------------------------


SESSION_KEY = bytes(range(100, 132))
KEY_ID = "0123456789abcdef0123456789abcdef"


def _sealed_failure(sealed: bytes, aad: bytes) -> tuple[type, str]:
    with pytest.raises(keyexchange.SealError) as caught:
        keyexchange.unseal(SESSION_KEY, sealed, key_id=KEY_ID, aad=aad)
    return type(caught.value), str(caught.value)


def test_it_refuses_a_sealed_transfer_with_any_part_flipped_with_one_error() -> None:
    aad = keyexchange.transfer_aad("restore", scan=7, format="png", frame=0, enhance=False)
    sealed = keyexchange.seal(SESSION_KEY, PLAINTEXT, key_id=KEY_ID, aad=aad)
    assert keyexchange.unseal(SESSION_KEY, sealed, key_id=KEY_ID, aad=aad) == PLAINTEXT
    header_len = len(keyexchange.SEAL_MAGIC) + 2 + len(KEY_ID)
    errors = {
        part: _sealed_failure(_flip(sealed, position), aad)
        for part, position in _blob_parts(sealed, header_len, keyexchange.NONCE_BYTES).items()
    }
    for position in (0, len(aad) // 2, len(aad) - 1):
        errors[f"aad[{position}]"] = _sealed_failure(sealed, _flip(aad, position))
    other_scan = keyexchange.transfer_aad("restore", scan=8, format="png", frame=0, enhance=False)
    errors["another scan"] = _sealed_failure(sealed, other_scan)

    assert len(set(errors.values())) == 1, errors


@pytest.mark.django_db
def test_it_refuses_every_tampered_sealed_upload_with_one_api_error(
    api: Any, technician: Any
) -> None:
    patient = Patient.objects.create(id="MRN-FLIP", name="Flip Test", created_by=technician)
    offer = key_exchange_begin(user=technician, group=keyexchange.X25519)
    own = keyexchange.generate_server_key(keyexchange.X25519)
    info = key_exchange_complete(
        user=technician,
        exchange_id=offer.exchange_id,
        public_key=keyexchange.b64encode(own.public),
    )
    secret = keyexchange.shared_secret(keyexchange.X25519, own.private, offer.server_public_key)
    key, key_id = keyexchange.derive_session_key(
        secret,
        group=keyexchange.X25519,
        user_id=technician.pk,
        exchange_id=offer.exchange_id,
        server_public=offer.server_public_key,
        client_public=own.public,
    )
    assert key_id == info.key_id
    image = factories.png_bytes(factories.text_image(64, 48))

    def sealed_for(nonce: str) -> bytes:
        # Each request has its own nonce, bound into the associated data (a replay is refused).
        aad = keyexchange.transfer_aad("upload", patient=patient.id, name="scan.png", nonce=nonce)
        return keyexchange.seal(key, image, key_id=key_id, aad=aad)

    header_len = len(keyexchange.SEAL_MAGIC) + 2 + len(key_id)
    parts = _blob_parts(sealed_for("0" * 32), header_len, keyexchange.NONCE_BYTES)
    bodies = {}
    for part, position in parts.items():
        nonce = secrets.token_hex(16)
        bodies[part] = (nonce, _flip(sealed_for(nonce), position))
    # Associated data: the same body sent under another file name is another context.
    nonce = secrets.token_hex(16)
    bodies["aad (file name)"] = (nonce, sealed_for(nonce))
    api.force_authenticate(technician)

    answers = {}
    for part, (nonce, body) in bodies.items():
        name = "other.png" if part.startswith("aad") else "scan.png"
        upload = SimpleUploadedFile(name, body, content_type="application/octet-stream")
        response = api.post(
            f"/api/patients/{patient.id}/images/",
            {"files": [upload]},
            HTTP_X_MEDIMG_SEAL=key_id,
            HTTP_X_MEDIMG_SEAL_NONCE=nonce,
        )
        answers[part] = (response.status_code, response.json()["error"]["code"])

    assert set(answers.values()) == {(400, "invalid_sealed_body")}, answers
    assert not patient.scans.exists()


# --- Nonces ---------------------------------------------------------------------------------


def test_it_never_repeats_a_nonce_in_100000_encryptions_under_one_key() -> None:
    key = os.urandom(32)
    header_len = 6 + len(crypto.data_key_id(key))
    nonces = set()
    for index in range(100_000):
        blob = crypto.encrypt_blob(key, b"x", aad=index.to_bytes(4, "big"))
        nonces.add(blob[header_len : header_len + crypto.NONCE_BYTES])

    assert len(nonces) == 100_000
    assert {len(nonce) for nonce in nonces} == {12}
