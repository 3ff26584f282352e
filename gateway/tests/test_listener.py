"""The listener against dcmtk's echoscu and storescu (a modality), on the test database."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from audit.models import AuditEvent, Outcome
from gateway.listener import listener_start, tls_context
from gateway.models import DicomInstance, ReceivedInstance
from gateway.receive import ACTION_ASSOCIATION, ACTION_RECEIVED
from gateway.tests.conftest import LISTENER_AET, free_port, need, storescu
from gateway.tests.dicom_files import PHI, study_files
from imaging.models import Scan, ScanStatus
from patients.models import Patient

pytestmark = pytest.mark.django_db(transaction=True)


def echoscu(port: int, aet: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need("echoscu"), "-v", "-aet", aet, "-aec", LISTENER_AET, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def media_files(settings: Any) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_a_configured_peer_echoes_and_an_unknown_ae_is_refused(listener: int, peer: Any) -> None:
    known = echoscu(listener, "MODALITY1")
    assert known.returncode == 0, known.stdout + known.stderr

    stranger = echoscu(listener, "STRANGER")
    output = stranger.stdout + stranger.stderr
    assert stranger.returncode != 0
    assert "Association Rejected" in output
    assert "Calling AE Title Not Recognized" in output

    events = AuditEvent.objects.filter(action=ACTION_ASSOCIATION).order_by("sequence")
    assert [(e.outcome, e.details["calling_ae"]) for e in events] == [
        (Outcome.SUCCESS, "MODALITY1"),
        (Outcome.REFUSED, "STRANGER"),
    ]


def test_a_known_ae_title_from_another_address_is_refused(listener: int, peer: Any) -> None:
    peer.host = "10.255.255.1"
    peer.save()
    result = echoscu(listener, "MODALITY1")
    assert result.returncode != 0
    assert "Association Rejected" in result.stdout + result.stderr


def test_a_study_pushed_by_storescu_arrives_and_is_processed(
    listener: int, peer: Any, technician: Any, tmp_path: Path
) -> None:
    study = study_files(tmp_path / "study", count=3)
    result = storescu(listener, *study.files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        result.stdout.count("Received Store Response (Success)")
        + result.stderr.count("Received Store Response (Success)")
        == 3
    )

    patient = Patient.objects.get(pk=PHI["PatientID"])
    assert patient.created_by == technician
    assert set(patient.departments.all()) == set(technician.departments.all())
    scans = list(Scan.objects.filter(patient=patient).order_by("instance_number"))
    assert [s.status for s in scans] == [ScanStatus.COMPLETED] * 3, [
        s.failure_reason for s in scans
    ]
    assert [s.instance_number for s in scans] == [1, 2, 3]
    # One study, one series, by the remapped UIDs: the modality's UIDs are gone.
    assert len({s.study_uid for s in scans}) == 1
    assert len({s.series_uid for s in scans}) == 1
    assert scans[0].study_uid not in (study.study_uid, "")
    assert all(s.regions.count() >= 1 for s in scans)
    assert all(s.identity_ciphertext for s in scans)
    # Indexed for QIDO by the de-identified header only.
    instances = DicomInstance.objects.filter(scan__in=scans)
    assert instances.count() == 3
    blob = str(list(instances.values_list("study_json", "series_json", "instance_json")))
    for value in PHI.values():
        assert value not in blob
    assert not set(study.sop_uids) & set(instances.values_list("sop_instance_uid", flat=True))

    received = AuditEvent.objects.filter(action=ACTION_RECEIVED, outcome=Outcome.SUCCESS)
    assert sorted(int(e.target_id) for e in received) == sorted(s.pk for s in scans)
    assert all(e.details["calling_ae"] == "MODALITY1" for e in received)
    # The audit log carries no header value either.
    log = str(list(AuditEvent.objects.values_list("target_id", "details")))
    for value in (PHI["PatientName"], PHI["InstitutionName"], PHI["AccessionNumber"]):
        assert value not in log


def _malformed(path: Path, good: Path) -> Path:
    """A dataset storescu will send but intake must refuse: Pixel Data cut to half a frame."""
    ds = dcmread(good)
    ds.PixelData = bytes(ds.PixelData)[: len(ds.PixelData) // 2]
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_malformed_dataset_gets_a_failure_status_and_nothing_is_stored(
    listener: int, peer: Any, tmp_path: Path, settings: Any
) -> None:
    study = study_files(tmp_path / "study", count=1)
    bad = _malformed(tmp_path / "bad.dcm", study.files[0])
    before = media_files(settings)

    result = storescu(listener, bad)
    output = result.stdout + result.stderr
    assert "Received Store Response (Success)" not in output
    # dcmtk names the status: 0xA900 is "DataSetDoesNotMatchSOPClass".
    assert "Received Store Response (Error: DataSetDoesNotMatchSOPClass)" in output, output

    assert Scan.objects.count() == 0
    assert Patient.objects.count() == 0
    assert media_files(settings) == before
    refused = AuditEvent.objects.get(action=ACTION_RECEIVED, outcome=Outcome.REFUSED)
    assert (refused.details["status"], refused.details["error"]) == (0xA900, "corrupt_image")


def test_a_dataset_without_patient_id_is_refused(listener: int, peer: Any, tmp_path: Path) -> None:
    study = study_files(tmp_path / "study", count=1)
    ds = dcmread(study.files[0])
    del ds.PatientID
    path = tmp_path / "anonymous.dcm"
    ds.save_as(path, enforce_file_format=True)

    result = storescu(listener, path)
    output = result.stdout + result.stderr
    # 0xC000: "Cannot understand".
    assert "Received Store Response (Error: CannotUnderstand" in output, output
    assert Scan.objects.count() == 0
    assert Patient.objects.count() == 0


def test_dicom_tls(peer: Any, tmp_path: Path, transactional_db: Any) -> None:
    """--tls-cert/--tls-key: echoscu over TLS is answered; in clear it gets nothing."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [need("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = free_port()
    server = listener_start(
        host="127.0.0.1",
        port=port,
        ae_title=LISTENER_AET,
        ssl_context=tls_context(cert=str(cert), key=str(key)),
    )
    try:
        base = [need("echoscu"), "-v", "-aet", "MODALITY1", "-aec", LISTENER_AET]
        secure = subprocess.run(
            [*base, "+tla", "+cf", str(cert), "127.0.0.1", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert secure.returncode == 0, secure.stdout + secure.stderr
        clear = subprocess.run(
            [*base, "-to", "5", "-ta", "5", "127.0.0.1", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert clear.returncode != 0
    finally:
        server.shutdown()


def test_an_instance_sent_again_is_not_stored_twice(
    listener: int, peer: Any, tmp_path: Path, settings: Any
) -> None:
    """A retry after a lost response, or a PACS sending the study again: success, one copy."""
    study = study_files(tmp_path / "study", count=2)
    assert storescu(listener, *study.files).returncode == 0
    scans = sorted(Scan.objects.values_list("pk", flat=True))
    files = media_files(settings)

    again = storescu(listener, *study.files)
    output = again.stdout + again.stderr
    assert output.count("Received Store Response (Success)") == 2, output
    assert sorted(Scan.objects.values_list("pk", flat=True)) == scans
    assert media_files(settings) == files
    duplicates = AuditEvent.objects.filter(action=ACTION_RECEIVED, details__duplicate=True)
    assert sorted(int(e.target_id) for e in duplicates) == scans
    # The UIDs are remembered by a keyed hash only.
    kept = str(list(ReceivedInstance.objects.values_list("sop_hash", flat=True)))
    assert not any(uid in kept for uid in study.sop_uids)


def test_a_refused_instance_can_be_sent_again_once_mended(
    listener: int, peer: Any, tmp_path: Path
) -> None:
    study = study_files(tmp_path / "study", count=1)
    bad = _malformed(tmp_path / "bad.dcm", study.files[0])  # the same SOP Instance UID
    assert "Success" not in storescu(listener, bad).stdout
    result = storescu(listener, study.files[0])
    assert "Received Store Response (Success)" in result.stdout + result.stderr
    assert Scan.objects.count() == 1
