"""Reads of patient data through the imaging API write an audit event: a patient's image list
and the similar-scans list (which names other patients' scans)."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import Action, AuditEvent
from imaging.models import Fingerprint, Scan, ScanStatus
from imaging.selectors.scans import scan_similar
from patients.models import Patient

pytestmark = pytest.mark.django_db


def _scan(patient: Patient, user: Any, name: str, phash: str) -> Scan:
    scan = Scan.objects.create(
        patient=patient,
        uploaded_by=user,
        original_filename=name,
        format="png",
        size_bytes=1,
        width=8,
        height=8,
        pixel_dtype="uint8",
        pixels_sha256="0" * 64,
        status=ScanStatus.COMPLETED,
        original_path=f"scans/{name}.enc",
        wrapped_key=b"",
        key_id="dev",
    )
    Fingerprint.objects.create(scan=scan, average_hash="0" * 16, perceptual_hash=phash)
    return scan


@pytest.fixture
def two_patients(technician: Any) -> tuple[Scan, Scan]:
    ada = Patient.objects.create(id="MRN-SIM-1", name="Ada Lovelace", created_by=technician)
    alan = Patient.objects.create(id="MRN-SIM-2", name="Alan Turing", created_by=technician)
    return (
        _scan(ada, technician, "ada-chest.png", "0" * 16),
        _scan(alan, technician, "turing-knee.png", "0" * 15 + "1"),
    )


@pytest.mark.parametrize("persona", ["technician", "doctor"])
def test_it_audits_a_patients_image_list(
    api: Any, request: pytest.FixtureRequest, two_patients: tuple[Scan, Scan], persona: str
) -> None:
    user = request.getfixturevalue(persona)
    api.force_authenticate(user)
    scan = two_patients[0]

    response = api.get(f"/api/patients/{scan.patient_id}/images/")

    assert response.status_code == 200
    assert [item["id"] for item in response.json()["results"]] == [scan.pk]
    event = AuditEvent.objects.get(action=Action.PATIENT_VIEWED)
    assert (event.actor, event.target_type, event.target_id) == (
        user,
        "patient",
        scan.patient.reference,
    )
    assert event.details == {"part": "images", "pseudonyms": 1}


def test_it_does_not_audit_a_view_of_an_unknown_patient(api: Any, doctor: Any) -> None:
    api.force_authenticate(doctor)

    assert api.get("/api/patients/MRN-NOBODY/images/").status_code == 404
    assert not AuditEvent.objects.filter(action=Action.PATIENT_VIEWED).exists()


def test_it_audits_similar_scans_with_every_scan_listed(
    api: Any, technician: Any, two_patients: tuple[Scan, Scan]
) -> None:
    mine, other = two_patients
    api.force_authenticate(technician)

    response = api.get(f"/api/images/{mine.pk}/similar/")

    assert response.status_code == 200
    assert [item["scan"]["id"] for item in response.json()] == [other.pk]
    event = AuditEvent.objects.get(action=Action.SCAN_VIEWED)
    assert (event.actor, event.target_type, event.target_id) == (technician, "scan", str(mine.pk))
    assert event.details == {"view": "similar", "listed": [other.pk]}


def test_similar_scans_come_only_from_what_the_user_may_see(
    admin: Any, outsider: Any, doctor: Any, two_patients: tuple[Scan, Scan]
) -> None:
    mine, other = two_patients

    for user in (admin, outsider):
        assert scan_similar(user=user, scan=mine) == []
    assert [item.scan.pk for item in scan_similar(user=doctor, scan=mine)] == [other.pk]


@pytest.mark.parametrize("persona", ["admin", "outsider"])
def test_it_refuses_similar_scans_to_non_clinical_users(
    api: Any, request: pytest.FixtureRequest, two_patients: tuple[Scan, Scan], persona: str
) -> None:
    api.force_authenticate(request.getfixturevalue(persona))

    response = api.get(f"/api/images/{two_patients[0].pk}/similar/")

    assert response.status_code == 403
    assert "turing" not in response.content.decode()
    assert not AuditEvent.objects.filter(action=Action.SCAN_VIEWED).exists()
