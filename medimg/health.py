"""Health endpoints for load balancers, orchestrators and the operators on call.

- `GET /healthz`: liveness. The process answers: 200 `{"status": "ok"}` and nothing else. It
  touches no database, cache or file, so a slow dependency never gets a healthy web process
  killed.
- `GET /healthz/ready`: readiness. Runs every check below; 200 `{"status": "ok"}` when all
  pass, 503 `{"status": "unavailable"}` when one fails. An admin (signed in, second factor
  done, or a JWT) also gets each check's result and time. No check reports a secret, a
  connection string or patient data: a failure is named by its exception class only.

Checks: `database` (a query), `cache` (set, get, delete), `broker` (a Redis PING, or a kombu
connection, when a broker is configured; "in-process" otherwise), `storage` (a probe file
written and deleted through the default storage), `keys` (the key-encryption keys and the
audit anchor key decode).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage, storages
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

BROKER_TIMEOUT_SECONDS = 2.0
PROBE_PREFIX = "health"


class CheckFailed(Exception):
    """A check ran but found the dependency unusable; the message is safe to show admins."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    milliseconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, "ms": round(self.milliseconds, 1)}


# --- Checks ---------------------------------------------------------------------------------


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        row = cursor.fetchone()
    if not row or row[0] != 1:
        raise CheckFailed("SELECT 1 gave no row")
    return connection.vendor


def check_cache() -> str:
    key = f"healthz:{secrets.token_hex(8)}"
    value = secrets.token_hex(8)
    cache.set(key, value, timeout=30)
    try:
        if cache.get(key) != value:
            raise CheckFailed("a value written was not read back")
    finally:
        cache.delete(key)
    backend = settings.CACHES["default"]["BACKEND"]
    return "redis" if "redis" in backend.lower() else backend.rsplit(".", 1)[-1]


def broker_configured() -> bool:
    url = getattr(settings, "CELERY_BROKER_URL", "") or ""
    return bool(url) and not url.startswith("memory://")


def check_broker() -> str:
    if not broker_configured():
        return "in-process (no broker configured)"
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://", "unix://")):
        import redis

        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=BROKER_TIMEOUT_SECONDS,
            socket_timeout=BROKER_TIMEOUT_SECONDS,
        )
        try:
            if not client.ping():
                raise CheckFailed("PING was not answered")
        finally:
            client.close()
        return "redis"
    from medimg.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
    return "kombu"


def check_storage() -> str:
    """Write, read back and delete a small file through the storage every upload uses."""
    payload = secrets.token_bytes(16)
    name = default_storage.save(
        f"{PROBE_PREFIX}/probe-{secrets.token_hex(8)}.bin", ContentFile(payload)
    )
    try:
        with default_storage.open(name, "rb") as handle:
            if handle.read() != payload:
                raise CheckFailed("a probe file was not read back intact")
    finally:
        default_storage.delete(name)
    return type(storages["default"]).__name__


def _kek_count() -> int:
    """Decode every key-encryption key this process would use (never creates one in
    production; in development the generated key under KEY_DIR is what the app uses)."""
    from medimg.keys import decode_key, load_or_create_dev_key

    raw = getattr(settings, "MEDIMG_KEKS", None)
    if not raw:
        load_or_create_dev_key("MEDIMG_DEV_KEK", None)
        return 1
    ids = []
    for item in raw.replace("\n", ",").split(","):
        if not item.strip():
            continue
        kek_id, sep, encoded = item.partition(":")
        if not sep:
            raise CheckFailed("a MEDIMG_KEKS entry is not id:key")
        decode_key(encoded, name="a key-encryption key")
        ids.append(kek_id.strip())
    if not ids:
        raise CheckFailed("MEDIMG_KEKS holds no keys")
    current = getattr(settings, "MEDIMG_KEK_CURRENT", None)
    if current is not None and current not in ids:
        raise CheckFailed("MEDIMG_KEK_CURRENT is not one of MEDIMG_KEKS")
    return len(ids)


def check_keys() -> str:
    from audit.chain import audit_key, signing_key

    count = _kek_count()
    if len(audit_key()) != 32:
        raise CheckFailed("the audit anchor key is not 32 bytes")
    signing_key()
    return f"{count} key-encryption key{'s' if count != 1 else ''}, audit keys"


CHECKS: dict[str, Callable[[], str]] = {
    "database": check_database,
    "cache": check_cache,
    "broker": check_broker,
    "storage": check_storage,
    "keys": check_keys,
}


def run_checks() -> list[CheckResult]:
    results = []
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            detail, ok = check(), True
        except CheckFailed as exc:
            detail, ok = str(exc), False
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            # The class only: messages can carry connection strings, paths or key names.
            detail, ok = f"failed ({type(exc).__name__})", False
        results.append(CheckResult(name, ok, detail, (time.perf_counter() - started) * 1000))
    return results


# --- Views ----------------------------------------------------------------------------------


def _is_admin(request: HttpRequest) -> bool:
    """A signed-in admin (session, which the OTP middleware has already held to its second
    factor, or a JWT access token)."""
    from accounts.models import Role

    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        from rest_framework.exceptions import APIException

        from accounts.tokens import MedimgJWTAuthentication

        try:
            # It reads the Authorization header only, which a Django request carries too.
            found = MedimgJWTAuthentication().authenticate(request)  # type: ignore[arg-type]
        except APIException:
            return False
        if found is None:
            return False
        user = found[0]
    return bool(user.is_active and getattr(user, "role", "") == Role.ADMIN)


@never_cache
@require_GET
def liveness(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readiness(request: HttpRequest) -> JsonResponse:
    results = run_checks()
    ready = all(result.ok for result in results)
    body: dict[str, Any] = {"status": "ok" if ready else "unavailable"}
    if _is_admin(request):
        body["checks"] = {result.name: result.as_dict() for result in results}
    return JsonResponse(body, status=200 if ready else 503)
