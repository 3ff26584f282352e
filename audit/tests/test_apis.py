from __future__ import annotations

import io
from typing import Any

import pytest
from rest_framework.test import APIClient

from audit.chain import signing_key
from audit.export import verify_export
from audit.models import Action, AuditEvent, Outcome
from audit.services import audit_record

from .conftest import tamper

pytestmark = pytest.mark.django_db

URLS = ["/api/audit/export/", "/api/audit/events/", "/api/audit/verify/"]


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("persona", ["technician", "doctor", "outsider"])
def test_it_refuses_every_audit_api_to_non_admins(
    api: APIClient, request: pytest.FixtureRequest, persona: str, url: str
) -> None:
    user = request.getfixturevalue(persona)
    api.force_authenticate(user)

    response = api.get(url)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert not AuditEvent.objects.filter(action=Action.AUDIT_EXPORTED).exists()
    # The middleware records the refusal, with who and what.
    refused = AuditEvent.objects.get(action=Action.REQUEST_REFUSED)
    assert refused.outcome == Outcome.REFUSED
    assert refused.actor_id == user.pk and refused.actor_username == user.username
    assert refused.details == {"method": "GET", "path": url, "status": 403}


@pytest.mark.parametrize("url", URLS)
def test_it_asks_anonymous_callers_to_authenticate(api: APIClient, url: str) -> None:
    response = api.get(url, REMOTE_ADDR="10.1.2.3", HTTP_USER_AGENT="curl/8")

    assert response.status_code == 401
    refused = AuditEvent.objects.get(action=Action.REQUEST_REFUSED)
    assert (refused.actor_id, refused.actor_username) == (None, "")
    assert (refused.ip, refused.user_agent) == ("10.1.2.3", "curl/8")
    assert refused.details["status"] == 401


def test_it_downloads_a_signed_export_for_admins(api: APIClient, admin: Any, doctor: Any) -> None:
    audit_record(action=Action.PATIENT_VIEWED, actor=doctor, target_id="P1")
    audit_record(action=Action.LOGIN_FAILED, username="mallory", outcome=Outcome.FAILURE)
    api.force_authenticate(admin)

    response = api.get("/api/audit/export/", HTTP_ACCEPT="application/x-ndjson")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    assert "attachment" in response["Content-Disposition"]
    body = b"".join(response.streaming_content)
    report = verify_export(io.BytesIO(body), public_key=signing_key().public_key())
    assert (report.ok, report.events) == (True, 2)
    exported = AuditEvent.objects.get(action=Action.AUDIT_EXPORTED)
    assert exported.actor_id == admin.pk and exported.details["count"] == 2
    assert exported.details["file_sha256"] == response["X-Content-SHA256"]


def test_it_validates_the_export_range(api: APIClient, admin: Any) -> None:
    api.force_authenticate(admin)

    bad_date = api.get("/api/audit/export/", {"since": "yesterday"})
    backwards = api.get("/api/audit/export/", {"since": "2026-03-02", "until": "2026-03-01"})

    assert bad_date.status_code == 400 and "since" in bad_date.json()["error"]["fields"]
    assert backwards.status_code == 400
    assert not AuditEvent.objects.filter(action=Action.AUDIT_EXPORTED).exists()


def test_it_lists_and_filters_events_for_admins(
    api: APIClient, admin: Any, doctor: Any, technician: Any
) -> None:
    audit_record(action=Action.PATIENT_VIEWED, actor=doctor, target_id="P1")
    audit_record(action=Action.PATIENT_CREATED, actor=technician, target_id="P2")
    audit_record(action=Action.LOGIN_FAILED, username="mallory", outcome=Outcome.FAILURE)
    api.force_authenticate(admin)

    everything = api.get("/api/audit/events/").json()
    by_actor = api.get("/api/audit/events/", {"actor": "doris"}).json()
    by_action = api.get("/api/audit/events/", {"action": "patient_created"}).json()
    failures = api.get("/api/audit/events/", {"outcome": "failure"}).json()
    nothing = api.get("/api/audit/events/", {"since": "2000-01-01", "until": "2000-01-02"}).json()

    assert everything["count"] == 3
    assert [event["sequence"] for event in everything["results"]] == [3, 2, 1]
    assert [event["target_id"] for event in by_actor["results"]] == ["P1"]
    assert [event["actor_username"] for event in by_action["results"]] == ["tina"]
    assert [event["actor_username"] for event in failures["results"]] == ["mallory"]
    assert nothing["count"] == 0
    assert set(everything["results"][0]) >= {"hash", "prev_hash", "role", "details", "ip"}


def test_it_reports_the_chain_state_to_admins(api: APIClient, admin: Any, doctor: Any) -> None:
    for n in range(4):
        audit_record(action=Action.PATIENT_VIEWED, actor=doctor, target_id=f"P{n}")
    api.force_authenticate(admin)

    intact = api.get("/api/audit/verify/").json()
    tamper("UPDATE audit_auditevent SET target_id = 'PX' WHERE sequence = 2")
    broken = api.get("/api/audit/verify/").json()

    assert intact == {"ok": True, "events": 4, "first_bad": None, "reason": None, "message": ""}
    assert (broken["ok"], broken["first_bad"], broken["reason"]) == (False, 2, "edited")
    assert broken["events"] == 1 and "sequence 2" in broken["message"]


@pytest.mark.django_db(transaction=True)
def test_it_reads_a_consistent_snapshot_outside_any_transaction(
    api: APIClient, admin: Any, doctor: Any
) -> None:
    # No test transaction around the request: on PostgreSQL the read starts its own
    # REPEATABLE READ transaction, which must be the first statement to work at all.
    for n in range(3):
        audit_record(action=Action.PATIENT_VIEWED, actor=doctor, target_id=f"P{n}")
    api.force_authenticate(admin)

    verified = api.get("/api/audit/verify/").json()
    exported = api.get("/api/audit/export/")
    body = b"".join(exported.streaming_content)

    assert (verified["ok"], verified["events"]) == (True, 3)
    report = verify_export(io.BytesIO(body), public_key=signing_key().public_key())
    assert (report.ok, report.events) == (True, 3)
    assert api.get("/api/audit/verify/").json()["events"] == 4  # the export's own event
