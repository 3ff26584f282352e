"""The correction pages (issue 16): a technician edits a patient's name or age and moves an
image to the right patient; doctors and other departments are refused."""

from __future__ import annotations

from typing import Any

from django.test import Client

from accounts.models import Department
from audit.models import Action, AuditEvent
from imaging.models import Scan
from patients.models import Patient


def test_a_technician_corrects_a_name_and_age(client: Client, technician: Any) -> None:
    patient = Patient.objects.create(id="MRN-TYPO", name="Jnae Doe", age=45)
    client.force_login(technician)
    page = client.get(f"/patients/{patient.pk}/").content.decode()
    assert f'href="/patients/{patient.pk}/edit/" data-edit-link' in page
    form = client.get(f"/patients/{patient.pk}/edit/").content.decode()
    assert 'value="Jnae Doe"' in form and 'value="45"' in form

    response = client.post(f"/patients/{patient.pk}/edit/", {"name": "Jane Doe", "age": "54"})

    assert response.status_code == 302 and response["Location"] == f"/patients/{patient.pk}/"
    patient.refresh_from_db()
    assert (patient.name, patient.age) == ("Jane Doe", 54)
    event = AuditEvent.objects.get(action=Action.PATIENT_UPDATED)
    assert event.details["changed"] == ["age", "name"]
    assert "Jane" not in str(event.details)
    assert "details were saved" in client.get(f"/patients/{patient.pk}/").content.decode()


def test_it_says_what_is_wrong_with_an_edit(client: Client, technician: Any) -> None:
    patient = Patient.objects.create(id="MRN-BAD", name="Ann Lee", age=30)
    client.force_login(technician)
    response = client.post(f"/patients/{patient.pk}/edit/", {"name": "  ", "age": "200"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "This field is required." in html
    assert "less than or equal to 150" in html
    patient.refresh_from_db()
    assert (patient.name, patient.age) == ("Ann Lee", 30)


def test_doctors_and_other_departments_cannot_edit(
    client: Client, doctor: Any, other_technician: Any
) -> None:
    patient = Patient.objects.create(id="MRN-RO", name="Read Only", age=30)
    client.force_login(doctor)
    assert "data-edit-link" not in client.get(f"/patients/{patient.pk}/").content.decode()
    assert client.get(f"/patients/{patient.pk}/edit/").status_code == 403
    assert client.post(f"/patients/{patient.pk}/edit/", {"name": "X"}).status_code == 403
    client.force_login(other_technician)
    assert client.post(f"/patients/{patient.pk}/edit/", {"name": "X"}).status_code == 404
    patient.refresh_from_db()
    assert patient.name == "Read Only"


def test_a_technician_moves_an_image_from_its_page(
    client: Client, technician: Any, completed_scan: Scan, other_patient: Patient
) -> None:
    client.force_login(technician)
    scan_page = client.get(f"/scans/{completed_scan.pk}/").content.decode()
    assert f'href="/scans/{completed_scan.pk}/move/" data-move-link' in scan_page
    assert "Now under" in client.get(f"/scans/{completed_scan.pk}/move/").content.decode()

    response = client.post(f"/scans/{completed_scan.pk}/move/", {"patient": other_patient.pk})

    assert response.status_code == 302
    assert response["Location"] == f"/patients/{other_patient.pk}/"
    completed_scan.refresh_from_db()
    assert completed_scan.patient_id == other_patient.pk
    html = client.get(response["Location"]).content.decode()
    assert "The image was moved from Jane Doe (MRN-0001) to John Roe (MRN-0002)." in html
    assert f'href="/scans/{completed_scan.pk}/"' in html
    old = client.get("/patients/MRN-0001/").content.decode()
    assert f'href="/scans/{completed_scan.pk}/"' not in old


def test_the_move_page_explains_a_refusal(
    client: Client, technician: Any, completed_scan: Scan, other_department: Department
) -> None:
    hidden = Patient.objects.create(id="MRN-ELSEWHERE", name="Elsewhere")
    hidden.departments.set([other_department])
    client.force_login(technician)
    for target, message in (
        ("MRN-ELSEWHERE", "No patient with this ID that you can see"),
        ("MRN-0001", "The image already belongs to patient MRN-0001."),
        ("", "This field is required."),
    ):
        response = client.post(f"/scans/{completed_scan.pk}/move/", {"patient": target})
        assert response.status_code == 400
        assert message in response.content.decode()
    completed_scan.refresh_from_db()
    assert completed_scan.patient_id == "MRN-0001"


def test_doctors_cannot_move_images(client: Client, doctor: Any, completed_scan: Scan) -> None:
    client.force_login(doctor)
    assert "data-move-link" not in client.get(f"/scans/{completed_scan.pk}/").content.decode()
    assert client.post(f"/scans/{completed_scan.pk}/move/", {"patient": "x"}).status_code == 403
