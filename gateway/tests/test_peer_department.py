"""Which department a patient received over DICOM belongs to (issue 20): the sending peer's
(`DicomPeer.department`), else `DICOM_DEFAULT_DEPARTMENT`, else the upload user's. An existing
patient of another department joins the peer's, audited.

Most tests call gateway.receive.instance_receive as the listener does (no network); one sends
with dcmtk's storescu through the listener to check the wiring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from accounts.models import Department
from audit.models import Action, AuditEvent, Outcome
from gateway.listener import listener_start
from gateway.models import DicomPeer
from gateway.receive import (
    ACTION_RECEIVED,
    STATUS_OUT_OF_RESOURCES,
    Refused,
    instance_receive,
)
from gateway.tests.conftest import LISTENER_AET, free_port, storescu
from gateway.tests.dicom_files import PHI, study_files
from imaging.models import Scan
from patients.models import Patient

SOURCE = {"protocol": "dimse", "calling_ae": "MODALITY1", "address": "127.0.0.1"}


def _slugs(patient: Patient) -> list[str]:
    return sorted(patient.departments.values_list("slug", flat=True))


@pytest.fixture
def dataset(tmp_path: Path) -> bytes:
    return study_files(tmp_path / "study", count=1).files[0].read_bytes()


def _peer(technician: Any, department: Department | None) -> DicomPeer:
    return DicomPeer.objects.create(
        ae_title="MODALITY1", host="127.0.0.1", upload_user=technician, department=department
    )


def _receive(data: bytes, peer: DicomPeer) -> Scan:
    return instance_receive(data=data, uploaded_by=peer.upload_user, source=SOURCE, peer=peer)


@pytest.mark.django_db
def test_a_new_patient_belongs_to_the_peers_department(
    dataset: bytes, technician: Any, other_department: Department
) -> None:
    # The upload user works in Radiology; the modality is Cardiology's.
    scan = _receive(dataset, _peer(technician, other_department))

    assert scan.patient_id == PHI["PatientID"]
    assert _slugs(scan.patient) == ["cardiology"]
    assert AuditEvent.objects.get(action=Action.PATIENT_CREATED).details["departments"] == [
        "cardiology"
    ]


@pytest.mark.django_db
def test_without_a_peer_department_the_setting_decides(
    dataset: bytes, technician: Any, other_department: Department, settings: Any
) -> None:
    settings.DICOM_DEFAULT_DEPARTMENT = "cardiology"

    scan = _receive(dataset, _peer(technician, None))

    assert _slugs(scan.patient) == ["cardiology"]


@pytest.mark.django_db
def test_without_either_the_upload_users_departments_decide(
    dataset: bytes, technician: Any, settings: Any
) -> None:
    settings.DICOM_DEFAULT_DEPARTMENT = ""

    scan = _receive(dataset, _peer(technician, None))

    assert _slugs(scan.patient) == ["radiology"]


@pytest.mark.django_db
def test_a_setting_that_names_no_department_refuses_and_stores_nothing(
    dataset: bytes, technician: Any, settings: Any
) -> None:
    settings.DICOM_DEFAULT_DEPARTMENT = "no-such-ward"

    with pytest.raises(Refused) as refused:
        _receive(dataset, _peer(technician, None))

    assert (refused.value.status, refused.value.code) == (
        STATUS_OUT_OF_RESOURCES,
        "unknown_default_department",
    )
    assert not Patient.objects.exists() and not Scan.objects.exists()
    event = AuditEvent.objects.get(action=ACTION_RECEIVED)
    assert event.outcome == Outcome.REFUSED


@pytest.mark.django_db
@pytest.mark.own_departments
def test_an_existing_patient_of_another_department_joins_the_peers(
    dataset: bytes,
    technician: Any,
    other_technician: Any,
    department: Department,
    other_department: Department,
) -> None:
    patient = Patient.objects.create(id=PHI["PatientID"], name="Already Known")
    patient.departments.set([other_department])
    assert not Patient.objects.visible_to(technician).exists()

    scan = _receive(dataset, _peer(technician, department))

    assert scan.patient == patient
    assert _slugs(patient) == ["cardiology", "radiology"]
    # Both departments' staff see the record and its new images.
    for user in (technician, other_technician):
        assert list(Scan.objects.visible_to(user)) == [scan]
    joined = AuditEvent.objects.get(action=Action.PATIENT_DEPARTMENTS_CHANGED)
    assert joined.target_id == patient.reference
    assert (joined.details["from"], joined.details["to"], joined.details["via"]) == (
        ["cardiology"],
        ["cardiology", "radiology"],
        "dicom",
    )


@pytest.mark.django_db
@pytest.mark.own_departments
def test_a_patient_already_in_the_peers_department_is_left_as_it_is(
    dataset: bytes, technician: Any, department: Department
) -> None:
    patient = Patient.objects.create(id=PHI["PatientID"], name="Already Known")
    patient.departments.set([department])

    _receive(dataset, _peer(technician, department))

    assert _slugs(patient) == ["radiology"]
    assert not AuditEvent.objects.filter(action=Action.PATIENT_DEPARTMENTS_CHANGED).exists()


@pytest.mark.django_db(transaction=True)
def test_storescu_to_a_cardiology_peer_files_the_patient_in_cardiology(
    technician: Any, other_department: Department, other_doctor: Any, doctor: Any, tmp_path: Path
) -> None:
    _peer(technician, other_department)
    port = free_port()
    server = listener_start(host="127.0.0.1", port=port, ae_title=LISTENER_AET)
    try:
        study = study_files(tmp_path / "study", count=1)
        result = storescu(port, *study.files)
    finally:
        server.shutdown()

    assert "Received Store Response (Success)" in result.stdout + result.stderr
    patient = Patient.objects.get(pk=PHI["PatientID"])
    assert _slugs(patient) == ["cardiology"]
    assert Patient.objects.visible_to(other_doctor).filter(pk=patient.pk).exists()
    assert not Patient.objects.visible_to(doctor).filter(pk=patient.pk).exists()


@pytest.mark.django_db
@pytest.mark.own_departments
def test_without_a_department_an_existing_patient_keeps_its_own(
    dataset: bytes, technician: Any, other_department: Department, settings: Any
) -> None:
    settings.DICOM_DEFAULT_DEPARTMENT = ""
    patient = Patient.objects.create(id=PHI["PatientID"], name="Already Known")
    patient.departments.set([other_department])

    scan = _receive(dataset, _peer(technician, None))

    assert scan.patient == patient
    assert _slugs(patient) == ["cardiology"]
    assert not AuditEvent.objects.filter(action=Action.PATIENT_DEPARTMENTS_CHANGED).exists()
