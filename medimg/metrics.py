"""Prometheus metrics (prometheus-client), served at `/metrics` to operators only.

What is measured:

- `medimg_http_request_duration_seconds{route, method, status}`: every request, by URL
  pattern (`api/images/<int:scan_id>/restore/`, never the concrete path, so no patient id
  and a bounded number of series), from `RequestMetricsMiddleware`.
- `medimg_uploads_total{format, outcome}`, `medimg_scans_processed_total{status}`,
  `medimg_scan_processing_seconds{status}`, `medimg_scan_regions`, `medimg_restores_total
  {part, outcome}`: counted from the audit log. Every upload, processing result and restore
  is written there by the services (`audit_record`), so one `post_save` receiver on
  `AuditEvent` counts them wherever they happen, after the transaction commits (a rolled-back
  action is not counted). The functions `observe_upload`, `observe_processing` and
  `count_restore` are what it calls; other code may call them too.
- `medimg_queue_depth{queue}`: the length of each Celery queue's Redis list, read at scrape
  time (only with REDIS_URL).
- `medimg_scans{status}`: scans in the database by status, read at scrape time, so it is
  right whichever process did the work.

Processes: counters live in the process that counted. Processing happens in Celery workers,
so for one `/metrics` to add up every gunicorn and Celery process on a host, start them all
with the same empty `PROMETHEUS_MULTIPROC_DIR` (prometheus-client's multiprocess mode; wiped
at each start). A worker on another host can expose its own with `MEDIMG_METRICS_PORT`
(docs/deployment.md).

Access: `/metrics` answers clients that send `Authorization: Bearer <METRICS_TOKEN>`, and
clients whose address is in `METRICS_ALLOWED_IPS` (addresses or networks; default loopback)
on a request that did not pass a reverse proxy (one carrying X-Forwarded-For and the like
comes from the proxy's loopback address, whoever sent it); everyone else gets 403. It holds
no patient data and no secret.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
PROCESSING_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
REGION_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 100, 200, 500)

HTTP_REQUEST_SECONDS = Histogram(
    "medimg_http_request_duration_seconds",
    "Time to answer a request, by URL pattern, method and status code.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
UPLOADS = Counter(
    "medimg_uploads_total",
    "Files accepted for processing (outcome success) or refused after intake, by format.",
    ["format", "outcome"],
)
SCANS_PROCESSED = Counter(
    "medimg_scans_processed_total",
    "Scans that finished processing, by final status (completed or failed).",
    ["status"],
)
PROCESSING_SECONDS = Histogram(
    "medimg_scan_processing_seconds",
    "Processing time of a scan (decode, detect, encrypt, write), by final status.",
    ["status"],
    buckets=PROCESSING_BUCKETS,
)
REGIONS_PER_SCAN = Histogram(
    "medimg_scan_regions",
    "Sensitive regions found and encrypted per processed scan.",
    buckets=REGION_BUCKETS,
)
RESTORES = Counter(
    "medimg_restores_total",
    "Restores of originals (part image, dicom, identity) and region decryptions (part "
    "region), by outcome (success, refused, failure).",
    ["part", "outcome"],
)

UNMATCHED_ROUTE = "<unmatched>"


# --- What the rest of the code calls --------------------------------------------------------


def observe_upload(fmt: str, outcome: str = "success") -> None:
    UPLOADS.labels(format=fmt or "unknown", outcome=outcome).inc()


def observe_processing(status: str, seconds: float | None, regions: int | None) -> None:
    """A scan reached a final status; `seconds` and `regions` when known."""
    SCANS_PROCESSED.labels(status=status).inc()
    if seconds is not None and seconds >= 0:
        PROCESSING_SECONDS.labels(status=status).observe(seconds)
    if regions is not None and regions >= 0:
        REGIONS_PER_SCAN.observe(regions)


def count_restore(outcome: str, part: str = "image") -> None:
    RESTORES.labels(part=part, outcome=outcome).inc()


# --- Counting from the audit log ------------------------------------------------------------


def _processing_seconds(scan_id: str) -> float | None:
    from django.apps import apps

    try:
        scan_model = apps.get_model("imaging", "Scan")
        total_ms = (
            scan_model.objects.filter(pk=int(scan_id)).values_list("total_ms", flat=True).first()
        )
    except (LookupError, ValueError):
        return None
    return None if total_ms is None else float(total_ms) / 1000.0


def _observer_for(event: Any) -> Callable[[], None] | None:
    """What to count for one new audit event (None: nothing). Reads what it needs now, inside
    the transaction that wrote the event; counts only once that transaction commits."""
    from audit.models import Action

    action, outcome = event.action, event.outcome
    details = event.details if isinstance(event.details, dict) else {}
    if action == Action.SCAN_UPLOADED:
        fmt = str(details.get("format") or "unknown")
        return lambda: observe_upload(fmt, outcome)
    if action == Action.SCAN_PROCESSED:
        seconds = _processing_seconds(event.target_id)
        regions = details.get("regions")
        regions = regions if isinstance(regions, int) else None
        return lambda: observe_processing("completed", seconds, regions)
    if action == Action.SCAN_FAILED:
        return lambda: observe_processing("failed", None, None)
    if action == Action.SCAN_RESTORED:
        fallback = "dicom" if details.get("format") == "dicom" else "image"
        part = str(details.get("part") or fallback)
        return lambda: count_restore(outcome, part)
    if action == Action.REGION_DECRYPTED:
        return lambda: count_restore(outcome, "region")
    return None


def on_audit_event(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    """post_save receiver on audit.AuditEvent (connected in medimg.apps)."""
    if not created:
        return
    try:
        observer = _observer_for(instance)
    except Exception:  # noqa: BLE001 - metrics must never break the action they count
        logger.exception("metrics: could not read audit event %s", instance.action)
        return
    if observer is not None:
        transaction.on_commit(observer)


# --- Request latency ------------------------------------------------------------------------


class RequestMetricsMiddleware:
    """Times every request; labels it with its URL pattern, never its concrete path."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = getattr(match, "route", None) or UNMATCHED_ROUTE
        method = request.method if request.method in _METHODS else "other"
        HTTP_REQUEST_SECONDS.labels(
            route=route, method=method, status=str(response.status_code)
        ).observe(time.perf_counter() - started)
        return response


_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


# --- Read at scrape time --------------------------------------------------------------------


def celery_queue_names() -> list[str]:
    names = {getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery") or "celery"}
    for route in (getattr(settings, "CELERY_TASK_ROUTES", None) or {}).values():
        if isinstance(route, dict) and route.get("queue"):
            names.add(route["queue"])
    return sorted(names)


def queue_depths() -> dict[str, int] | None:
    """Messages waiting in each Celery queue (Redis list lengths); None without Redis."""
    url = getattr(settings, "CELERY_BROKER_URL", "") or ""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        with client.pipeline(transaction=False) as pipe:
            names = celery_queue_names()
            for name in names:
                pipe.llen(name)
            return dict(zip(names, (int(n) for n in pipe.execute()), strict=True))
    finally:
        client.close()


class ScrapeTimeCollector(Collector):
    """Gauges read when scraped: queue depths and scans by status."""

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Registering must not read Redis or the database (it happens at import).
        return []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            depths = queue_depths()
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even if Redis is down
            logger.warning("metrics: queue depth unavailable (%s)", type(exc).__name__)
            depths = None
        if depths is not None:
            family = GaugeMetricFamily(
                "medimg_queue_depth", "Messages waiting in a Celery queue.", labels=["queue"]
            )
            for name, depth in depths.items():
                family.add_metric([name], depth)
            yield family
        scans = GaugeMetricFamily(
            "medimg_scans", "Scans in the database, by status.", labels=["status"]
        )
        try:
            from django.apps import apps
            from django.db.models import Count

            scan_model = apps.get_model("imaging", "Scan")
            rows = scan_model.objects.order_by().values("status").annotate(n=Count("id"))
            for row in rows:
                scans.add_metric([row["status"]], row["n"])
        except Exception as exc:  # noqa: BLE001
            logger.warning("metrics: scan counts unavailable (%s)", type(exc).__name__)
            return
        yield scans


_scrape_collector = ScrapeTimeCollector()
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    REGISTRY.register(_scrape_collector)


def metrics_registry() -> CollectorRegistry:
    """The registry a scrape reads: this process's, or every process's in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(_scrape_collector)
        return registry
    return REGISTRY


# --- The endpoint ---------------------------------------------------------------------------


def _address_allowed(address: str) -> bool:
    try:
        client = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    for entry in getattr(settings, "METRICS_ALLOWED_IPS", ["127.0.0.1", "::1"]):
        try:
            if client in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            logger.warning("METRICS_ALLOWED_IPS entry %r is not an address or network", entry)
    return False


def _token_allowed(request: HttpRequest) -> bool:
    expected = getattr(settings, "METRICS_TOKEN", None) or ""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, given = header.partition(" ")
    if not expected or scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


# Headers a reverse proxy adds: a request carrying one came through the proxy, whose own
# (loopback) address REMOTE_ADDR then holds, so the address says nothing about the client.
_PROXY_HEADERS = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_REAL_IP",
    "HTTP_FORWARDED",
)


def scrape_allowed(request: HttpRequest) -> bool:
    """The token, from anywhere; or an allowed REMOTE_ADDR on a request that did not come
    through a proxy (X-Forwarded-For is never believed: a client writes it itself)."""
    if _token_allowed(request):
        return True
    if any(request.META.get(header) for header in _PROXY_HEADERS):
        return False
    return _address_allowed(request.META.get("REMOTE_ADDR", ""))


def start_worker_exporter() -> None:
    """For a Celery worker on a host of its own: serve its metrics on MEDIMG_METRICS_PORT
    (bound to MEDIMG_METRICS_ADDR, default 127.0.0.1). No-op when the port is unset."""
    port = getattr(settings, "MEDIMG_METRICS_PORT", None)
    if not port:
        return
    from prometheus_client import start_http_server

    address = getattr(settings, "MEDIMG_METRICS_ADDR", "127.0.0.1")
    start_http_server(int(port), addr=address, registry=metrics_registry())


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not scrape_allowed(request):
        return JsonResponse(
            {"error": {"code": "forbidden", "message": "Metrics are for operators only."}},
            status=403,
        )
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
