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


# --- The investigator's page: a patient's events by hospital id -------------------------------

SEARCH_PAGE = "/manage/audit/patient/"


def test_the_audit_log_links_to_the_investigator_page(client: Client, admin: Any) -> None:
    client.force_login(admin)

    assert f'href="{SEARCH_PAGE}"' in client.get("/manage/audit/").content.decode()


def test_an_investigator_finds_a_patients_events_by_hospital_id(
    client: Client, admin: Any, technician: Any, doctor: Any
) -> None:
    from audit.pseudonyms import patient_reference
    from patients.selectors import patient_get, patient_list
    from patients.services import patient_create

    patient_create(id="MRN-INV-4411", name="Grace Hopper", created_by=technician)
    patient_create(id="MRN-INV-9999", name="Someone Else", created_by=technician)
    patient_get(user=doctor, patient_id="MRN-INV-4411")
    list(patient_list(user=doctor, search="mrn-inv-4411"))
    reference = patient_reference("MRN-INV-4411")
    client.force_login(admin)

    assert "Hospital patient id" in client.get(SEARCH_PAGE).content.decode()
    response = client.post(SEARCH_PAGE, {"hospital_id": " MRN-INV-4411 "})

    html = response.content.decode()
    assert response.status_code == 200
    # Created, viewed, and the list searched for exactly this id; not the other patient.
    assert html.count("data-audit-row") == 3
    assert reference in html and patient_reference("MRN-INV-9999") not in html
    assert "search: yes" in html
    # The id typed is not shown back, nor the patient's name.
    assert "MRN-INV-4411" not in html and "Grace Hopper" not in html
    searched = AuditEvent.objects.get(action=Action.AUDIT_PATIENT_SEARCHED)
    assert (searched.actor, searched.target_id) == (admin, reference)
    assert searched.details["found"] == 3
    assert "MRN-INV-4411" not in repr((searched.target_id, searched.details))


def test_the_investigator_page_says_when_nothing_is_found(client: Client, admin: Any) -> None:
    client.force_login(admin)

    html = client.post(SEARCH_PAGE, {"hospital_id": "MRN-NOBODY"}).content.decode()

    assert "No events name this patient." in html
    assert AuditEvent.objects.filter(action=Action.AUDIT_PATIENT_SEARCHED).count() == 1


def test_the_investigator_page_needs_an_id(client: Client, admin: Any) -> None:
    client.force_login(admin)

    response = client.post(SEARCH_PAGE, {"hospital_id": "   "})

    assert response.status_code == 400
    assert "This field is required." in response.content.decode()
    assert not AuditEvent.objects.filter(action=Action.AUDIT_PATIENT_SEARCHED).exists()


@pytest.mark.parametrize("persona", ["doctor", "technician", "outsider"])
def test_only_admins_use_the_investigator_page(
    request: pytest.FixtureRequest, client: Client, persona: str
) -> None:
    client.force_login(request.getfixturevalue(persona))

    assert client.get(SEARCH_PAGE).status_code == 403
    assert client.post(SEARCH_PAGE, {"hospital_id": "MRN-1"}).status_code == 403
    assert not AuditEvent.objects.filter(action=Action.AUDIT_PATIENT_SEARCHED).exists()


def test_a_care_team_change_names_the_members(
    client: Client, admin: Any, doctor: Any, other_doctor: Any
) -> None:
    from patients.models import Patient
    from patients.services import patient_set_care_team

    patient = Patient.objects.create(id="MRN-CT-1", name="Care Team")
    patient_set_care_team(patient=patient, members=[other_doctor], actor=doctor)
    client.force_login(admin)

    html = client.get("/manage/audit/", {"action": "patient_care_team_changed"}).content.decode()

    assert f"from: none; to: {other_doctor.username}" in html
