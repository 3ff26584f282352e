"""The patient page, as every role: who gets it, what each role sees, and that it is ready
for a strict Content-Security-Policy (no inline code or styles)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from audit.models import Action, AuditEvent
from imaging.models import Scan
from patients.models import Patient

pytestmark = pytest.mark.django_db


def make_scan(patient: Patient, name: str, **fields: Any) -> Scan:
    values: dict[str, Any] = {
        "original_filename": name,
        "format": "png",
        "size_bytes": 1,
        "width": 64,
        "height": 48,
        "pixel_dtype": "uint8",
        "pixels_sha256": "0" * 64,
        "original_path": f"scans/{name}.enc",
        "wrapped_key": b"",
        "key_id": "dev",
        **fields,
    }
    return Scan.objects.create(patient=patient, **values)


def page(client: Client, user: Any, patient_id: str) -> Any:
    if user is not None:
        client.force_login(user)
    return client.get(f"/patients/{patient_id}/")


def assert_csp_ready(html: str) -> None:
    """No inline scripts (json_script data is fine), no event handler or style attributes."""
    for attributes in re.findall(r"<script\b([^>]*)>", html):
        assert "src=" in attributes or 'type="application/json"' in attributes, attributes
    assert not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"\son[a-z]+\s*=", html)


def test_it_redirects_anonymous_users_to_login(client: Client, patient: Patient) -> None:
    response = page(client, None, patient.id)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("role", ["admin", "outsider"])
def test_it_refuses_non_clinical_roles(
    request: pytest.FixtureRequest, client: Client, patient: Patient, role: str
) -> None:
    response = page(client, request.getfixturevalue(role), patient.id)
    assert response.status_code == 403
    assert patient.name not in response.content.decode()
    assert not AuditEvent.objects.filter(action=Action.PATIENT_VIEWED).exists()


@pytest.mark.parametrize("role", ["technician", "doctor"])
def test_it_404s_for_an_unknown_patient(
    request: pytest.FixtureRequest, client: Client, role: str
) -> None:
    assert page(client, request.getfixturevalue(role), "MRN-NOPE").status_code == 404


def test_it_gives_the_upload_area_the_servers_limits_by_kind(
    client: Client, technician: Any, patient: Patient, settings: Any
) -> None:
    settings.UPLOAD_MAX_BYTES = 20 * 1024 * 1024
    settings.UPLOAD_DICOM_MAX_BYTES = 1024 * 1024 * 1024
    settings.UPLOAD_ARCHIVE_MAX_BYTES = 200 * 1024 * 1024

    html = page(client, technician, patient.id).content.decode()

    assert 'data-max-image-bytes="20971520"' in html
    assert 'data-max-dicom-bytes="1073741824"' in html
    assert 'data-max-archive-bytes="209715200"' in html
    accept = re.search(r'accept="([^"]*)"', html)
    assert accept is not None and ".zip" in accept.group(1).split(",")
    assert "Up to 20.0\xa0MB per JPEG or PNG image, 1.0\xa0GB per DICOM file" in html


def test_it_shows_the_technician_the_upload_area_and_the_scans(
    client: Client, technician: Any, patient: Patient
) -> None:
    done = make_scan(patient, "done.png", status="completed", needs_review=True)
    busy = make_scan(patient, "busy.png", status="processing")
    failed = make_scan(patient, "bad.png", status="failed", failure_reason="decode_failed")

    response = page(client, technician, patient.id)

    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "patients/patient_technician.html"
    html = response.content.decode()
    assert f'data-upload-url="/api/patients/{patient.id}/images/"' in html
    assert 'type="file"' in html and " multiple" in html
    for scan in (done, busy, failed):
        assert f'href="/scans/{scan.id}/"' in html
        assert f'data-status-url="/api/images/{scan.id}/status/"' in html
    assert 'data-status="processing"' in html
    assert "The stored upload could not be decoded" in html
    assert "Needs review" in html
    # Technicians never get restore controls or the doctors' notes form.
    assert "/restore/" not in html and "data-restore" not in html
    assert "data-notes" not in html
    assert_csp_ready(html)


def test_it_shows_the_doctor_thumbnails_and_notes(
    client: Client, doctor: Any, patient: Patient
) -> None:
    done = make_scan(patient, "done.png", status="completed")
    busy = make_scan(patient, "busy.png", status="uploaded")

    response = page(client, doctor, patient.id)

    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "patients/patient_doctor.html"
    html = response.content.decode()
    # Only a finished scan has a redacted image to show; the other shows its status.
    # Thumbnails: small, cached (imaging/selectors/thumbnails.py), never the full-size image.
    assert f'src="/api/images/{done.id}/thumbnail/?size=256"' in html
    assert f"/api/images/{busy.id}/thumbnail/" not in html
    assert f'href="/scans/{busy.id}/"' in html
    assert f'data-notes-url="/api/patients/{patient.id}/notes/"' in html
    assert "data-dropzone" not in html
    assert_csp_ready(html)


def test_it_audits_the_view(client: Client, doctor: Any, patient: Patient) -> None:
    page(client, doctor, patient.id)
    event = AuditEvent.objects.get(action=Action.PATIENT_VIEWED)
    assert event.actor_id == doctor.id
    assert event.target_id == patient.reference


def test_it_paginates_the_scans(client: Client, technician: Any, patient: Patient) -> None:
    for i in range(26):
        make_scan(patient, f"scan-{i:02}.png")
    first = page(client, technician, patient.id).content.decode()
    second = client.get(f"/patients/{patient.id}/?page=2").content.decode()
    assert first.count('data-scan-status data-status="uploaded"') == 24
    assert second.count('data-scan-status data-status="uploaded"') == 2
    assert 'rel="next"' in first and 'rel="prev"' in second


def test_it_links_the_home_list_to_the_patient_page(
    client: Client, doctor: Any, patient: Patient
) -> None:
    client.force_login(doctor)
    html = client.get("/").content.decode()
    assert f'href="/patients/{patient.id}/"' in html
