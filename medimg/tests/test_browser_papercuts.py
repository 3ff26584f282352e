"""Issue 16's smaller page defects, in Chromium: what a person sees on each page."""

from __future__ import annotations

from typing import Any

import pytest

from imaging.tests.test_worklist_paging import _scans
from medimg.tests.test_browser import CHROMIUM, Session

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"
    ),
]


@pytest.mark.django_db(transaction=True)
def test_the_worklist_pages_through_every_image(
    serial_live_server: Any, chromium: Any, technician: Any, password: str
) -> None:
    _scans(technician)
    tech = Session(chromium, serial_live_server.url, viewport={"width": 1440, "height": 900})
    page = tech.page
    tech.log_in(technician.username, password)
    rows = page.locator("[data-worklist-item]")
    assert rows.count() == 10
    assert page.get_by_text("Showing 1–10 of 23").is_visible()
    pager = page.get_by_role("navigation", name="Review worklist pages")
    pager.get_by_role("link", name="Next").click()
    page.wait_for_url("**/?worklist=2")
    pager.get_by_role("link", name="Next").click()
    page.wait_for_url("**/?worklist=3")
    assert rows.count() == 3
    assert pager.get_by_text("Page 3 of 3").is_visible()
    tech.shot("26-worklist-last-page")
    assert tech.console_errors() == []
    tech.close()
