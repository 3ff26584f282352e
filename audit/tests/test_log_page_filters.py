"""The audit page (issue 16): filter by patient reference and by scan, export what the filters
show as CSV (audited), background jobs shown as "system"."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.test import Client, RequestFactory

from audit.models import Action, AuditEvent, Outcome
from audit.pseudonyms import patient_reference
from audit.services import audit_record

pytestmark = pytest.mark.django_db


def _rows(html: str) -> int:
    return html.count("data-audit-row")


def _csv(response: Any) -> list[dict[str, str]]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_it_filters_by_patient_reference(client: Client, admin: Any, doctor: Any) -> None:
    for patient in ("MRN-1", "MRN-2"):
        audit_record(
            action=Action.PATIENT_VIEWED, actor=doctor, target_type="patient", target_id=patient
        )
    # A move names the other patient in its details: found from either side.
    audit_record(
        action=Action.PATIENT_UPDATED,
        actor=doctor,
        target_type="patient",
        target_id="MRN-2",
        details={"moved": "in", "patient": "MRN-1"},
    )
    client.force_login(admin)
    reference = patient_reference("MRN-1")

    html = client.get("/manage/audit/", {"patient": reference}).content.decode()

    assert _rows(html) == 2
    assert "MRN-1" not in html
    bad = client.get("/manage/audit/", {"patient": "MRN-1"}).content.decode()
    assert "A patient reference is 12 characters" in bad


def test_it_filters_by_scan(client: Client, admin: Any, doctor: Any) -> None:
    audit_record(action=Action.SCAN_VIEWED, actor=doctor, target_type="scan", target_id="41")
    audit_record(action=Action.SCAN_VIEWED, actor=doctor, target_type="scan", target_id="410")
    audit_record(
        action=Action.REGIONS_EDITED, actor=doctor, target_type="region", details={"scan_id": 41}
    )
    client.force_login(admin)
    assert _rows(client.get("/manage/audit/", {"scan": "41"}).content.decode()) == 2
    assert "Enter a whole number" in client.get("/manage/audit/", {"scan": "x"}).content.decode()


def test_the_export_holds_what_the_filters_show_and_is_audited(
    client: Client, admin: Any, doctor: Any
) -> None:
    audit_record(action=Action.LOGIN, actor=doctor)
    audit_record(action=Action.LOGOUT, actor=doctor)
    # A name typed into a failed login is the sender's text: no formula in a spreadsheet.
    audit_record(
        action=Action.LOGIN_FAILED,
        outcome=Outcome.FAILURE,
        username="=HYPERLINK(1)",
        request=RequestFactory().post("/login/"),
    )
    client.force_login(admin)
    page = client.get("/manage/audit/", {"actor": doctor.username}).content.decode()
    assert f'href="/manage/audit/export/?actor={doctor.username}"' in page
    assert "Export these 2 entries (CSV)" in page

    response = client.get("/manage/audit/export/", {"actor": doctor.username})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment" in response["Content-Disposition"]
    rows = _csv(response)
    assert [row["action"] for row in rows] == ["logout", "login"]
    assert {row["actor"] for row in rows} == {doctor.username}
    exported = AuditEvent.objects.filter(action=Action.AUDIT_EXPORTED).get()
    assert exported.actor_id == admin.pk
    assert exported.details["filters"] == {"actor": doctor.username}
    assert exported.details["count"] == 2 and exported.details["format"] == "csv"

    failed = _csv(client.get("/manage/audit/export/", {"action": "login_failed"}))
    assert [row["actor"] for row in failed] == ["'=HYPERLINK(1)"]


def test_invalid_filters_go_back_to_the_page(client: Client, admin: Any) -> None:
    client.force_login(admin)
    response = client.get("/manage/audit/export/", {"scan": "x"})
    assert response.status_code == 302
    assert response["Location"] == "/manage/audit/?scan=x"
    assert not AuditEvent.objects.filter(action=Action.AUDIT_EXPORTED).exists()


def test_only_admins_export(client: Client, doctor: Any) -> None:
    client.force_login(doctor)
    assert client.get("/manage/audit/export/").status_code == 403


def test_background_jobs_show_as_system(client: Client, admin: Any) -> None:
    audit_record(action=Action.SCAN_PROCESSED, target_type="scan", target_id="7")
    audit_record(
        action=Action.REQUEST_REFUSED,
        outcome=Outcome.REFUSED,
        request=RequestFactory().get("/api/images/7/"),
    )
    client.force_login(admin)
    html = client.get("/manage/audit/", {"outcome": ""}).content.decode()
    labels = [part.split("</span>")[0] for part in html.split("data-actor-label>")[1:]]
    assert labels == ["anonymous", "system"]  # newest first
