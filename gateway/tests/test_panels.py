"""The gateway's cards on pages that may not import it (imaging.selectors.panels): each send's
status on the scan page, the gateway's health on the admin statistics page.

Real parts: instances arrive through the listener from dcmtk's storescu, are processed and
forwarded to a real Orthanc (sent) and to a port where nothing listens (retrying); the
listener's heartbeat is the one `manage.py dicom_listener` writes (gateway.health).
"""

from __future__ import annotations

import subprocess
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gateway.health import DOWN_AFTER, heartbeat_beat, heartbeat_stop
from gateway.models import (
    ForwardDestination,
    ForwardSend,
    ListenerHeartbeat,
    SendStatus,
)
from gateway.tests.conftest import need
from imaging.models import Scan
from imaging.selectors import panels
from imaging.selectors.panels import Panel

pytestmark = pytest.mark.django_db(transaction=True)


def _page(user: Any, url: str) -> str:
    web = Client()
    web.force_login(user)
    response = web.get(url)
    assert response.status_code == 200
    return response.content.decode()


def test_the_scan_page_shows_each_send(forwarded: Scan, technician: Any, doctor: Any) -> None:
    url = reverse("scan-page", args=[forwarded.pk])
    for user in (technician, doctor):
        html = _page(user, url)
        assert 'data-panel="gateway-sends"' in html
        assert 'data-send-status="sent"' in html and "research-orthanc" in html
        assert 'data-send-status="retrying"' in html and "archive-down" in html
        assert "Not sent yet: will try again" in html
        assert "association_failed" in html
        # The destination is named, never addressed.
        assert "127.0.0.1" not in html


def test_the_scan_page_says_why_nothing_was_sent(
    forwarded: Scan, technician: Any, settings: Any
) -> None:
    ForwardSend.objects.all().delete()
    forwarded.needs_review, forwarded.reviewed_at = True, None
    forwarded.save(update_fields=["needs_review", "reviewed_at"])
    html = _page(technician, reverse("scan-page", args=[forwarded.pk]))
    assert "Held back until a technician confirms the review." in html
    assert "data-send-status" not in html
    # No destination and nothing sent: no card at all.
    ForwardDestination.objects.all().delete()
    assert 'data-panel="gateway-sends"' not in _page(
        technician, reverse("scan-page", args=[forwarded.pk])
    )


def test_the_statistics_page_shows_the_gateways_health(
    forwarded: Scan, admin: Any, listener: int
) -> None:
    url = reverse("statistics-page")
    html = _page(admin, url)
    assert 'data-panel="gateway-health"' in html
    # No `manage.py dicom_listener` has reported (the tests' listener runs in-process).
    assert "Not seen" in html
    assert 'MODALITY1</span> from <span class="mono">127.0.0.1' in html
    assert ">accepted<" in html
    assert 'data-health="queued"><dt>Sends waiting</dt><dd>1<' in html
    assert 'data-health="sent"><dt>Sent</dt><dd>1<' in html
    assert "association_failed</span> sending image" in html and "(will try again)" in html

    name = f"MEDIMG@127.0.0.1:{listener}"
    heartbeat_beat(name=name)
    html = _page(admin, url)
    assert 'data-health="listener"><dt>Listener</dt><dd>Up<' in html
    assert f"{name}: <strong>up</strong>" in html

    # Three missed beats: down.
    ListenerHeartbeat.objects.update(beat_at=timezone.now() - timedelta(seconds=DOWN_AFTER + 1))
    html = _page(admin, url)
    assert "<dd>Down<" in html and f"{name}: <strong>down</strong>" in html
    heartbeat_stop(name=name)
    assert f"{name}: <strong>stopped</strong>" in _page(admin, url)

    # A stranger's association is the last one now: rejected.
    result = subprocess.run(
        [need("echoscu"), "-aet", "STRANGER", "-aec", "MEDIMG", "127.0.0.1", str(listener)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "Association Rejected" in result.stdout + result.stderr
    html = _page(admin, url)
    assert "STRANGER</span>" in html and ">rejected<" in html

    # A send that failed for good is counted, with its error.
    ForwardSend.objects.filter(status=SendStatus.RETRYING).update(
        status=SendStatus.FAILED, last_error="status_0xA700"
    )
    html = _page(admin, url)
    assert 'data-health="failed"><dt>Failed sends</dt><dd>1<' in html
    assert "status_0xA700</span> sending image" in html and "(will try again)" not in html


def test_the_health_card_is_for_admins_only(technician: Any, doctor: Any) -> None:
    for user in (technician, doctor):
        web = Client()
        web.force_login(user)
        assert web.get(reverse("statistics-page")).status_code in (403, 404)


def test_a_failing_provider_is_left_out(admin: Any, monkeypatch: Any) -> None:
    def broken() -> Panel:
        raise RuntimeError("broken add-on")

    monkeypatch.setitem(panels._statistics_providers, "broken", broken)
    html = _page(admin, reverse("statistics-page"))
    assert 'data-panel="gateway-health"' in html
    assert "broken add-on" not in html
