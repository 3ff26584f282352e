"""Forwarding to a real PACS: Debian's Orthanc, started on free ports with a generated
configuration, receives what the gateway forwards (C-STORE and STOW-RS) and sends to the
listener itself (its /modalities/{id}/store REST call)."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from django.utils import timezone
from pydicom import dcmread
from pydicom.dataset import Dataset

from audit.models import AuditEvent, Outcome
from gateway.forward import forward_attempt
from gateway.models import DestinationKind, DicomPeer, ForwardDestination, ForwardSend, SendStatus
from gateway.receive import ACTION_FORWARDED
from gateway.tasks import forward_due_sends, forward_instance
from gateway.tests.conftest import storescu
from gateway.tests.dicom_files import PHI, study_files
from imaging.models import Scan, ScanStatus
from imaging.services.review import region_add, scan_confirm_review
from patients.models import Patient

pytestmark = pytest.mark.django_db(transaction=True)


def _values(dataset: Dataset) -> list[str]:
    """Every element value of the dataset, nested sequences and file meta included."""
    found = []
    elements = list(dataset.iterall())
    meta = getattr(dataset, "file_meta", None)
    if meta is not None:
        elements += list(meta.iterall())
    for element in elements:
        if element.VR in ("OB", "OW", "OF", "OD", "UN", "SQ") or element.tag == 0x7FE00010:
            continue
        found.append(str(element.value))
    return found


def assert_nothing_identifying(data: bytes, originals: list[Path], study_uid: str) -> None:
    stored = dcmread(io.BytesIO(data))
    values = " | ".join(_values(stored))
    for keyword, value in PHI.items():
        assert value not in values, keyword
        assert value.encode() not in data, keyword
    assert study_uid not in values
    for original in originals:
        assert str(dcmread(original).SOPInstanceUID) not in values
    # No burned-in text left: every pixel of the original's ink (at 4095) is filled.
    number = int(stored.InstanceNumber)
    original = next(dcmread(p) for p in originals if int(dcmread(p).InstanceNumber) == number)
    ink = original.pixel_array >= 4095
    assert ink.sum() > 50
    assert (stored.pixel_array[ink] < 4095).all()


def test_the_check_catches_identifying_values_and_text(tmp_path: Path) -> None:
    """The check above fails on what a modality sends: it can fail."""
    study = study_files(tmp_path / "study", count=1)
    with pytest.raises(AssertionError):
        assert_nothing_identifying(study.files[0].read_bytes(), study.files, study.study_uid)
    ds = dcmread(study.files[0])
    for keyword in PHI:
        setattr(ds, keyword, "19000101" if keyword.endswith("Date") else "X")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.StudyInstanceUID = "1.2.3.5"
    clean_header = io.BytesIO()
    ds.save_as(clean_header, enforce_file_format=True)
    with pytest.raises(AssertionError):  # The header is clean; the text is still there.
        assert_nothing_identifying(clean_header.getvalue(), study.files, study.study_uid)


def test_a_pushed_study_reaches_orthanc_de_identified(
    listener: int, peer: Any, orthanc_factory: Any, tmp_path: Path
) -> None:
    orthanc = orthanc_factory()
    orthanc.destination()
    study = study_files(tmp_path / "study", count=2)

    result = storescu(listener, *study.files)
    assert result.returncode == 0, result.stdout + result.stderr

    scans = list(Scan.objects.all())
    assert [s.status for s in scans] == [ScanStatus.COMPLETED] * 2
    assert not any(s.needs_review for s in scans)
    sends = list(ForwardSend.objects.all())
    assert sorted((s.scan_id, s.status, s.attempts) for s in sends) == sorted(
        (s.pk, SendStatus.SENT, 1) for s in scans
    )
    stored = orthanc.instances()
    assert len(stored) == 2
    for instance_id in stored:
        data = orthanc.get(f"/instances/{instance_id}/file").content
        assert_nothing_identifying(data, study.files, study.study_uid)
    # Orthanc's own index of what it holds: no identifying value either.
    tags = str([orthanc.get(f"/instances/{i}/simplified-tags").json() for i in stored])
    for value in PHI.values():
        assert value not in tags


def test_forwarding_while_orthanc_is_down_completes_once_it_is_up(
    listener: int, peer: Any, orthanc_factory: Any, tmp_path: Path, settings: Any
) -> None:
    settings.DICOM_FORWARD_BACKOFF_SECONDS = 3
    orthanc = orthanc_factory(start=False)
    orthanc.destination()
    study = study_files(tmp_path / "study", count=1)

    assert storescu(listener, *study.files).returncode == 0
    send = ForwardSend.objects.get()
    assert (send.status, send.attempts, send.last_error) == (
        SendStatus.RETRYING,
        1,
        "association_failed",
    )
    assert send.next_attempt_at is not None
    assert len(ForwardSend.objects.all()) == 1

    orthanc.start()
    if timezone.now() < send.next_attempt_at:
        # Not due yet: the sweep leaves it alone.
        assert forward_due_sends(late_by=0) == []
        time.sleep((send.next_attempt_at - timezone.now()).total_seconds() + 0.1)
    assert forward_due_sends(late_by=0) == [send.pk]
    send.refresh_from_db()
    assert (send.status, send.attempts, send.last_error) == (SendStatus.SENT, 2, "")
    assert len(orthanc.instances()) == 1

    # Once sent, never again: the sweep, the task and a direct attempt do nothing.
    assert forward_due_sends(late_by=0) == []
    forward_instance.delay(send_id=send.pk)
    assert forward_attempt(send_id=send.pk) is None
    send.refresh_from_db()
    assert (send.status, send.attempts) == (SendStatus.SENT, 2)
    assert len(orthanc.instances()) == 1
    outcomes = list(
        AuditEvent.objects.filter(action=ACTION_FORWARDED)
        .order_by("sequence")
        .values_list("outcome", flat=True)
    )
    assert outcomes == [Outcome.FAILURE, Outcome.SUCCESS]


def test_a_send_gives_up_after_the_attempt_cap(
    listener: int, peer: Any, tmp_path: Path, settings: Any, client: Any, admin: Any
) -> None:
    settings.DICOM_FORWARD_MAX_ATTEMPTS = 2
    settings.DICOM_FORWARD_BACKOFF_SECONDS = 0.1
    ForwardDestination.objects.create(
        name="nowhere", kind=DestinationKind.DIMSE, ae_title="NOBODY", host="127.0.0.1", port=9
    )
    assert storescu(listener, *study_files(tmp_path / "s", count=1).files).returncode == 0
    send = ForwardSend.objects.get()
    time.sleep(0.2)
    forward_due_sends(late_by=0)
    send.refresh_from_db()
    assert (send.status, send.attempts) == (SendStatus.FAILED, 2)
    time.sleep(0.2)
    assert forward_due_sends(late_by=0) == []

    # Admins see it: the sends list, under the gateway's health.
    client.force_login(admin)
    page = client.get("/admin/gateway/forwardsend/").content.decode()
    assert "DICOM gateway health" in page
    failed = '<th scope="row">Failed sends</th><td>1 (last error: association_failed to nowhere'
    assert failed in page
    assert PHI["PatientName"] not in page


def test_stow_rs_forwarding_and_orthanc_as_a_sending_peer(
    listener: int, technician: Any, orthanc_factory: Any, tmp_path: Path
) -> None:
    """Orthanc sends a study to the listener (REST /modalities/medimg/store); the gateway
    forwards it to a second Orthanc over STOW-RS."""
    source = orthanc_factory(listener_port=listener)
    research = orthanc_factory()
    DicomPeer.objects.create(ae_title=source.aet, host="127.0.0.1", upload_user=technician)
    ForwardDestination.objects.create(
        name="research-stow", kind=DestinationKind.STOW, url=f"{research.url}/dicom-web/studies"
    )
    study = study_files(tmp_path / "study", count=2, patient_id="GW-ORTHANC-1")
    ids = [
        requests.post(f"{source.url}/instances", data=p.read_bytes(), timeout=30).json()["ID"]
        for p in study.files
    ]
    response = requests.post(
        f"{source.url}/modalities/medimg/store", json={"Resources": ids}, timeout=120
    )
    assert response.ok, response.text

    patient = Patient.objects.get(pk="GW-ORTHANC-1")
    scans = list(patient.scans.all())
    assert [s.status for s in scans] == [ScanStatus.COMPLETED] * 2
    assert set(ForwardSend.objects.values_list("status", flat=True)) == {SendStatus.SENT}
    stored = research.instances()
    assert len(stored) == 2
    for instance_id in stored:
        data = research.get(f"/instances/{instance_id}/file").content
        assert_nothing_identifying(data, study.files, study.study_uid)


def test_a_scan_that_needs_review_is_forwarded_once_the_review_is_confirmed(
    listener: int, peer: Any, technician: Any, orthanc_factory: Any, tmp_path: Path, settings: Any
) -> None:
    settings.IMAGING_DETECTOR = "gateway.tests.detectors.second_look_detector"
    orthanc = orthanc_factory()
    orthanc.destination()
    study = study_files(tmp_path / "study", count=1)
    assert storescu(listener, *study.files).returncode == 0
    scan = Scan.objects.get()
    assert (scan.status, scan.needs_review) == (ScanStatus.COMPLETED, True)
    # Not yet: its pixels may still show text.
    assert not ForwardSend.objects.exists()
    assert orthanc.instances() == []

    # The technician covers what the second look found (a leftover must be resolved before
    # the review can be confirmed), then confirms.
    leftovers = list(scan.leftovers.all())
    assert leftovers
    for leftover in leftovers:
        box = (leftover.x1, leftover.y1, leftover.x2, leftover.y2)
        region_add(scan=scan, box=box, frame=leftover.frame, actor=technician)
    assert not ForwardSend.objects.exists()
    scan_confirm_review(scan=Scan.objects.get(pk=scan.pk), actor=technician)
    send = ForwardSend.objects.get()
    assert (send.scan_id, send.status, send.attempts) == (scan.pk, SendStatus.SENT, 1)
    assert len(orthanc.instances()) == 1
