"""/healthz (liveness) and /healthz/ready (readiness) against the real database, cache,
storage and keys (and real Redis when REDIS_URL is set)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from accounts.tokens import token_pair_for

pytestmark = pytest.mark.django_db

CHECK_NAMES = {"database", "cache", "broker", "storage", "keys"}


def _ready(client: Client, **extra: Any) -> tuple[int, dict[str, Any]]:
    response = client.get("/healthz/ready", **extra)
    assert response["Content-Type"] == "application/json"
    assert "no-store" in response["Cache-Control"]
    return response.status_code, response.json()


def test_liveness_is_ok_and_says_nothing_else(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_liveness_answers_even_when_storage_is_broken(
    client: Client, settings: Any, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"x")
    settings.MEDIA_ROOT = blocker / "media"
    assert client.get("/healthz").status_code == 200


def test_readiness_for_anonymous_callers_is_a_bare_status(client: Client) -> None:
    status, body = _ready(client)
    assert status == 200
    assert body == {"status": "ok"}


def test_readiness_for_other_roles_is_a_bare_status(client: Client, doctor: Any) -> None:
    client.force_login(doctor)
    status, body = _ready(client)
    assert (status, body) == (200, {"status": "ok"})


def test_readiness_for_an_admin_lists_every_check(
    client: Client, admin: Any, settings: Any
) -> None:
    client.force_login(admin)
    status, body = _ready(client)
    assert status == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == CHECK_NAMES
    assert all(check["ok"] for check in body["checks"].values()), body
    assert body["checks"]["database"]["detail"] == connection.vendor
    # The storage probe is gone again.
    assert not list((Path(settings.MEDIA_ROOT) / "health").glob("*"))


def test_readiness_for_an_admin_token(client: Client, admin: Any) -> None:
    access = str(token_pair_for(admin).access_token)
    status, body = _ready(client, HTTP_AUTHORIZATION=f"Bearer {access}")
    assert status == 200
    assert set(body["checks"]) == CHECK_NAMES


def test_a_doctor_token_gets_no_details(client: Client, doctor: Any) -> None:
    access = str(token_pair_for(doctor).access_token)
    assert _ready(client, HTTP_AUTHORIZATION=f"Bearer {access}") == (200, {"status": "ok"})


def test_unwritable_storage_makes_it_unavailable(
    client: Client, admin: Any, settings: Any, tmp_path: Path
) -> None:
    # Root may write anywhere, so a mode bit would not stop it: a file where the media
    # folder's parent should be does.
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"x")
    settings.MEDIA_ROOT = blocker / "media"

    status, body = _ready(client)
    assert (status, body) == (503, {"status": "unavailable"})

    client.force_login(admin)
    status, body = _ready(client)
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["storage"]["ok"] is False
    assert body["checks"]["storage"]["detail"].startswith("failed (")
    # The path is not shown.
    assert str(tmp_path) not in json.dumps(body)
    assert {name for name, check in body["checks"].items() if not check["ok"]} == {"storage"}


def test_a_key_that_does_not_decode_makes_it_unavailable_without_showing_it(
    client: Client, admin: Any, settings: Any
) -> None:
    secret_looking = "k1:zz" + "41" * 30
    settings.MEDIMG_KEKS = secret_looking
    settings.MEDIMG_KEK_CURRENT = "k1"
    client.force_login(admin)
    status, body = _ready(client)
    assert status == 503
    assert body["checks"]["keys"]["ok"] is False
    text = json.dumps(body)
    assert "41" * 30 not in text and "MEDIMG_KEKS[" not in text


def test_configured_keys_are_counted(client: Client, admin: Any, settings: Any) -> None:
    settings.MEDIMG_KEKS = f"old:{'11' * 32},new:{'22' * 32}"
    settings.MEDIMG_KEK_CURRENT = "new"
    client.force_login(admin)
    status, body = _ready(client)
    assert status == 200
    assert body["checks"]["keys"]["detail"].startswith("2 key-encryption keys")
    assert "11" * 32 not in json.dumps(body)


def test_a_broker_that_does_not_answer_makes_it_unavailable(
    client: Client, admin: Any, settings: Any
) -> None:
    # A real connection attempt to a port nothing listens on (bound, then closed).
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.CELERY_BROKER_URL = f"redis://:hunter2-secret@127.0.0.1:{port}/0"
    client.force_login(admin)
    status, body = _ready(client)
    assert status == 503
    assert body["checks"]["broker"]["ok"] is False
    assert "hunter2" not in json.dumps(body)


@pytest.mark.skipif(
    not os.environ.get("REDIS_URL"),
    reason="REDIS_URL is not set: the cache is local memory and there is no broker to check",
)
def test_real_redis_cache_and_broker_are_checked(client: Client, admin: Any) -> None:
    client.force_login(admin)
    status, body = _ready(client)
    assert status == 200, body
    assert body["checks"]["cache"]["detail"] == "redis"
    assert body["checks"]["broker"]["detail"] == "redis"


def test_without_a_broker_it_says_in_process(client: Client, admin: Any, settings: Any) -> None:
    settings.CELERY_BROKER_URL = "memory://"
    client.force_login(admin)
    _, body = _ready(client)
    assert body["checks"]["broker"] == {
        "ok": True,
        "detail": "in-process (no broker configured)",
        "ms": body["checks"]["broker"]["ms"],
    }
