"""The gateway's cards as people see them, in Debian's headless Chromium: a technician's scan
page with each send's status, an admin's statistics page with the gateway's health.
Screenshots go to var/screenshots/ (MEDIMG_SCREENSHOT_DIR overrides)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.health import heartbeat_beat
from imaging.models import Scan

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

browser_tests = pytest.importorskip("medimg.tests.test_browser")


def test_the_cards_in_a_browser(
    forwarded: Scan,
    serial_live_server: Any,
    chromium: Any,
    listener: int,
    technician: Any,
    admin: Any,
    password: str,
) -> None:
    tech = browser_tests.Session(chromium, serial_live_server.url)
    tech.log_in(technician.username, password)
    tech.page.goto(f"/scans/{forwarded.pk}/")
    card = tech.page.locator('[data-panel="gateway-sends"]')
    card.wait_for()
    assert "research-orthanc" in card.inner_text()
    assert "Not sent yet: will try again" in card.inner_text()
    card.scroll_into_view_if_needed()
    tech.shot("gateway-01-scan-send-status")
    assert tech.console_errors() == []
    tech.close()

    heartbeat_beat(name=f"MEDIMG@127.0.0.1:{listener}")
    from accounts.tests.otp_codes import code, enrol

    device = enrol(admin)
    adm = browser_tests.Session(chromium, serial_live_server.url)
    adm.log_in(admin.username, password, otp=lambda: code(device))
    adm.page.goto("/manage/statistics/")
    health = adm.page.locator('[data-panel="gateway-health"]')
    health.wait_for()
    text = health.inner_text()
    assert "Up" in text and "MODALITY1" in text and "association_failed" in text
    adm.shot("gateway-02-statistics-health")
    assert adm.console_errors() == []
    adm.close()
