"""Admins see no patient identifiers: a distinctive hospital id is planted in the audit log,
both in events written before pseudonyms (stored as they were) and through today's services,
and then searched for in every admin page, the audit API and the signed export.

Events from before pseudonyms are written with `append_entry`, the chain's one append path, with
the fields the old `audit_record` wrote: a patient target by hospital id, a clear search term,
a hospital id in the details.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.contrib import admin as django_admin
from django.core.exceptions import PermissionDenied
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from audit.chain import signing_key
from audit.export import verify_export
from audit.models import Action, AuditEvent, Outcome
from audit.pseudonyms import patient_reference, search_term_hash
from audit.selectors import audit_chain_verify, audit_event_list
from audit.services import append_entry, audit_export, audit_find_patient_events, audit_record
from patients.models import Patient
from patients.selectors import patient_get, patient_list
from patients.services import patient_create, patient_note_add

pytestmark = pytest.mark.django_db

HOSPITAL_ID = "H-ZZ-991177"


def _old_event(action: str, **fields: Any) -> AuditEvent:
    """An event as the code before pseudonyms wrote it (the hospital id in clear)."""
    row: dict[str, Any] = {
        "actor_id": None,
        "actor_username": "legacy",
        "role": "doctor",
        "action": action,
        "target_type": "",
        "target_id": "",
        "outcome": Outcome.SUCCESS,
        "ip": None,
        "user_agent": "",
        "details": {},
        **fields,
    }
    return append_entry(row)


@pytest.fixture
def planted(technician: Any, doctor: Any, outsider: Any) -> Patient:
    """The id in old events (target, search, details, a refused URL) and through every
    patient service and a refused request today."""
    _old_event(Action.PATIENT_VIEWED, target_type="patient", target_id=HOSPITAL_ID)
    _old_event(Action.PATIENT_LISTED, details={"search": HOSPITAL_ID.lower(), "ordering": "id"})
    _old_event(Action.SCAN_VIEWED, target_type="study", target_id="1.2.3", details={
        "patient": HOSPITAL_ID, "view": "export",
    })  # fmt: skip
    _old_event(Action.REQUEST_REFUSED, outcome=Outcome.REFUSED, details={
        "method": "GET", "path": f"/api/patients/{HOSPITAL_ID}/notes/", "status": 403,
    })  # fmt: skip
    patient = patient_create(id=HOSPITAL_ID, name="Planted Patient", created_by=technician)
    patient_get(user=doctor, patient_id=HOSPITAL_ID)
    list(patient_list(user=doctor, search=HOSPITAL_ID))
    patient_note_add(patient=patient, author=doctor, text="Seen.")
    # Any caller that passes a hospital id in the details is mapped too (imaging does).
    audit_record(
        action=Action.SCAN_VIEWED,
        actor=doctor,
        target_type="study",
        target_id="1.2.4",
        details={"patient": HOSPITAL_ID, "view": "export"},
    )
    refused = APIClient()
    refused.force_login(outsider)
    assert refused.get(f"/api/patients/{HOSPITAL_ID}/").status_code == 403
    assert AuditEvent.objects.count() >= 10
    return patient


def _contains(body: bytes) -> bool:
    return HOSPITAL_ID.lower().encode() in body.lower()


def test_the_planted_id_is_really_stored_in_the_old_events(planted: Patient) -> None:
    # Otherwise the searches below would prove nothing.
    stored = b"".join(repr((e.target_id, e.details)).encode() for e in AuditEvent.objects.all())
    assert _contains(stored)


def test_new_events_name_the_patient_by_reference_and_hash_the_search(
    planted: Patient, doctor: Any
) -> None:
    new = AuditEvent.objects.filter(actor=doctor)
    assert new.count() == 4
    for event in new:
        assert not _contains(repr((event.target_id, event.details)).encode()), event
    viewed = new.get(action=Action.PATIENT_VIEWED)
    assert viewed.target_id == planted.reference == patient_reference(HOSPITAL_ID)
    listed = new.get(action=Action.PATIENT_LISTED)
    assert listed.details["search_hmac"] == search_term_hash(HOSPITAL_ID)


def test_no_admin_page_shows_the_hospital_id(planted: Patient, client: Client, admin: Any) -> None:
    client.force_login(admin)
    pages = ["/admin/", "/manage/audit/", "/manage/statistics/"]
    pages += [
        reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for model in django_admin.site._registry
    ]
    pages += [
        reverse("admin:audit_auditevent_change", args=[event.pk])
        for event in AuditEvent.objects.all()
    ]
    pages += [f"/manage/audit/?page={n}" for n in (1, 2)]
    seen = []
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        if _contains(response.content):
            seen.append(page)
    assert not seen, f"hospital id shown on {seen}"
    # The audit browser does show the events, by reference.
    assert planted.reference in client.get("/manage/audit/").content.decode()


def test_the_admin_search_box_does_not_answer_for_a_hospital_id(
    planted: Patient, client: Client, admin: Any
) -> None:
    client.force_login(admin)
    changelist = reverse("admin:audit_auditevent_changelist")

    for_planted = client.get(changelist, {"q": HOSPITAL_ID})
    for_unknown = client.get(changelist, {"q": "H-ZZ-000000"})

    assert for_planted.status_code == for_unknown.status_code == 200
    assert for_planted.context["cl"].result_count == 0
    assert for_unknown.context["cl"].result_count == 0
    # A reference finds the events written with it.
    by_reference = client.get(changelist, {"q": planted.reference})
    # (created, viewed, note added: the list and the study view have other targets)
    assert by_reference.context["cl"].result_count == 3


def test_the_audit_api_shows_no_hospital_id(planted: Patient, admin: Any) -> None:
    api = APIClient()
    api.force_authenticate(admin)
    url = "/api/audit/events/"
    bodies = []
    while url:
        response = api.get(url)
        assert response.status_code == 200
        bodies.append(response.content)
        url = response.json()["next"]

    assert not any(_contains(body) for body in bodies)
    targets = [
        row["target_id"]
        for body in bodies
        for row in json.loads(body)["results"]
        if row["target_type"] == "patient"
    ]
    assert targets and set(targets) == {planted.reference}


def test_the_signed_export_shows_no_hospital_id_and_still_verifies(
    planted: Patient, admin: Any
) -> None:
    api = APIClient()
    api.force_authenticate(admin)

    response = api.get("/api/audit/export/")
    body = b"".join(response.streaming_content)

    assert response.status_code == 200
    assert not _contains(body)
    report = verify_export(io.BytesIO(body), public_key=signing_key().public_key())
    assert report.ok, report
    assert report.events == body.count(b"\n") - 1
    assert "4 events are shown with pseudonyms" in report.message
    # The stored chain is untouched: every old event keeps its bytes and verifies.
    assert audit_chain_verify().ok


def test_a_changed_pseudonymised_line_fails_the_signature(planted: Patient) -> None:
    export = audit_export()
    body = export.file.read()
    reference = patient_reference(HOSPITAL_ID).encode()
    assert reference in body

    forged = body.replace(reference, b"000000000000", 1)

    report = verify_export(io.BytesIO(forged), public_key=signing_key().public_key())
    assert not report.ok


def test_the_audit_browser_selector_maps_at_read_time_only(planted: Patient) -> None:
    shown = list(audit_event_list())
    assert not any(_contains(repr((e.target_id, e.details)).encode()) for e in shown)
    with pytest.raises(ValueError):
        shown[0].save()
    # The rows themselves are unchanged.
    assert AuditEvent.objects.filter(target_id=HOSPITAL_ID).count() == 1


# --- The investigator's search ---------------------------------------------------------------


def test_an_investigator_finds_old_and_new_events_by_hospital_id(
    planted: Patient, admin: Any, doctor: Any
) -> None:
    before = AuditEvent.objects.count()

    found = list(audit_find_patient_events(hospital_id=f" {HOSPITAL_ID} ", actor=admin))

    # Old: target, clear search, details, refused URL. New: created, viewed, listed, note,
    # study view, refused URL.
    assert len(found) == 10
    assert not any(_contains(repr((e.target_id, e.details)).encode()) for e in found)
    searched = AuditEvent.objects.get(sequence=before + 1)
    assert (searched.action, searched.actor, searched.target_id) == (
        Action.AUDIT_PATIENT_SEARCHED,
        admin,
        planted.reference,
    )
    assert searched.details["found"] == 10
    assert not _contains(repr(searched.details).encode())


def test_the_investigator_search_finds_nothing_for_another_id(planted: Patient, admin: Any) -> None:
    assert list(audit_find_patient_events(hospital_id="H-ZZ-000000", actor=admin)) == []


@pytest.mark.parametrize("persona", ["doctor", "technician", "outsider"])
def test_only_admins_search_the_log_by_hospital_id(
    request: pytest.FixtureRequest, persona: str, planted: Patient
) -> None:
    with pytest.raises(PermissionDenied):
        audit_find_patient_events(hospital_id=HOSPITAL_ID, actor=request.getfixturevalue(persona))


def test_the_search_hash_is_keyed(settings: Any) -> None:
    first = search_term_hash(HOSPITAL_ID)
    settings.SECRET_KEY = "another-secret-key-for-this-test-only-0123456789"
    assert search_term_hash(HOSPITAL_ID) != first
    assert search_term_hash("  " + HOSPITAL_ID.lower() + " ") == search_term_hash(HOSPITAL_ID)
    assert search_term_hash("   ") == ""
