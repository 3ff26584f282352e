"""The admins' audit-log browser (role refusals are in medimg/tests/test_url_policy.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client

from audit.models import Action, AuditEvent
from audit.services import audit_record

pytestmark = pytest.mark.django_db


def test_it_filters_and_pages_the_audit_log(client: Client, admin: Any, doctor: Any) -> None:
    for i in range(3):
        audit_record(
            action=Action.PATIENT_VIEWED,
            actor=doctor,
            target_type="patient",
            target_id=f"MRN-{i}",
            details={"view": "page"},
        )
    audit_record(action=Action.LOGIN, actor=admin)
    client.force_login(admin)

    html = client.get("/manage/audit/", {"actor": doctor.username}).content.decode()

    assert html.count("data-audit-row") == 3
    assert "Patient Viewed" in html or "patient_viewed" in html.lower().replace(" ", "_")
    assert "view: page" in html and '{"view"' not in html  # details as text, not JSON
    html = client.get("/manage/audit/", {"action": "login", "outcome": "success"}).content
    assert (
        html.decode().count("data-audit-row")
        == AuditEvent.objects.filter(action="login", outcome="success").count()
    )
    empty = client.get("/manage/audit/", {"actor": "nobody"}).content.decode()
    assert "No entries match these filters" in empty
    bad = client.get("/manage/audit/", {"since": "2026-02-02", "until": "2026-01-01"})
    assert "The end date is before the start date." in bad.content.decode()


def test_it_verifies_the_chain_on_request(client: Client, admin: Any) -> None:
    audit_record(action=Action.LOGIN, actor=admin)
    client.force_login(admin)
    intact = client.post("/manage/audit/").content.decode()
    assert "The chain is intact." in intact

    last = AuditEvent.objects.order_by("-sequence").first()
    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL refuses UPDATE on the audit table (tested in audit/tests)")
    AuditEvent.objects.filter(pk=last.pk).update(details={"forged": True})
    broken = client.post("/manage/audit/").content.decode()
    assert f"The chain is broken at entry {last.sequence}." in broken


def test_it_needs_a_csrf_token_to_verify(admin: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    assert client.post("/manage/audit/").status_code == 403


def test_the_details_column_hides_internal_keys(client: Client, admin: Any, doctor: Any) -> None:
    # A patient view (written with pseudonyms: marked), a list without a search term (an empty
    # hash) and one with a term (a hash nobody can read).
    audit_record(
        action=Action.PATIENT_VIEWED,
        actor=doctor,
        target_type="patient",
        target_id="MRN-7",
        details={"view": "page"},
    )
    audit_record(action=Action.PATIENT_LISTED, actor=doctor, details={"search": "", "page": 1})
    audit_record(action=Action.PATIENT_LISTED, actor=doctor, details={"search": "smith"})
    stored = [event.details for event in AuditEvent.objects.order_by("sequence")]
    assert stored[0]["pseudonyms"] == 1 and stored[1]["search_hmac"] == ""  # what is hidden
    client.force_login(admin)

    html = client.get("/manage/audit/", {"actor": doctor.username}).content.decode()

    assert "pseudonyms" not in html
    assert "search hmac" not in html
    assert stored[2]["search_hmac"] not in html
    assert "view: page" in html
    assert "page: 1" in html
    assert "search: yes (the term is stored as a keyed hash)" in html
