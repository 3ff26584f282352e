"""Moving an image uploaded under the wrong patient (issue 16): technicians, both patients
visible, a study moved whole, audited on both records, both patients' lists and exports."""

from __future__ import annotations

import io
import uuid
import zipfile
from typing import Any

from accounts.models import Department
from audit.models import Action, AuditEvent
from audit.pseudonyms import patient_reference
from audit.selectors import audit_chain_verify
from imaging.models import Scan
from patients.models import Patient


def _move(api: Any, user: Any, scan: Scan, patient: str) -> Any:
    api.force_authenticate(user)
    return api.post(f"/api/images/{scan.pk}/move/", {"patient": patient}, format="json")


def test_it_moves_an_image_to_the_right_patient(
    api: Any, technician: Any, doctor: Any, completed_scan: Scan, other_patient: Patient
) -> None:
    source = completed_scan.patient
    api.force_authenticate(doctor)
    before = api.get(f"/api/images/{completed_scan.pk}/thumbnail/?size=128")
    assert before.status_code == 200

    response = _move(api, technician, completed_scan, other_patient.pk)

    assert response.status_code == 200, response.content
    assert response.json() == {
        "scans": [completed_scan.pk],
        "from_patient": source.pk,
        "to_patient": other_patient.pk,
    }
    completed_scan.refresh_from_db()
    assert completed_scan.patient_id == other_patient.pk
    # Both patients' image lists.
    api.force_authenticate(technician)
    assert api.get(f"/api/patients/{source.pk}/images/").json()["count"] == 0
    listed = api.get(f"/api/patients/{other_patient.pk}/images/").json()
    assert [scan["id"] for scan in listed["results"]] == [completed_scan.pk]
    # The thumbnail has a new version: a browser holding the old one fetches it again.
    api.force_authenticate(doctor)
    again = api.get(
        f"/api/images/{completed_scan.pk}/thumbnail/?size=128", HTTP_IF_NONE_MATCH=before["ETag"]
    )
    assert again.status_code == 200 and again["ETag"] != before["ETag"]
    # Exports: the image is in the new patient's zip and no longer in the old one's.
    old_zip = api.get(f"/api/patients/{source.pk}/export/")
    new_zip = api.get(f"/api/patients/{other_patient.pk}/export/")
    assert new_zip.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(new_zip.streaming_content))) as archive:
        assert len(archive.namelist()) >= 1
    assert old_zip.status_code == 409  # nothing left to export
    # Audited on both records, each naming the other by reference only.
    moved = {
        e.target_id: e.details
        for e in AuditEvent.objects.filter(action=Action.PATIENT_UPDATED, details__has_key="moved")
    }
    assert moved[patient_reference(source.pk)]["moved"] == "out"
    assert moved[patient_reference(source.pk)]["patient"] == patient_reference(other_patient.pk)
    assert moved[patient_reference(other_patient.pk)]["moved"] == "in"
    assert moved[patient_reference(other_patient.pk)]["scans"] == [completed_scan.pk]
    assert audit_chain_verify().ok


def test_it_moves_the_whole_study(
    api: Any, technician: Any, completed_scan: Scan, other_patient: Patient
) -> None:
    source = completed_scan.patient
    Scan.objects.filter(pk=completed_scan.pk).update(study_uid="2.25.77")
    sibling = Scan.objects.get(pk=completed_scan.pk)
    sibling.pk = None
    sibling.uid = uuid.uuid4()
    sibling.save()
    other_study = Scan.objects.get(pk=completed_scan.pk)
    other_study.pk = None
    other_study.uid = uuid.uuid4()
    other_study.study_uid = "2.25.88"
    other_study.save()

    response = _move(api, technician, completed_scan, other_patient.pk)

    assert response.status_code == 200, response.content
    assert response.json()["scans"] == sorted([completed_scan.pk, sibling.pk])
    assert set(Scan.objects.filter(patient=other_patient).values_list("pk", flat=True)) == {
        completed_scan.pk,
        sibling.pk,
    }
    assert Scan.objects.get(pk=other_study.pk).patient_id == source.pk


def test_it_refuses_bad_targets(
    api: Any, technician: Any, completed_scan: Scan, other_department: Department
) -> None:
    same = _move(api, technician, completed_scan, completed_scan.patient_id)
    assert same.status_code == 400
    assert same.json()["error"]["code"] == "invalid_patient_id"
    assert "already belongs" in same.json()["error"]["message"]
    assert _move(api, technician, completed_scan, "MRN-missing").status_code == 404
    assert _move(api, technician, completed_scan, "").status_code == 400
    # A patient of another department: the technician cannot see it, so it does not exist.
    hidden = Patient.objects.create(id="MRN-HIDDEN", name="Elsewhere")
    hidden.departments.set([other_department])
    assert _move(api, technician, completed_scan, hidden.pk).status_code == 404
    completed_scan.refresh_from_db()
    assert completed_scan.patient_id == "MRN-0001"
    assert not AuditEvent.objects.filter(details__has_key="moved").exists()


def test_only_technicians_who_see_the_image_move_it(
    api: Any,
    doctor: Any,
    other_technician: Any,
    completed_scan: Scan,
    other_patient: Patient,
) -> None:
    assert _move(api, doctor, completed_scan, other_patient.pk).status_code == 403
    assert _move(api, other_technician, completed_scan, other_patient.pk).status_code == 404
    completed_scan.refresh_from_db()
    assert completed_scan.patient_id == "MRN-0001"
