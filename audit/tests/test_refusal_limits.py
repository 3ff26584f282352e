"""Anonymous refused requests cannot grow the audit log without bound: at most N audited per
address per minute, the rest counted; user agents are cut to 200 characters."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from audit.models import Action, AuditEvent

pytestmark = pytest.mark.django_db

ME = "/api/auth/me/"
A = {"REMOTE_ADDR": "203.0.113.10"}
B = {"REMOTE_ADDR": "203.0.113.11"}


def _refused_rows(ip: str) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(action=Action.REQUEST_REFUSED, ip=ip).order_by("sequence")
    )


def test_it_audits_at_most_n_anonymous_refusals_a_minute_per_address(
    api: Any, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.MEDIMG_AUDIT_ANONYMOUS_REFUSALS_PER_MINUTE = 3

    with caplog.at_level(logging.WARNING, logger="audit.middleware"):
        answers = [api.get(ME, **A).status_code for _ in range(8)]
        other = api.get(ME, **B).status_code

    assert answers == [401] * 8 and other == 401  # Every request is still refused.
    assert len(_refused_rows("203.0.113.10")) == 3
    assert len(_refused_rows("203.0.113.11")) == 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "audit.middleware"]
    assert len(warnings) == 1 and "203.0.113.10" in warnings[0]


def test_it_tells_the_next_minute_how_many_were_left_out(
    api: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.MEDIMG_AUDIT_ANONYMOUS_REFUSALS_PER_MINUTE = 2
    start = (int(time.time()) // 60) * 60 + 1.0
    monkeypatch.setattr("medimg.ratelimit.time.time", lambda: start)
    for _ in range(7):
        api.get(ME, **A)

    monkeypatch.setattr("medimg.ratelimit.time.time", lambda: start + 60)
    api.get(ME, **A)

    rows = _refused_rows("203.0.113.10")
    assert len(rows) == 3
    assert "unaudited_before" not in rows[0].details
    assert rows[2].details["unaudited_before"] == 5


def test_it_always_audits_refusals_of_signed_in_users(
    api: Any, technician: Any, settings: Any
) -> None:
    settings.MEDIMG_AUDIT_ANONYMOUS_REFUSALS_PER_MINUTE = 1
    api.force_authenticate(technician)

    for _ in range(4):
        assert api.get("/api/audit/events/", **A).status_code == 403

    rows = _refused_rows("203.0.113.10")
    assert len(rows) == 4 and {row.actor_id for row in rows} == {technician.pk}


def test_it_keeps_200_characters_of_a_user_agent(api: Any) -> None:
    api.get(ME, HTTP_USER_AGENT="Mozilla/5.0 " + "A" * 600, **A)

    [row] = _refused_rows("203.0.113.10")
    assert row.user_agent == ("Mozilla/5.0 " + "A" * 600)[:200]


def test_it_still_audits_when_the_cache_is_down(
    api: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def down(*args: Any, **kwargs: Any) -> int:
        raise ConnectionError("cache unreachable")

    monkeypatch.setattr("audit.middleware.rate_limit_hit", down)

    with caplog.at_level(logging.ERROR, logger="audit.middleware"):
        assert api.get(ME, **A).status_code == 401

    assert len(_refused_rows("203.0.113.10")) == 1
