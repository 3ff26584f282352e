"""/metrics: read through the real endpoint after a real upload, processing and restore; who
may scrape it; queue depth from real Redis when REDIS_URL is set."""

from __future__ import annotations

import os
import secrets
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from imaging.tests import factories
from patients.models import Patient

UPLOAD_ROUTE = "api/patients/<str:patient_id>/images/"
RESTORE_ROUTE = "api/images/<int:scan_id>/restore/"


def scrape(client: Client | None = None, **extra: Any) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = (client or Client()).get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.django_db(transaction=True)
def test_an_upload_processing_and_restore_show_in_the_metrics(
    technician: Any, doctor: Any, settings: Any, eager_tasks: None
) -> None:
    settings.IMAGING_DETECTOR = "imaging.tests.factories.bright_text_detector"
    pixels = factories.text_image(320, 240)
    patient = Patient.objects.create(id="MRN-METRICS-1", name="Jane Doe", age=54)
    before = scrape()

    api = APIClient()
    api.force_authenticate(technician)
    response = api.post(
        f"/api/patients/{patient.id}/images/",
        {"files": [SimpleUploadedFile("scan.png", factories.png_bytes(pixels))]},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    scan_id = response.json()[0]["id"]
    api.force_authenticate(doctor)
    restored = api.post(f"/api/images/{scan_id}/restore/", {}, format="json")
    assert restored.status_code == 200, restored.content

    from imaging.models import Scan

    scan = Scan.objects.get(pk=scan_id)
    assert scan.status == "completed", scan.failure_reason
    regions = scan.regions.count()
    assert regions >= 2

    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("medimg_uploads_total", format="png", outcome="success") == 1
    assert delta("medimg_scans_processed_total", status="completed") == 1
    assert delta("medimg_scan_processing_seconds_count", status="completed") == 1
    assert delta("medimg_scan_processing_seconds_sum", status="completed") == pytest.approx(
        scan.total_ms / 1000.0
    )
    assert delta("medimg_scan_regions_count") == 1
    assert delta("medimg_scan_regions_sum") == regions
    assert delta("medimg_restores_total", part="image", outcome="success") == 1
    assert value(after, "medimg_scans", status="completed") == 1
    # Request latency by URL pattern and status: the concrete path (a patient id) never shows.
    assert (
        delta(
            "medimg_http_request_duration_seconds_count",
            route=UPLOAD_ROUTE,
            method="POST",
            status="201",
        )
        == 1
    )
    assert (
        delta(
            "medimg_http_request_duration_seconds_count",
            route=RESTORE_ROUTE,
            method="POST",
            status="200",
        )
        == 1
    )
    text = Client().get("/metrics").content.decode()
    assert patient.id not in text and "Jane" not in text


@pytest.mark.django_db(transaction=True)
def test_a_refused_restore_is_counted_as_refused(
    technician: Any, doctor: Any, settings: Any, eager_tasks: None
) -> None:
    settings.IMAGING_DETECTOR = "imaging.tests.factories.bright_text_detector"
    patient = Patient.objects.create(id="MRN-METRICS-2", name="John Roe", age=61)
    api = APIClient()
    api.force_authenticate(technician)
    data = factories.png_bytes(factories.text_image(160, 120))
    response = api.post(
        f"/api/patients/{patient.id}/images/",
        {"files": [SimpleUploadedFile("scan.png", data)]},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    before = scrape()
    api.force_authenticate(doctor)
    # format=dicom for a PNG upload: the service refuses it (and audits the refusal).
    refused = api.post(
        f"/api/images/{response.json()[0]['id']}/restore/", {"format": "dicom"}, format="json"
    )
    assert refused.status_code == 400
    after = scrape()
    refused_delta = value(after, "medimg_restores_total", part="dicom", outcome="refused") - (
        value(before, "medimg_restores_total", part="dicom", outcome="refused")
    )
    assert refused_delta == 1


def test_an_address_outside_the_list_is_refused(db: Any) -> None:
    response = Client(REMOTE_ADDR="10.20.30.40").get("/metrics")
    assert response.status_code == 403
    assert b"medimg_" not in response.content


def test_a_forwarded_for_header_does_not_let_anyone_in(db: Any) -> None:
    client = Client(REMOTE_ADDR="10.20.30.40")
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 403


def test_a_request_through_the_proxy_needs_the_token(db: Any, settings: Any) -> None:
    # nginx connects from loopback and adds X-Forwarded-For: the address is the proxy's.
    client = Client(REMOTE_ADDR="127.0.0.1")
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 403
    assert client.get("/metrics", HTTP_X_FORWARDED_PROTO="https").status_code == 403
    settings.METRICS_TOKEN = token = secrets.token_urlsafe(32)
    response = client.get(
        "/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 200


def test_a_network_in_the_list_is_let_in(db: Any, settings: Any) -> None:
    settings.METRICS_ALLOWED_IPS = ["10.20.0.0/16"]
    assert Client(REMOTE_ADDR="10.20.30.40").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 403


def test_the_token_lets_a_scraper_in_from_anywhere(db: Any, settings: Any) -> None:
    token = secrets.token_urlsafe(32)
    settings.METRICS_TOKEN = token
    client = Client(REMOTE_ADDR="10.20.30.40")
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}x").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {token}").status_code == 403


def test_no_token_configured_means_no_token_works(db: Any, settings: Any) -> None:
    settings.METRICS_TOKEN = None
    client = Client(REMOTE_ADDR="10.20.30.40")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403


def test_an_unknown_path_is_labelled_unmatched(db: Any) -> None:
    Client().get(f"/no-such-page-{secrets.token_hex(4)}/")
    samples = scrape()
    assert any(
        name == "medimg_http_request_duration_seconds_count"
        and dict(labels).get("route") == "<unmatched>"
        for name, labels in samples
    )
    assert not any("no-such-page" in str(labels) for _, labels in samples)


@pytest.mark.skipif(
    not os.environ.get("REDIS_URL"), reason="REDIS_URL is not set: no Redis queue to measure"
)
def test_queue_depth_is_the_length_of_the_redis_list(db: Any, settings: Any) -> None:
    import redis

    queue = f"metrics-test-{secrets.token_hex(4)}"
    settings.CELERY_BROKER_URL = os.environ["REDIS_URL"]
    settings.CELERY_TASK_ROUTES = {"some.task": {"queue": queue}}
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        client.rpush(queue, *[f"message-{n}" for n in range(3)])
        assert value(scrape(), "medimg_queue_depth", queue=queue) == 3
        client.lpop(queue)
        assert value(scrape(), "medimg_queue_depth", queue=queue) == 2
    finally:
        client.delete(queue)
        client.close()


def test_without_redis_there_is_no_queue_depth(db: Any, settings: Any) -> None:
    settings.CELERY_BROKER_URL = "memory://"
    assert not any(name == "medimg_queue_depth" for name, _ in scrape())


@pytest.mark.slow
def test_multiprocess_mode_adds_up_every_process(tmp_path: Any) -> None:
    """gunicorn and Celery processes sharing PROMETHEUS_MULTIPROC_DIR: one scrape sees all."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}},
        "SQLITE_PATH": str(tmp_path / "db.sqlite3"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "medimg.settings",
        "MEDIMG_KEY_DIR": str(tmp_path / "keys"),
    }
    setup = "import django; django.setup(); from medimg import metrics; "
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-c", setup + "metrics.observe_processing('completed', 1.5, 4)"],
            cwd=root,
            env=env,
            check=True,
            capture_output=True,
        )
    scrape_code = (
        setup + "from prometheus_client import generate_latest; "
        "import sys; sys.stdout.write(generate_latest(metrics.metrics_registry()).decode())"
    )
    text = subprocess.run(
        [sys.executable, "-c", scrape_code],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert value(samples, "medimg_scans_processed_total", status="completed") == 2
    assert value(samples, "medimg_scan_regions_sum") == 8
