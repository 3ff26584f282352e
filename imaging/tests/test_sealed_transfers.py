"""Sealed transfers for API clients (issue 21, item 8), against the real token login, key
exchange, restore, region and upload APIs.

- With MEDIMG_REQUIRE_SEALED_TRANSFERS on (the production default), a JWT client gets no
  plaintext restore or region: 400 `seal_required`; browser sessions are not asked (their
  pages seal with WebCrypto themselves).
- Every sealed request carries a fresh X-Medimg-Seal-Nonce, bound into the associated data; the
  same nonce again is 409 `seal_replayed`, and a captured sealed upload under a new nonce does
  not open.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from accounts import keyexchange
from accounts.session_keys import session_key_get
from audit.models import Action, AuditEvent, Outcome
from imaging.models import Scan
from imaging.tests import factories
from imaging.tests.conftest import as_upload
from imaging.vault.pixels import scan_restore_pixels

pytestmark = pytest.mark.django_db


@pytest.fixture
def required(settings: Any) -> None:
    settings.MEDIMG_REQUIRE_SEALED_TRANSFERS = True


def _jwt(api: Any, user: Any, password: str) -> None:
    """Log in through the token endpoint: every later request is a JWT (API) client's."""
    response = api.post(
        "/api/auth/token/", {"username": user.username, "password": password}, format="json"
    )
    assert response.status_code == 200, response.content
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")


def _exchange(api: Any, user: Any) -> tuple[str, bytes]:
    offer = api.get("/api/auth/key-exchange/")
    assert offer.status_code == 200, offer.content
    client = x25519.X25519PrivateKey.generate()
    public = client.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    done = api.post(
        "/api/auth/key-exchange/",
        {
            "exchange_id": offer.json()["exchange_id"],
            "public_key": base64.b64encode(public).decode(),
        },
        format="json",
    )
    assert done.status_code == 201, done.content
    key_id = done.json()["key_id"]
    key = session_key_get(user_id=user.pk, key_id=key_id)
    assert key is not None
    return key_id, key


def _restore(api: Any, scan: Scan, **headers: str) -> Any:
    return api.post(f"/api/images/{scan.pk}/restore/", {}, format="json", **headers)


def _seal_headers(key_id: str, nonce: str) -> dict[str, str]:
    return {"HTTP_X_MEDIMG_SEAL": key_id, "HTTP_X_MEDIMG_SEAL_NONCE": nonce}


def test_it_refuses_a_jwt_client_a_plaintext_restore_or_region_when_sealing_is_required(
    api: Any, doctor: Any, password: str, completed_scan: Scan, required: None
) -> None:
    _jwt(api, doctor, password)
    region = completed_scan.regions.order_by("index").first()

    for response in (_restore(api, completed_scan), api.get(f"/api/regions/{region.pk}/")):
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "seal_required"
        assert b"IHDR" not in response.content
    assert not AuditEvent.objects.filter(
        action__in=[Action.SCAN_RESTORED, Action.REGION_DECRYPTED], outcome=Outcome.SUCCESS
    ).exists()


def test_it_gives_a_jwt_client_the_plaintext_restore_when_sealing_is_not_required(
    api: Any, doctor: Any, password: str, completed_scan: Scan, settings: Any
) -> None:
    settings.MEDIMG_REQUIRE_SEALED_TRANSFERS = False
    _jwt(api, doctor, password)
    response = _restore(api, completed_scan)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"


def test_a_browser_session_is_not_asked_to_seal(
    api: Any, doctor: Any, completed_scan: Scan, required: None
) -> None:
    api.force_login(doctor)  # A session cookie, as the pages have.
    response = _restore(api, completed_scan)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"


def test_it_accepts_a_fresh_sealed_restore_and_refuses_its_replay(
    api: Any,
    doctor: Any,
    password: str,
    completed_scan: Scan,
    text_png: tuple[bytes, np.ndarray],
    required: None,
) -> None:
    _jwt(api, doctor, password)
    key_id, key = _exchange(api, doctor)
    nonce = secrets.token_hex(16)

    fresh = _restore(api, completed_scan, **_seal_headers(key_id, nonce))
    replay = _restore(api, completed_scan, **_seal_headers(key_id, nonce))

    assert fresh.status_code == 200, fresh.content
    aad = keyexchange.transfer_aad(
        "restore", scan=completed_scan.pk, format="png", frame=0, enhance=False, nonce=nonce
    )
    png = keyexchange.unseal(key, fresh.content, key_id=key_id, aad=aad)
    assert png[:4] == b"\x89PNG"
    assert replay.status_code == 409
    assert replay.json()["error"]["code"] == "seal_replayed"
    # Refused before anything was decrypted: one restore, not two.
    assert AuditEvent.objects.filter(action=Action.SCAN_RESTORED).count() == 1
    # Bound to this request: the answer does not open as another request's.
    with pytest.raises(keyexchange.SealError):
        keyexchange.unseal(
            key,
            fresh.content,
            key_id=key_id,
            aad=keyexchange.transfer_aad(
                "restore",
                scan=completed_scan.pk,
                format="png",
                frame=0,
                enhance=False,
                nonce=secrets.token_hex(16),
            ),
        )
    # A new nonce for the next request is fine.
    again = _restore(api, completed_scan, **_seal_headers(key_id, secrets.token_hex(16)))
    assert again.status_code == 200


def test_it_refuses_a_sealed_region_replay(
    api: Any, doctor: Any, password: str, completed_scan: Scan, required: None
) -> None:
    _jwt(api, doctor, password)
    key_id, key = _exchange(api, doctor)
    region = completed_scan.regions.order_by("index").first()
    nonce = secrets.token_hex(16)
    url = f"/api/regions/{region.pk}/"

    fresh = api.get(url, **_seal_headers(key_id, nonce))
    assert fresh.status_code == 200
    aad = keyexchange.transfer_aad("region", region=region.pk, nonce=nonce)
    assert keyexchange.unseal(key, fresh.content, key_id=key_id, aad=aad)[:4] == b"\x89PNG"
    replay = api.get(url, **_seal_headers(key_id, nonce))
    assert replay.status_code == 409
    assert replay.json()["error"]["code"] == "seal_replayed"


def test_it_refuses_a_sealed_request_without_a_nonce(
    api: Any, doctor: Any, password: str, completed_scan: Scan
) -> None:
    _jwt(api, doctor, password)
    key_id, _ = _exchange(api, doctor)
    response = _restore(api, completed_scan, HTTP_X_MEDIMG_SEAL=key_id)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_seal_nonce"


def test_it_refuses_a_replayed_sealed_upload_under_the_same_or_a_new_nonce(
    api: Any,
    technician: Any,
    password: str,
    patient: Any,
    bright_detector: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    _jwt(api, technician, password)
    key_id, key = _exchange(api, technician)
    pixels = factories.text_image(200, 150, seed=11)
    nonce = secrets.token_hex(16)
    aad = keyexchange.transfer_aad("upload", patient=patient.id, name="a.png", nonce=nonce)
    sealed = keyexchange.seal(key, factories.png_bytes(pixels), key_id=key_id, aad=aad)
    url = f"/api/patients/{patient.id}/images/"

    def post(headers: dict[str, str]) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return api.post(
                url, {"files": [as_upload("a.png", sealed)]}, format="multipart", **headers
            )

    accepted = post(_seal_headers(key_id, nonce))
    assert accepted.status_code == 201, accepted.content
    scan = Scan.objects.get(pk=accepted.json()[0]["id"])
    assert np.array_equal(scan_restore_pixels(scan=scan)[0], pixels)

    same_nonce = post(_seal_headers(key_id, nonce))
    assert same_nonce.status_code == 409
    assert same_nonce.json()["error"]["code"] == "seal_replayed"
    new_nonce = post(_seal_headers(key_id, secrets.token_hex(16)))
    assert new_nonce.status_code == 400
    assert new_nonce.json()["error"]["code"] == "invalid_sealed_body"
    assert Scan.objects.count() == 1
