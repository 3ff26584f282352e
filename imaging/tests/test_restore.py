"""Restore: pixel-exact, audited, and a generic failure for any tampering."""

from __future__ import annotations

import io
import secrets
from typing import Any

import numpy as np
import pytest
from django.db import connection
from PIL import Image

from accounts import keyexchange
from accounts.session_keys import session_key_get
from audit.models import Action, AuditEvent, Outcome
from engine.crypto import envelope as crypto
from imaging.models import Region, Scan, ScanStatus
from imaging.tests import factories
from imaging.tests.conftest import as_upload, media_files
from imaging.vault.pixels import scan_restore_pixels

pytestmark = pytest.mark.django_db


def _png_pixels(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def _restore(api: Any, doctor: Any, scan: Scan, **body: Any) -> Any:
    api.force_authenticate(doctor)
    return api.post(f"/api/images/{scan.pk}/restore/", body, format="json")


def test_it_restores_pixel_exact_original(
    api: Any, doctor: Any, completed_scan: Scan, text_png: tuple[bytes, np.ndarray]
) -> None:
    response = _restore(api, doctor, completed_scan)

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert "no-store" in response["Cache-Control"]
    restored = _png_pixels(response.content)
    assert restored.dtype == np.uint8
    assert np.array_equal(restored, text_png[1])
    event = AuditEvent.objects.get(action=Action.SCAN_RESTORED)
    assert (event.outcome, event.actor, event.target_id) == (
        Outcome.SUCCESS,
        doctor,
        str(completed_scan.pk),
    )


def test_the_redacted_image_differs_where_the_text_was(
    api: Any, technician: Any, completed_scan: Scan, text_png: tuple[bytes, np.ndarray]
) -> None:
    api.force_authenticate(technician)
    redacted = _png_pixels(api.get(f"/api/images/{completed_scan.pk}/redacted/").content)
    original = text_png[1]
    ink = original.min(axis=2) >= factories.INK_THRESHOLD
    assert ink.sum() > 100
    # Every burned-in text pixel is gone, and the rest of the image is untouched.
    assert not (redacted.min(axis=2)[ink] >= factories.INK_THRESHOLD).any()
    outside = np.ones(ink.shape, bool)
    for region in completed_scan.regions.all():
        outside[region.y1 : region.y2, region.x1 : region.x2] = False
    assert np.array_equal(redacted[outside], original[outside])


def test_it_restores_a_jpeg_upload_as_its_decoded_pixels(
    api: Any, doctor: Any, bright_detector: None, upload: Any
) -> None:
    data = factories.jpeg_bytes(factories.text_image(240, 180, seed=4), quality=90)
    scan = Scan.objects.get(pk=upload(("a.jpg", data)).json()[0]["id"])
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    png = _restore(api, doctor, scan)
    jpeg = _restore(api, doctor, scan, format="jpeg")

    assert np.array_equal(_png_pixels(png.content), decoded)
    assert jpeg.status_code == 200 and jpeg["Content-Type"] == "image/jpeg"
    assert jpeg.content[:3] == b"\xff\xd8\xff"


def test_it_restores_a_16_bit_dicom_exactly(
    api: Any, doctor: Any, completed_dicom_upload: tuple[Scan, np.ndarray, bytes]
) -> None:
    scan, pixels, uploaded = completed_dicom_upload
    assert scan.frames == 2 and scan.regions.exists()

    restored = scan_restore_pixels(scan=scan)
    assert restored.dtype == np.uint16
    assert np.array_equal(restored, pixels)

    response = _restore(api, doctor, scan, format="dicom")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/dicom"
    assert response.content == uploaded

    second_frame = _restore(api, doctor, scan, format="png", frame=1)
    assert second_frame.status_code == 200
    assert _png_pixels(second_frame.content).shape[:2] == pixels.shape[1:3]


def test_it_enhances_with_clahe_on_request(api: Any, doctor: Any, completed_scan: Scan) -> None:
    plain = _png_pixels(_restore(api, doctor, completed_scan).content)
    enhanced = _restore(api, doctor, completed_scan, enhance=True)

    assert enhanced.status_code == 200
    enhanced_pixels = _png_pixels(enhanced.content)
    assert enhanced_pixels.shape[:2] == plain.shape[:2]
    assert not np.array_equal(enhanced_pixels, plain)


def test_it_refuses_dicom_format_for_a_png_upload(
    api: Any, doctor: Any, completed_scan: Scan
) -> None:
    response = _restore(api, doctor, completed_scan, format="dicom")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_format"


def test_it_refuses_restore_before_processing_completes(
    api: Any, doctor: Any, completed_scan: Scan
) -> None:
    Scan.objects.filter(pk=completed_scan.pk).update(status=ScanStatus.PROCESSING)
    response = _restore(api, doctor, completed_scan)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "scan_not_ready"
    event = AuditEvent.objects.get(action=Action.SCAN_RESTORED)
    assert event.outcome == Outcome.REFUSED and event.details["error"] == "scan_not_ready"


def test_it_decrypts_one_region_for_a_doctor(
    api: Any, doctor: Any, completed_scan: Scan, text_png: tuple[bytes, np.ndarray]
) -> None:
    region = completed_scan.regions.order_by("index").first()
    assert region is not None
    api.force_authenticate(doctor)

    response = api.get(f"/api/regions/{region.pk}/")

    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    expected = text_png[1][region.y1 : region.y2, region.x1 : region.x2]
    assert np.array_equal(_png_pixels(response.content), expected)
    event = AuditEvent.objects.get(action=Action.REGION_DECRYPTED)
    assert event.outcome == Outcome.SUCCESS and event.target_id == str(region.pk)


# --- Tampering ------------------------------------------------------------------------------


def _flip(data: bytes, position: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 0x01
    return bytes(changed)


def _header_length(blob: bytes) -> int:
    return 6 + blob[5]


def _region_blob_edits() -> dict[str, Any]:
    return {
        "key id in header": lambda b: _flip(b, 7),
        "nonce": lambda b: _flip(b, _header_length(b) + 3),
        "ciphertext": lambda b: _flip(b, _header_length(b) + crypto.NONCE_BYTES + 5),
        "tag": lambda b: _flip(b, len(b) - 1),
        "truncated": lambda b: b[:-8],
    }


@pytest.mark.parametrize("part", sorted(_region_blob_edits()))
def test_a_flipped_byte_in_a_region_fails_restore(
    api: Any, doctor: Any, completed_scan: Scan, part: str
) -> None:
    region = completed_scan.regions.order_by("index").last()
    assert region is not None
    tampered = _region_blob_edits()[part](bytes(region.ciphertext))
    # A raw edit, as someone with database access would make it.
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Region._meta.db_table} SET ciphertext = %s WHERE id = %s",
            [tampered, region.pk],
        )

    _assert_restore_fails(api, doctor, completed_scan)
    api.force_authenticate(doctor)
    region_response = api.get(f"/api/regions/{region.pk}/")
    assert region_response.status_code == 500
    assert region_response.json()["error"]["code"] == "restore_failed"
    assert AuditEvent.objects.filter(
        action=Action.REGION_DECRYPTED, outcome=Outcome.FAILURE
    ).exists()


@pytest.mark.parametrize(
    "change",
    [{"x1": 1}, {"y2": -1}, {"index": 40}, {"frame": 1}],
    ids=["box-x1", "box-y2", "index", "frame"],
)
def test_changed_associated_data_fails_restore(
    api: Any, doctor: Any, completed_scan: Scan, change: dict[str, int]
) -> None:
    region = completed_scan.regions.order_by("index").first()
    assert region is not None
    ((field, delta),) = change.items()
    Region.objects.filter(pk=region.pk).update(**{field: getattr(region, field) + delta})

    _assert_restore_fails(api, doctor, completed_scan)


def test_a_region_moved_to_another_scan_fails(
    api: Any, doctor: Any, bright_detector: None, upload: Any
) -> None:
    png = factories.png_bytes(factories.text_image(320, 240, seed=7))
    first = Scan.objects.get(pk=upload(("a.png", png)).json()[0]["id"])
    second = Scan.objects.get(pk=upload(("b.png", png)).json()[0]["id"])
    stolen = first.regions.get(index=0).ciphertext
    Region.objects.filter(scan=second, index=0).update(ciphertext=stolen)

    _assert_restore_fails(api, doctor, second)


@pytest.mark.parametrize("position", ["header", "nonce", "body", "tag"])
def test_a_flipped_byte_in_the_wrapped_key_fails_restore(
    api: Any, doctor: Any, completed_scan: Scan, position: str
) -> None:
    wrapped = bytes(completed_scan.wrapped_key)
    offset = {
        "header": 2,
        "nonce": _header_length(wrapped) + 1,
        "body": _header_length(wrapped) + crypto.NONCE_BYTES + 2,
        "tag": len(wrapped) - 2,
    }[position]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Scan._meta.db_table} SET wrapped_key = %s WHERE id = %s",
            [_flip(wrapped, offset), completed_scan.pk],
        )

    _assert_restore_fails(api, doctor, completed_scan)


def test_a_changed_redacted_file_fails_restore(
    api: Any, doctor: Any, completed_scan: Scan, settings: Any
) -> None:
    from pathlib import Path

    path = Path(settings.MEDIA_ROOT) / completed_scan.redacted_pixels_path
    path.write_bytes(_flip(path.read_bytes(), 200))

    _assert_restore_fails(api, doctor, completed_scan)


def _assert_restore_fails(api: Any, doctor: Any, scan: Scan) -> None:
    api.force_authenticate(doctor)
    before = AuditEvent.objects.filter(action=Action.SCAN_RESTORED, outcome=Outcome.FAILURE)
    count = before.count()

    response = api.post(f"/api/images/{scan.pk}/restore/", {}, format="json")

    assert response.status_code == 500
    body = response.json()
    assert body["error"]["code"] == "restore_failed"
    assert response["Content-Type"].startswith("application/json")
    # One generic message, whatever was changed.
    assert "integrity check" in body["error"]["message"]
    assert before.count() == count + 1


def test_it_serves_images_whatever_the_client_accepts(
    api: Any, doctor: Any, completed_scan: Scan
) -> None:
    api.force_authenticate(doctor)
    # A browser asks for images; `format` is ours, not DRF's format suffix.
    png = api.post(
        f"/api/images/{completed_scan.pk}/restore/",
        {"format": "png"},
        format="json",
        HTTP_ACCEPT="image/*",
    )
    grid = api.get(f"/api/images/{completed_scan.pk}/grid/", HTTP_ACCEPT="image/png")

    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert grid.status_code == 200 and grid.content.startswith(b"\x89PNG")


# --- Sealed transfers (session key from /api/auth/key-exchange/) ----------------------------


def _session_key(api: Any, user: Any) -> tuple[str, bytes]:
    """Run an X25519 exchange as `user`; the key is read back from the server's store."""
    import base64

    from cryptography.hazmat.primitives.asymmetric import x25519
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    api.force_authenticate(user)
    offer = api.get("/api/auth/key-exchange/").json()
    client = x25519.X25519PrivateKey.generate()
    public = client.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    response = api.post(
        "/api/auth/key-exchange/",
        {"exchange_id": offer["exchange_id"], "public_key": base64.b64encode(public).decode()},
        format="json",
    )
    assert response.status_code == 201, response.content
    key_id = response.json()["key_id"]
    key = session_key_get(user_id=user.pk, key_id=key_id)
    assert key is not None
    return key_id, key


def test_it_seals_a_restore_for_the_clients_session_key(
    api: Any, doctor: Any, completed_scan: Scan, text_png: tuple[bytes, np.ndarray]
) -> None:
    key_id, key = _session_key(api, doctor)
    nonce = secrets.token_hex(16)

    response = api.post(
        f"/api/images/{completed_scan.pk}/restore/",
        {},
        format="json",
        HTTP_X_MEDIMG_SEAL=key_id,
        HTTP_X_MEDIMG_SEAL_NONCE=nonce,
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert response["X-Medimg-Content-Type"] == "image/png"
    assert b"IHDR" not in response.content
    aad = keyexchange.transfer_aad(
        "restore", scan=completed_scan.pk, format="png", frame=0, enhance=False, nonce=nonce
    )
    png = keyexchange.unseal(key, response.content, key_id=key_id, aad=aad)
    assert np.array_equal(_png_pixels(png), text_png[1])
    # Bound to this resource: the same body does not open as another scan's restore.
    with pytest.raises(keyexchange.SealError):
        keyexchange.unseal(
            key,
            response.content,
            key_id=key_id,
            aad=keyexchange.transfer_aad(
                "restore",
                scan=completed_scan.pk + 1,
                format="png",
                frame=0,
                enhance=False,
                nonce=nonce,
            ),
        )


def test_it_seals_a_decrypted_region(api: Any, doctor: Any, completed_scan: Scan) -> None:
    region = completed_scan.regions.order_by("index").first()
    assert region is not None
    key_id, key = _session_key(api, doctor)

    nonce = secrets.token_hex(16)

    response = api.get(
        f"/api/regions/{region.pk}/", HTTP_X_MEDIMG_SEAL=key_id, HTTP_X_MEDIMG_SEAL_NONCE=nonce
    )

    assert response.status_code == 200
    aad = keyexchange.transfer_aad("region", region=region.pk, nonce=nonce)
    assert keyexchange.unseal(key, response.content, key_id=key_id, aad=aad)[:4] == b"\x89PNG"


def test_it_refuses_an_unknown_session_key_before_decrypting(
    api: Any, doctor: Any, completed_scan: Scan
) -> None:
    api.force_authenticate(doctor)

    response = api.post(
        f"/api/images/{completed_scan.pk}/restore/",
        {},
        format="json",
        HTTP_X_MEDIMG_SEAL="0" * 32,
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "session_key_expired"
    assert not AuditEvent.objects.filter(
        action=Action.SCAN_RESTORED, outcome=Outcome.SUCCESS
    ).exists()


def test_it_accepts_a_sealed_upload_and_refuses_a_tampered_one(
    api: Any,
    technician: Any,
    patient: Any,
    settings: Any,
    bright_detector: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    pixels = factories.text_image(200, 150, seed=9)
    key_id, key = _session_key(api, technician)
    nonce = secrets.token_hex(16)
    aad = keyexchange.transfer_aad("upload", patient=patient.id, name="a.png", nonce=nonce)
    sealed = keyexchange.seal(key, factories.png_bytes(pixels), key_id=key_id, aad=aad)
    url = f"/api/patients/{patient.id}/images/"

    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    refused = api.post(
        url,
        {"files": [as_upload("a.png", tampered)]},
        format="multipart",
        HTTP_X_MEDIMG_SEAL=key_id,
        HTTP_X_MEDIMG_SEAL_NONCE=secrets.token_hex(16),
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_sealed_body"
    assert not Scan.objects.exists() and media_files(settings) == []

    with django_capture_on_commit_callbacks(execute=True):
        accepted = api.post(
            url,
            {"files": [as_upload("a.png", sealed)]},
            format="multipart",
            HTTP_X_MEDIMG_SEAL=key_id,
            HTTP_X_MEDIMG_SEAL_NONCE=nonce,
        )
    assert accepted.status_code == 201, accepted.content
    scan = Scan.objects.get(pk=accepted.json()[0]["id"])
    assert np.array_equal(scan_restore_pixels(scan=scan)[0], pixels)


# --- Restore is a POST: no link or image tag can trigger it ---------------------------------


def test_it_refuses_a_restore_by_get_with_a_clear_405(
    api: Any, doctor: Any, completed_scan: Scan
) -> None:
    api.force_authenticate(doctor)

    response = api.get(f"/api/images/{completed_scan.pk}/restore/?format=png&reason=x")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in response.json()["error"]["message"]
    assert not AuditEvent.objects.filter(action=Action.SCAN_RESTORED).exists()


def test_it_refuses_a_cross_site_restore_under_a_doctors_session(
    doctor: Any, completed_scan: Scan
) -> None:
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(doctor)
    url = f"/api/images/{completed_scan.pk}/restore/"

    # What another site can make the doctor's browser send: a link, or a form post that
    # carries the session cookie but not the CSRF token.
    link = browser.get(url, {"format": "png"})
    forged = browser.post(url, '{"format": "png"}', content_type="application/json")

    assert link.status_code == 405
    assert forged.status_code == 403
    assert "CSRF" in forged.json()["error"]["message"]
    assert not AuditEvent.objects.filter(
        action=Action.SCAN_RESTORED, outcome=Outcome.SUCCESS
    ).exists()


def test_it_restores_from_the_doctors_own_page_with_the_csrf_token(
    doctor: Any, completed_scan: Scan, text_png: tuple[bytes, np.ndarray]
) -> None:
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(doctor)
    page = browser.get(f"/scans/{completed_scan.pk}/")
    token = page.cookies["csrftoken"].value

    response = browser.post(
        f"/api/images/{completed_scan.pk}/restore/",
        '{"format": "png", "reason": "Tumour board"}',
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )

    assert response.status_code == 200
    assert np.array_equal(_png_pixels(response.content), text_png[1])
    event = AuditEvent.objects.get(action=Action.SCAN_RESTORED)
    assert event.details["reason"] == "Tumour board"
