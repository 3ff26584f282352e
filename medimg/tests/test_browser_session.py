"""Sessions in Chromium (issue 16): work that makes no request keeps the session, a draft note
survives an idle sign-out, and logging in again comes back to the same page."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.sessions.models import Session as StoredSession

from medimg.tests.test_browser import CHROMIUM, Session
from patients.models import Patient

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"
    ),
]

DRAFT = "Left kidney: 4 mm stone, lower pole. Compare with last year."


def _sign_in(page: Any, username: str, password: str) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def _drafts(page: Any) -> list[str]:
    return page.evaluate(
        "Object.keys(sessionStorage).filter(k => k.startsWith('medimg-note-draft:'))"
    )


@pytest.mark.django_db(transaction=True)
def test_activity_keeps_the_session_and_a_draft_survives_an_idle_sign_out(
    serial_live_server: Any, chromium: Any, doctor: Any, password: str
) -> None:
    idle = django_settings.SESSION_COOKIE_AGE
    patient = Patient.objects.create(id="MRN-16", name="Ada Lovelace", age=36)
    doc = Session(chromium, serial_live_server.url)
    page = doc.page
    page.clock.install()
    doc.log_in(doctor.username, password)
    page.goto(f"/patients/{patient.id}/")
    page.locator("body[data-idle-ready]").wait_for()
    # The page's own requests (notes card, thumbnails) finish before time is moved on.
    page.wait_for_load_state("networkidle")
    dialog = page.get_by_role("dialog")

    # 100 s short of the timeout, the doctor scrolls and presses a key on the page: no request
    # of its own, but the session is renewed on the server (the keep-alive request).
    page.clock.run_for((idle - 100) * 1000)
    assert not dialog.is_visible()
    before = StoredSession.objects.get().expire_date
    with page.expect_response(lambda r: r.url.endswith("/api/auth/me/") and r.ok):
        page.mouse.move(400, 400)
        page.mouse.wheel(0, 120)
    assert StoredSession.objects.get().expire_date > before
    # Another 100 s: without the renewal the page would have signed out by now.
    page.clock.run_for(100 * 1000)
    assert not dialog.is_visible()
    assert "/login/" not in page.url

    # Typing a note is activity, and the text is kept as a draft in this tab.
    # Typing renews the session too (over RENEW_SECONDS since the last request): the renewal
    # must be answered before the clock jumps, or its late answer counts as fresh activity.
    note = page.get_by_label("Add a note")
    with page.expect_response(lambda r: r.url.endswith("/api/auth/me/") and r.ok):
        note.fill(DRAFT)
    assert len(_drafts(page)) == 1

    # Left alone: the warning, then the idle sign-out, to a login page that comes back here.
    page.clock.run_for((idle + 5) * 1000)
    page.wait_for_url("**/login/?idle=1&next=*")
    page.get_by_text("without activity").wait_for()
    doc.shot("i16-24-session-idle-signed-out-with-next")
    _sign_in(page, doctor.username, password)
    page.wait_for_url(f"**/patients/{patient.id}/")
    page.get_by_text("Your unsaved note was restored").wait_for()
    assert note.input_value() == DRAFT
    doc.shot("i16-25-session-draft-restored")

    # Saved: the draft is gone.
    page.get_by_role("button", name="Add note").click()
    page.locator("[data-note]").get_by_text(DRAFT).wait_for()
    assert note.input_value() == ""
    assert _drafts(page) == []

    # A draft left when the user signs out on purpose is discarded.
    note.fill("second thought")
    assert len(_drafts(page)) == 1
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login/**")
    assert _drafts(page) == []
    assert doc.console_errors() == []
    doc.close()
