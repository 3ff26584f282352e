"""Emergency (break-glass) access, end to end: a Cardiology doctor (olga, conftest) reaches a
Radiology patient only through a grant with a typed reason; the grant is audited, mailed,
flags every read, shows a banner, expires or is ended early, and an admin reviews it."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import Action, AuditEvent, Outcome
from audit.pseudonyms import search_term_hash
from imaging.models import Scan
from medimg.tests.test_mail import PRIVACY, Mailbox, smtp  # noqa: F401 - the SMTP fixture
from patients.emergency import REASON_MIN_LENGTH
from patients.models import BreakGlassGrant, Patient

pytestmark = pytest.mark.django_db

PAGE = "/emergency-access/"
END_PAGE = "/emergency-access/end/"
API = "/api/emergency-access/"
REASON = "Unconscious in the emergency room, prior imaging needed now"


@pytest.fixture
def patient(technician: Any) -> Patient:
    """A Radiology patient (tina's department), with a distinctive id to search pages for."""
    return Patient.objects.create(
        id="H-7731-ZQ", name="Zebedee Quux", age=70, created_by=technician
    )


@pytest.fixture
def scan(patient: Patient) -> Scan:
    """An uploaded (not yet processed) scan of the patient, as in the URL policy test."""
    return Scan.objects.create(
        patient=patient,
        original_filename="chest.png",
        format="png",
        size_bytes=1,
        width=8,
        height=8,
        pixel_dtype="uint8",
        pixels_sha256="0" * 64,
        original_path="scans/emergency/original.enc",
        wrapped_key=b"",
        key_id="dev",
    )


@pytest.fixture
def olga_client(client: Client, other_doctor: Any) -> Client:
    client.force_login(other_doctor)
    return client


def _open(client: Client, patient_id: str, **fields: Any) -> Any:
    data = {"patient_id": patient_id, "reason": REASON, "confirm": "on", **fields}
    return client.post(PAGE, {key: value for key, value in data.items() if value is not None})


def _same(html: str) -> str:
    """A page without its per-response CSRF token."""
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", html)


def _last(action: str, **filters: Any) -> AuditEvent:
    event = AuditEvent.objects.filter(action=action, **filters).order_by("-sequence").first()
    assert event is not None, f"no {action} event"
    return event


def test_a_radiology_patient_is_a_404_for_cardiology_with_the_way_to_emergency_access(
    olga_client: Client, other_doctor: Any, patient: Patient, scan: Scan
) -> None:
    api = APIClient()
    api.force_authenticate(other_doctor)
    assert api.get(f"/api/patients/{patient.id}/").status_code == 404

    known = olga_client.get(f"/patients/{patient.id}/")
    unknown = olga_client.get("/patients/H-0000-NO/")
    scan_page = olga_client.get(f"/scans/{scan.pk}/")

    assert known.status_code == unknown.status_code == scan_page.status_code == 404
    html = known.content.decode()
    assert f'href="/emergency-access/?patient={patient.id}"' in html
    assert patient.name not in html
    # A patient of another department and no patient at all get the same page.
    assert _same(html.replace(patient.id, "X")) == _same(
        unknown.content.decode().replace("H-0000-NO", "X")
    )
    assert 'href="/emergency-access/"' in scan_page.content.decode()
    assert not BreakGlassGrant.objects.exists()


def test_the_whole_lifecycle(
    olga_client: Client,
    other_doctor: Any,
    doctor: Any,
    admin: Any,
    patient: Patient,
    scan: Scan,
    settings: Any,
) -> None:
    settings.BREAK_GLASS_HOURS = 4
    form = olga_client.get(f"{PAGE}?patient={patient.id}")
    assert form.status_code == 200
    assert f'value="{patient.id}"' in form.content.decode()

    # A reason too short, then no confirmation: refused, nothing granted.
    short = _open(olga_client, patient.id, reason="Need to see it")
    assert short.status_code == 400
    assert f"at least {REASON_MIN_LENGTH} characters" in short.content.decode()
    unconfirmed = _open(olga_client, patient.id, confirm=None)
    assert unconfirmed.status_code == 400
    assert "Confirm that you have read the warning" in unconfirmed.content.decode()
    assert not BreakGlassGrant.objects.exists()

    before = timezone.now()
    opened = _open(olga_client, patient.id)

    assert opened.status_code == 302 and opened["Location"] == f"/patients/{patient.id}/"
    grant = BreakGlassGrant.objects.get()
    assert (grant.user, grant.patient, grant.reason) == (other_doctor, patient, REASON)
    assert before + timedelta(hours=4) <= grant.expires_at <= timezone.now() + timedelta(hours=4)
    event = _last(Action.BREAK_GLASS_OPENED)
    assert event.target_id == patient.reference and event.actor == other_doctor
    assert event.details["grant"] == grant.pk and event.details["reason"] == REASON

    # Access: the page, with the banner, and every read flagged with the grant.
    page = olga_client.get(f"/patients/{patient.id}/")
    assert page.status_code == 200
    html = page.content.decode()
    banner = re.search(r'<section class="emergency-banner".*?</section>', html, re.S)
    assert banner is not None
    assert "Zebedee Quux" in banner.group(0)
    assert re.search(r"3 h 59 min left|4 h 0 min left", banner.group(0))
    assert _last(Action.PATIENT_VIEWED, actor_id=other_doctor.pk).details["break_glass"] == (
        grant.pk
    )
    assert olga_client.get(f"/scans/{scan.pk}/").status_code == 200
    assert _last(Action.SCAN_VIEWED, actor_id=other_doctor.pk).details["break_glass"] == grant.pk

    api = APIClient()
    api.force_authenticate(other_doctor)
    assert api.get(f"/api/patients/{patient.id}/").status_code == 200
    assert _last(Action.PATIENT_VIEWED, actor_id=other_doctor.pk).details["break_glass"] == (
        grant.pk
    )
    listed = api.get("/api/patients/")
    assert [row["id"] for row in listed.json()["results"]] == [patient.id]
    assert _last(Action.PATIENT_LISTED, actor_id=other_doctor.pk).details["break_glass"] == [
        grant.pk
    ]
    api.get(f"/api/images/{scan.pk}/")
    scan_event = AuditEvent.objects.filter(actor_id=other_doctor.pk, target_type="scan").last()
    assert scan_event is not None and scan_event.details["break_glass"] == grant.pk

    # The patient's own department reads the same record without the flag.
    colleague = APIClient()
    colleague.force_authenticate(doctor)
    assert colleague.get(f"/api/patients/{patient.id}/").status_code == 200
    assert "break_glass" not in _last(Action.PATIENT_VIEWED, actor_id=doctor.pk).details

    # Expiry ends access by itself: 404 again, no banner, and no flag on later events.
    BreakGlassGrant.objects.filter(pk=grant.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert olga_client.get(f"/patients/{patient.id}/").status_code == 404
    assert api.get(f"/api/patients/{patient.id}/").status_code == 404
    home = olga_client.get("/").content.decode()
    assert "emergency-banner" not in home and "Zebedee Quux" not in home
    assert "break_glass" not in _last(Action.PATIENT_LISTED, actor_id=other_doctor.pk).details

    # An admin reviews it: the list names the patient by reference only.
    staff = Client()
    staff.force_login(admin)
    listing = staff.get("/admin/patients/breakglassgrant/?reviewed=no")
    assert listing.status_code == 200
    text = listing.content.decode()
    assert patient.reference in text and "olga" in text and REASON in text
    assert patient.id not in text and patient.name not in text
    reviewed = staff.post(
        "/admin/patients/breakglassgrant/",
        {"action": "mark_reviewed", "_selected_action": [grant.pk], "index": 0},
    )
    assert reviewed.status_code == 302
    grant.refresh_from_db()
    assert grant.reviewed_by == admin and grant.reviewed_at is not None
    review = _last(Action.BREAK_GLASS_REVIEWED)
    assert review.actor == admin and review.target_id == str(grant.pk)
    assert review.details["patient"] == patient.reference
    left = staff.get("/admin/patients/breakglassgrant/?reviewed=no").content.decode()
    assert "0 emergency access" in left or patient.reference not in left
    assert BreakGlassGrant.objects.count() == 1  # Never deleted.


def test_ending_early_keeps_the_grant_and_closes_access(
    olga_client: Client, other_doctor: Any, patient: Patient
) -> None:
    _open(olga_client, patient.id)
    grant = BreakGlassGrant.objects.get()
    assert olga_client.get(f"/patients/{patient.id}/").status_code == 200

    ended = olga_client.post(END_PAGE, {"patient_id": patient.id})

    assert ended.status_code == 302
    grant.refresh_from_db()
    assert grant.ended_at is not None and grant.expires_at > timezone.now()
    assert olga_client.get(f"/patients/{patient.id}/").status_code == 404
    event = _last(Action.BREAK_GLASS_ENDED)
    assert event.target_id == patient.reference and event.details["grant"] == grant.pk
    # Again: nothing left to end, said plainly.
    again = olga_client.post(END_PAGE, {"patient_id": patient.id}, follow=True)
    assert "already ended" in again.content.decode()
    assert BreakGlassGrant.objects.count() == 1


def test_an_unknown_id_is_answered_and_recorded_without_the_id(
    olga_client: Client, other_doctor: Any, patient: Patient
) -> None:
    response = _open(olga_client, "H-7731-Z")  # A prefix of a real id: exact match only.

    assert response.status_code == 404
    assert "No patient has this id" in response.content.decode()
    assert not BreakGlassGrant.objects.exists()
    event = _last(Action.BREAK_GLASS_REFUSED)
    assert event.outcome == Outcome.REFUSED and event.actor == other_doctor
    assert event.details["why"] == "unknown_patient"
    assert event.details["search_hmac"] == search_term_hash("H-7731-Z")
    assert "H-7731-Z" not in str(event.details)


def test_a_user_who_already_sees_the_patient_needs_no_grant(
    client: Client, doctor: Any, patient: Patient
) -> None:
    client.force_login(doctor)
    response = _open(client, patient.id)

    assert response.status_code == 409
    assert "already see this patient" in response.content.decode()
    assert not BreakGlassGrant.objects.exists()


def test_requests_are_limited_per_hour(
    olga_client: Client, patient: Patient, settings: Any
) -> None:
    settings.BREAK_GLASS_REQUESTS_PER_HOUR = 2
    assert _open(olga_client, "H-NONE-1").status_code == 404
    assert _open(olga_client, "H-NONE-2").status_code == 404

    limited = _open(olga_client, patient.id)

    assert limited.status_code == 429
    assert "at most 2 an hour" in limited.content.decode()
    assert not BreakGlassGrant.objects.exists()


def test_the_reason_loses_the_patients_id_and_name(olga_client: Client, patient: Patient) -> None:
    _open(olga_client, patient.id, reason=f"zebedee quux ({patient.id}) collapsed in ED")

    grant = BreakGlassGrant.objects.get()
    assert grant.reason == "[patient] ([patient]) collapsed in ED"
    assert "Zebedee" not in str(_last(Action.BREAK_GLASS_OPENED).details)


def test_admins_and_outsiders_cannot_request(
    client: Client, admin: Any, outsider: Any, patient: Patient
) -> None:
    for user in (admin, outsider):
        client.force_login(user)
        assert _open(client, patient.id).status_code == 403
        api = APIClient()
        api.force_authenticate(user)
        body = {"patient_id": patient.id, "reason": REASON, "confirm": True}
        assert api.post(API, body, format="json").status_code == 403
    assert not BreakGlassGrant.objects.exists()


def test_the_api_follows_the_same_rules(other_doctor: Any, patient: Patient, password: str) -> None:
    api = APIClient()
    # A JWT client, logged in through the token endpoint as an API client is.
    token = api.post(
        "/api/auth/token/", {"username": other_doctor.username, "password": password}, format="json"
    )
    assert token.status_code == 200, token.content
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token.json()['access']}")
    body = {"patient_id": patient.id, "reason": REASON, "confirm": True}

    short = api.post(API, {**body, "reason": "too short"}, format="json")
    unconfirmed = api.post(API, {**body, "confirm": False}, format="json")
    unknown = api.post(API, {**body, "patient_id": "h-7731-zq"}, format="json")
    assert short.json()["error"]["code"] == "reason_too_short"
    assert unconfirmed.json()["error"]["code"] == "confirmation_required"
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "patient_not_found")
    assert api.get(f"/api/patients/{patient.id}/").status_code == 404

    created = api.post(API, body, format="json")

    assert created.status_code == 201
    grant = BreakGlassGrant.objects.get()
    assert created.json()["id"] == grant.pk and created.json()["patient_id"] == patient.id
    assert api.get(f"/api/patients/{patient.id}/").status_code == 200
    assert [row["id"] for row in api.get(API).json()] == [grant.pk]
    again = api.post(API, body, format="json")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "access_not_needed")

    assert api.post(f"{API}end/", {"patient_id": patient.id}, format="json").json() == {"ended": 1}
    assert api.post(f"{API}end/", {"patient_id": patient.id}, format="json").json() == {"ended": 0}
    assert api.get(f"/api/patients/{patient.id}/").status_code == 404
    assert api.get(API).json() == []


def test_the_privacy_officer_is_mailed_at_once(
    smtp: Mailbox,  # noqa: F811 - the fixture imported above
    olga_client: Client,
    patient: Patient,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        assert _open(olga_client, patient.id).status_code == 302

    [message] = smtp.to(PRIVACY)
    assert message["Subject"] == "[medimg] Emergency access by olga"
    body = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert f"Patient reference: {patient.reference}" in body
    assert f"Reason given: {REASON}" in body
    assert patient.id not in body and patient.name not in body


def test_a_refused_request_sends_no_mail(
    smtp: Mailbox,  # noqa: F811 - the fixture imported above
    olga_client: Client,
    patient: Patient,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        _open(olga_client, "H-NONE-3")
        _open(olga_client, patient.id, reason="short")
    assert smtp.count() == 0


def test_the_admin_home_counts_unreviewed_accesses(
    admin: Any, olga_client: Client, patient: Patient
) -> None:
    _open(olga_client, patient.id)
    staff = Client()
    staff.force_login(admin)

    html = staff.get("/").content.decode()

    assert "<strong>1</strong> emergency access waiting for review" in html
    assert 'href="/admin/patients/breakglassgrant/?reviewed=no"' in html
    assert patient.id not in html and patient.name not in html


def test_events_from_any_app_are_flagged_by_their_patient(
    other_doctor: Any, doctor: Any, patient: Patient, scan: Scan
) -> None:
    """The common audit path: whatever the target (a study export names its patient only in
    the details), an event about the granted patient carries the grant; others do not."""
    from audit.services import audit_record
    from patients.emergency import emergency_access_open

    grant = emergency_access_open(
        user=other_doctor, patient_id=patient.id, reason=REASON, confirmed=True
    )
    other = Patient.objects.create(id="H-OTHER-1", name="Other", created_by=other_doctor)
    cases = [
        ({"target": scan}, grant.pk),
        ({"target_type": "scan", "target_id": str(scan.pk)}, grant.pk),
        ({"target_type": "patient", "target_id": patient.id}, grant.pk),
        (
            {"target_type": "study", "target_id": "2.25.1", "details": {"patient": patient.id}},
            grant.pk,
        ),
        ({"target": other}, None),  # Olga's own department's patient.
    ]
    for where, expected in cases:
        event = audit_record(action=Action.SCAN_VIEWED, actor=other_doctor, **where)
        assert event.details.get("break_glass") == expected, where
    # The patient's own department is never flagged.
    assert (
        "break_glass"
        not in audit_record(action=Action.SCAN_VIEWED, actor=doctor, target=scan).details
    )
