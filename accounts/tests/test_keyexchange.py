"""Key exchange: RFC 7919 constants, both groups end to end, refused keys, single use, expiry,
logout, and the seal helpers the imaging APIs will use."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.core.cache import cache
from django.test import RequestFactory

from accounts import keyexchange, session_keys
from accounts.keyexchange import FFDHE3072_P
from accounts.session_keys import session_key_for_request, session_key_get
from audit.models import Action, AuditEvent, Outcome
from engine.errors import EngineError

pytestmark = pytest.mark.django_db

URL = "/api/auth/key-exchange/"
P = FFDHE3072_P
Q = (P - 1) // 2


# --- The client's side, written from the documented derivation only -------------------------


def _hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 by hand, so the test does not share code with the server."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def _client_view(
    z: bytes, *, group: str, user_id: int, exchange_id: str, server_pub: bytes, client_pub: bytes
) -> tuple[bytes, str]:
    def lp(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    info = (
        b"medimg/session-key/v1"
        + lp(group.encode())
        + lp(str(user_id).encode())
        + lp(exchange_id.encode())
        + lp(server_pub)
        + lp(client_pub)
    )
    okm = _hkdf_sha256(z, salt=b"medimg/key-exchange/v1", info=info, length=48)
    return okm[:32], okm[32:].hex()


def _begin(api: Any, user: Any, group: str | None = None) -> dict[str, Any]:
    api.force_authenticate(user)
    response = api.get(URL, {"group": group} if group else {})
    assert response.status_code == 200, response.content
    return response.json()


def _complete(api: Any, exchange_id: str, public_key: bytes | str) -> Any:
    text = public_key if isinstance(public_key, str) else base64.b64encode(public_key).decode()
    return api.post(URL, {"exchange_id": exchange_id, "public_key": text}, format="json")


def x25519_exchange(api: Any, user: Any) -> tuple[str, bytes]:
    offer = _begin(api, user)
    client = x25519.X25519PrivateKey.generate()
    client_pub = client.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    server_pub = base64.b64decode(offer["server_public_key"])
    response = _complete(api, offer["exchange_id"], client_pub)
    assert response.status_code == 201, response.content
    key, key_id = _client_view(
        client.exchange(x25519.X25519PublicKey.from_public_bytes(server_pub)),
        group="x25519",
        user_id=user.pk,
        exchange_id=offer["exchange_id"],
        server_pub=server_pub,
        client_pub=client_pub,
    )
    assert response.json()["key_id"] == key_id
    return key_id, key


# --- RFC 7919 constants ---------------------------------------------------------------------


def _miller_rabin(n: int, bases: tuple[int, ...]) -> bool:
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _floor_two_pow_times_e(bits: int) -> int:
    guard = 64
    one = 1 << (bits + guard)
    total, term, k = 0, one, 0
    while term:
        total += term
        k += 1
        term //= k
    return total >> guard


def test_it_uses_the_published_ffdhe3072_prime() -> None:
    # RFC 7919 A.2: p = 2^3072 - 2^3008 + {[2^2942 * e] + 2625351} * 2^64 - 1.
    expected = 2**3072 - 2**3008 + (_floor_two_pow_times_e(2942) + 2625351) * 2**64 - 1
    assert expected == P
    assert P.bit_length() == 3072
    assert keyexchange.FFDHE3072_G == 2


def test_it_uses_a_safe_prime_and_a_generator_of_the_prime_order_subgroup() -> None:
    bases = (2, 3, 5, 7, 11, 13)
    assert _miller_rabin(P, bases)
    assert _miller_rabin(Q, bases)
    assert not _miller_rabin(P + 2, bases)  # The test can say no.
    assert pow(2, Q, P) == 1  # g = 2 has order q, not 2q.


# --- End to end through the API -------------------------------------------------------------


def test_it_agrees_an_x25519_session_key_end_to_end(api: Any, doctor: Any) -> None:
    offer = _begin(api, doctor)
    assert offer["group"] == "x25519"
    assert offer["parameters"] is None
    assert offer["expires_in"] == 120

    key_id, key = x25519_exchange(api, doctor)

    assert session_key_get(user_id=doctor.pk, key_id=key_id) == key
    event = AuditEvent.objects.get(action=Action.KEY_EXCHANGED)
    assert event.actor_id == doctor.pk
    assert event.details == {"group": "x25519", "key_id": key_id}


def test_it_agrees_an_ffdhe3072_session_key_end_to_end(api: Any, technician: Any) -> None:
    offer = _begin(api, technician, "ffdhe3072")
    assert offer["group"] == "ffdhe3072"
    assert int(offer["parameters"]["p"], 16) == P
    assert offer["parameters"]["g"] == 2
    server_pub = base64.b64decode(offer["server_public_key"])
    assert len(server_pub) == 384
    server_y = int.from_bytes(server_pub, "big")
    assert 1 < server_y < P - 1 and pow(server_y, Q, P) == 1

    x = secrets.randbelow(Q - 2) + 2
    client_pub = pow(2, x, P).to_bytes(384, "big")
    response = _complete(api, offer["exchange_id"], client_pub)

    assert response.status_code == 201, response.content
    z = pow(server_y, x, P).to_bytes(384, "big")
    key, key_id = _client_view(
        z,
        group="ffdhe3072",
        user_id=technician.pk,
        exchange_id=offer["exchange_id"],
        server_pub=server_pub,
        client_pub=client_pub,
    )
    assert response.json() == {"key_id": key_id, "group": "ffdhe3072", "expires_in": 3600}
    assert session_key_get(user_id=technician.pk, key_id=key_id) == key


def test_it_gives_each_exchange_its_own_server_key_and_session_key(api: Any, doctor: Any) -> None:
    first, second = _begin(api, doctor), _begin(api, doctor)
    assert first["exchange_id"] != second["exchange_id"]
    assert first["server_public_key"] != second["server_public_key"]

    (id_a, key_a), (id_b, key_b) = x25519_exchange(api, doctor), x25519_exchange(api, doctor)

    assert id_a != id_b and key_a != key_b


def test_it_keeps_no_key_in_the_clear_in_the_cache(api: Any, doctor: Any) -> None:
    key_id, key = x25519_exchange(api, doctor)

    stored = cache.get(f"kx:session-key:{doctor.pk}:{key_id}")

    assert isinstance(stored, bytes) and key not in stored


def test_it_refuses_an_unknown_group(api: Any, doctor: Any) -> None:
    api.force_authenticate(doctor)

    response = api.get(URL, {"group": "ffdhe2048"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_group"


@pytest.mark.parametrize("persona", ["admin", "outsider"])
def test_it_refuses_roles_without_patient_data(api: Any, persona: str, request: Any) -> None:
    api.force_authenticate(request.getfixturevalue(persona))

    assert api.get(URL).status_code == 403
    assert _complete(api, "x" * 32, b"\x09" + b"\0" * 31).status_code == 403


def test_it_refuses_an_anonymous_caller(api: Any) -> None:
    assert api.get(URL).status_code == 401


# --- Refused public keys --------------------------------------------------------------------

_X25519_P = 2**255 - 19
_LOW_ORDER_X25519 = {
    "zero": bytes(32),
    "one (order 4)": (1).to_bytes(32, "little"),
    "order 8 (a)": bytes.fromhex(
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"
    ),
    "order 8 (b)": bytes.fromhex(
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"
    ),
    "p - 1 (order 2)": (_X25519_P - 1).to_bytes(32, "little"),
    "p (zero again)": _X25519_P.to_bytes(32, "little"),
}


@pytest.mark.parametrize("name", list(_LOW_ORDER_X25519))
def test_it_refuses_low_order_x25519_points(api: Any, doctor: Any, name: str) -> None:
    offer = _begin(api, doctor)

    response = _complete(api, offer["exchange_id"], _LOW_ORDER_X25519[name])

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_public_key"
    refused = AuditEvent.objects.get(action=Action.KEY_EXCHANGED)
    assert refused.outcome == Outcome.REFUSED


def _non_residue() -> int:
    # p = 3 mod 4, so -1 is a non-residue; 2 is a residue (p = 7 mod 8): -2 is outside.
    y = P - 2
    assert pow(y, Q, P) == P - 1
    return y


@pytest.mark.parametrize(
    "y",
    [
        pytest.param(0, id="zero"),
        pytest.param(1, id="one"),
        pytest.param(P - 1, id="p-1"),
        pytest.param(P, id="p"),
        pytest.param(_non_residue(), id="outside-the-subgroup"),
    ],
)
def test_it_refuses_bad_dh_public_values(api: Any, doctor: Any, y: int) -> None:
    offer = _begin(api, doctor, "ffdhe3072")

    response = _complete(api, offer["exchange_id"], y.to_bytes(384, "big"))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_public_key"


@pytest.mark.parametrize(
    "group,length", [("x25519", 31), ("x25519", 33), ("ffdhe3072", 383), ("ffdhe3072", 385)]
)
def test_it_refuses_public_keys_of_the_wrong_length(
    api: Any, doctor: Any, group: str, length: int
) -> None:
    offer = _begin(api, doctor, group)
    public = (b"\x09" + secrets.token_bytes(length))[:length]

    response = _complete(api, offer["exchange_id"], public)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_public_key"


def test_it_refuses_a_public_key_that_is_not_base64(api: Any, doctor: Any) -> None:
    offer = _begin(api, doctor)

    response = _complete(api, offer["exchange_id"], "not base64 at all!")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_public_key"


def test_it_checks_dh_values_in_the_pure_module_too() -> None:
    for y in (0, 1, P - 1, P, _non_residue()):
        with pytest.raises(keyexchange.InvalidPublicKey):
            keyexchange.dh_check_public(y)
    keyexchange.dh_check_public(pow(2, 12345, P))


# --- Exchange ids ---------------------------------------------------------------------------


def test_it_refuses_an_exchange_id_used_twice(api: Any, doctor: Any) -> None:
    offer = _begin(api, doctor)
    client = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    assert _complete(api, offer["exchange_id"], client).status_code == 201

    again = _complete(api, offer["exchange_id"], client)

    assert again.status_code == 400
    assert again.json()["error"]["code"] == "invalid_exchange"


def test_it_uses_up_an_exchange_refused_for_a_bad_key(api: Any, doctor: Any) -> None:
    offer = _begin(api, doctor)
    assert _complete(api, offer["exchange_id"], bytes(32)).status_code == 400

    good = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    response = _complete(api, offer["exchange_id"], good)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_exchange"


def test_it_refuses_another_users_exchange_id(api: Any, doctor: Any, technician: Any) -> None:
    offer = _begin(api, doctor)
    client = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()

    api.force_authenticate(technician)
    stolen = _complete(api, offer["exchange_id"], client)

    assert stolen.status_code == 400
    assert stolen.json()["error"]["code"] == "invalid_exchange"
    # The owner's exchange is untouched by the attempt.
    api.force_authenticate(doctor)
    assert _complete(api, offer["exchange_id"], client).status_code == 201


@pytest.mark.parametrize("exchange_id", ["", "short", "x" * 32, "../../etc/passwd" + "a" * 16])
def test_it_refuses_unknown_exchange_ids(api: Any, doctor: Any, exchange_id: str) -> None:
    api.force_authenticate(doctor)
    client = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()

    response = _complete(api, exchange_id, client)

    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"invalid_exchange", "invalid"}


def test_it_expires_an_exchange(api: Any, doctor: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(session_keys, "KEY_EXCHANGE_SECONDS", 1)
    offer = _begin(api, doctor)
    client = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()

    time.sleep(1.5)
    response = _complete(api, offer["exchange_id"], client)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_exchange"


# --- Session key lifetime -------------------------------------------------------------------


def test_it_expires_session_keys(api: Any, doctor: Any, settings: Any) -> None:
    settings.SESSION_KEY_SECONDS = 1
    key_id, key = x25519_exchange(api, doctor)
    assert session_key_get(user_id=doctor.pk, key_id=key_id) == key

    time.sleep(1.5)

    assert session_key_get(user_id=doctor.pk, key_id=key_id) is None


def test_it_ends_session_keys_at_jwt_logout(api: Any, doctor: Any, password: str) -> None:
    pair = api.post(
        "/api/auth/token/", {"username": doctor.username, "password": password}, format="json"
    ).json()
    key_id, _ = x25519_exchange(api, doctor)
    api.force_authenticate(None)

    assert (
        api.post("/api/auth/logout/", {"refresh": pair["refresh"]}, format="json").status_code
        == 204
    )

    assert session_key_get(user_id=doctor.pk, key_id=key_id) is None
    # A key agreed after logging in again works.
    new_id, new_key = x25519_exchange(api, doctor)
    assert session_key_get(user_id=doctor.pk, key_id=new_id) == new_key


def test_it_ends_session_keys_at_session_logout(
    client: Any, api: Any, technician: Any, password: str
) -> None:
    key_id, _ = x25519_exchange(api, technician)
    assert client.login(username=technician.username, password=password)

    client.post("/logout/")

    assert session_key_get(user_id=technician.pk, key_id=key_id) is None


def test_it_ends_only_the_logged_out_users_keys(
    api: Any, doctor: Any, technician: Any, client: Any, password: str
) -> None:
    doctors_id, doctors_key = x25519_exchange(api, doctor)
    technicians_id, _ = x25519_exchange(api, technician)
    assert client.login(username=technician.username, password=password)

    client.post("/logout/")

    assert session_key_get(user_id=technician.pk, key_id=technicians_id) is None
    assert session_key_get(user_id=doctor.pk, key_id=doctors_id) == doctors_key


# --- The request helper for sealed transfers ------------------------------------------------


def _request(user: Any, seal: str | None, nonce: str | None = None) -> Any:
    headers = (
        {"HTTP_X_MEDIMG_SEAL": seal, "HTTP_X_MEDIMG_SEAL_NONCE": nonce or secrets.token_hex(16)}
        if seal is not None
        else {}
    )
    request = RequestFactory().get("/api/images/1/restore/", **headers)
    request.user = user
    return request


def test_it_finds_the_session_key_named_by_the_seal_header(api: Any, doctor: Any) -> None:
    key_id, key = x25519_exchange(api, doctor)

    found = session_key_for_request(_request(doctor, key_id))

    assert found is not None and found.key == key and found.key_id == key_id
    assert session_key_for_request(_request(doctor, None)) is None


def test_it_refuses_a_malformed_seal_header(doctor: Any) -> None:
    with pytest.raises(EngineError) as caught:
        session_key_for_request(_request(doctor, "not-a-key-id"))
    assert (caught.value.code, caught.value.status_code) == ("invalid_seal_header", 400)


def test_it_refuses_another_users_or_an_unknown_session_key(
    api: Any, doctor: Any, technician: Any
) -> None:
    key_id, _ = x25519_exchange(api, doctor)

    for user, seal in ((technician, key_id), (doctor, "0" * 32)):
        with pytest.raises(EngineError) as caught:
            session_key_for_request(_request(user, seal))
        assert (caught.value.code, caught.value.status_code) == ("session_key_expired", 401)


def test_it_refuses_a_sealed_request_without_a_fresh_nonce(api: Any, doctor: Any) -> None:
    key_id, _ = x25519_exchange(api, doctor)
    nonce = secrets.token_hex(16)
    for bad in ("", "0" * 31, "G" * 32, nonce.upper()):
        request = RequestFactory().get(
            "/", HTTP_X_MEDIMG_SEAL=key_id, **({"HTTP_X_MEDIMG_SEAL_NONCE": bad} if bad else {})
        )
        request.user = doctor
        with pytest.raises(EngineError) as caught:
            session_key_for_request(request)
        assert (caught.value.code, caught.value.status_code) == ("invalid_seal_nonce", 400)

    first = session_key_for_request(_request(doctor, key_id, nonce))
    assert first is not None and first.nonce == nonce
    with pytest.raises(EngineError) as caught:
        session_key_for_request(_request(doctor, key_id, nonce))
    assert (caught.value.code, caught.value.status_code) == ("seal_replayed", 409)
    # A fresh nonce is accepted.
    assert session_key_for_request(_request(doctor, key_id)) is not None


def test_it_requires_a_seal_only_when_the_setting_says_so_and_only_where_asked(
    doctor: Any, settings: Any
) -> None:
    settings.MEDIMG_REQUIRE_SEALED_TRANSFERS = False
    assert session_key_for_request(_request(doctor, None), api_clients_must_seal=True) is None
    settings.MEDIMG_REQUIRE_SEALED_TRANSFERS = True
    assert session_key_for_request(_request(doctor, None)) is None
    with pytest.raises(EngineError) as caught:
        session_key_for_request(_request(doctor, None), api_clients_must_seal=True)
    assert (caught.value.code, caught.value.status_code) == ("seal_required", 400)


# --- Sealing --------------------------------------------------------------------------------


def test_it_seals_and_unseals_with_the_documented_header(api: Any, doctor: Any) -> None:
    key_id, key = x25519_exchange(api, doctor)
    aad = keyexchange.transfer_aad("restore", scan="1b4e28ba", format="png")

    sealed = keyexchange.seal(key, b"pixels", key_id=key_id, aad=aad)

    assert sealed[:7] == b"MSEAL\x01\x20" and sealed[7:39] == key_id.encode()
    assert keyexchange.sealed_key_id(sealed) == key_id
    assert keyexchange.unseal(key, sealed, key_id=key_id, aad=aad) == b"pixels"
    assert aad == b'medimg/sealed-restore/v1\n{"format":"png","scan":"1b4e28ba"}'


def test_it_refuses_a_tampered_or_misdirected_sealed_message(api: Any, doctor: Any) -> None:
    key_id, key = x25519_exchange(api, doctor)
    other_id, other_key = x25519_exchange(api, doctor)
    aad = keyexchange.transfer_aad("upload", patient="MRN-1", filename="a.png")
    sealed = keyexchange.seal(key, b"an upload", key_id=key_id, aad=aad)

    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    attempts = [
        (key, bytes(flipped), key_id, aad),
        (
            key,
            sealed,
            key_id,
            keyexchange.transfer_aad("upload", patient="MRN-2", filename="a.png"),
        ),
        (other_key, sealed, key_id, aad),
        (other_key, sealed, other_id, aad),
        (key, sealed[:20], key_id, aad),
    ]
    for attempt_key, blob, attempt_id, attempt_aad in attempts:
        with pytest.raises(keyexchange.SealError):
            keyexchange.unseal(attempt_key, blob, key_id=attempt_id, aad=attempt_aad)


def test_it_seals_a_download_and_opens_an_upload_for_one_client(api: Any, doctor: Any) -> None:
    key_id, key = x25519_exchange(api, doctor)
    context = session_key_for_request(_request(doctor, key_id))
    assert context is not None

    download = session_keys.seal_for(context, b"png bytes", purpose="restore", scan=7, format="png")
    upload = keyexchange.seal(
        key,
        b"dicom bytes",
        key_id=key_id,
        aad=keyexchange.transfer_aad("upload", patient="P1", nonce=context.nonce),
    )

    # The request's nonce is bound into both directions.
    aad = keyexchange.transfer_aad("restore", format="png", scan=7, nonce=context.nonce)
    with pytest.raises(keyexchange.SealError):
        keyexchange.unseal(
            key,
            download,
            key_id=key_id,
            aad=keyexchange.transfer_aad("restore", format="png", scan=7),
        )
    assert keyexchange.unseal(key, download, key_id=key_id, aad=aad) == b"png bytes"
    assert session_keys.unseal_from(context, upload, purpose="upload", patient="P1") == (
        b"dicom bytes"
    )
    with pytest.raises(EngineError) as caught:
        session_keys.unseal_from(context, upload, purpose="upload", patient="P2")
    assert (caught.value.code, caught.value.status_code) == ("invalid_sealed_body", 400)
