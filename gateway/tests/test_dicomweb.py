"""DICOMweb through dicomweb-client (PyPI) against a live server: STOW-RS as a technician,
QIDO-RS and WADO-RS as a doctor, scoped like the API, de-identified instances only."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from gateway.models import DicomInstance
from gateway.tests.dicom_files import PHI, study_files
from imaging.models import Scan, ScanStatus
from patients.models import Patient

pytestmark = pytest.mark.django_db(transaction=True)


def token(server: Any, user: Any, password: str) -> str:
    response = requests.post(
        f"{server.url}/api/auth/token/",
        json={"username": user.username, "password": password},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access"])


def client(server: Any, user: Any, password: str) -> DICOMwebClient:
    return DICOMwebClient(
        url=f"{server.url}/dicomweb",
        headers={"Authorization": f"Bearer {token(server, user, password)}"},
    )


@pytest.fixture
def stored(serial_live_server: Any, technician: Any, password: str, tmp_path: Path) -> Any:
    """A two-instance study stored over STOW-RS by the technician and processed."""
    study = study_files(tmp_path / "study", count=2)
    datasets = [dcmread(p) for p in study.files]
    result = client(serial_live_server, technician, password).store_instances(datasets)
    assert sorted(item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence) == (
        sorted(study.sop_uids)
    )
    assert "FailedSOPSequence" not in result
    scans = list(Scan.objects.order_by("instance_number"))
    assert [s.status for s in scans] == [ScanStatus.COMPLETED] * 2
    assert Patient.objects.get(pk=PHI["PatientID"]).created_by == technician
    return study


def test_qido_and_wado_round_trip(
    serial_live_server: Any, stored: Any, doctor: Any, password: str
) -> None:
    web = client(serial_live_server, doctor, password)
    studies = web.search_for_studies()
    assert len(studies) == 1
    study_uid = studies[0]["0020000D"]["Value"][0]
    assert study_uid != stored.study_uid  # remapped
    assert studies[0]["00201208"]["Value"] == [2]
    series = web.search_for_series(study_uid)
    assert len(series) == 1
    series_uid = series[0]["0020000E"]["Value"][0]
    instances = web.search_for_instances(study_uid, series_uid)
    assert len(instances) == 2
    assert web.search_for_instances(study_uid, series_uid, search_filters={"InstanceNumber": "2"})
    assert web.search_for_studies(search_filters={"StudyInstanceUID": "1.2.3.999"}) == []
    assert web.search_for_studies(search_filters={"StudyInstanceUID": stored.study_uid}) == []
    # Text keys match the de-identified values (wildcards; names case-insensitively); the
    # hospital's own id finds nothing here.
    pseudonym = studies[0]["00100020"]["Value"][0]  # engine.dicom.deid's pseudonym
    assert pseudonym and pseudonym != PHI["PatientID"]
    assert len(web.search_for_studies(search_filters={"PatientID": pseudonym})) == 1
    assert len(web.search_for_studies(search_filters={"00100020": pseudonym[:3] + "*"})) == 1
    assert web.search_for_studies(search_filters={"PatientID": pseudonym + "X"}) == []
    assert web.search_for_studies(search_filters={"PatientID": PHI["PatientID"]}) == []
    assert web.search_for_studies(search_filters={"PatientName": "GATEWAYTEST*"}) == []
    assert web.search_for_studies(search_filters={"AccessionNumber": PHI["AccessionNumber"]}) == []
    listing = str([studies, series, instances])
    for value in PHI.values():
        assert value not in listing

    for item in instances:
        sop_uid = item["00080018"]["Value"][0]
        assert sop_uid not in stored.sop_uids
        dataset = web.retrieve_instance(study_uid, series_uid, sop_uid)
        encoded = io.BytesIO()
        dataset.save_as(encoded, enforce_file_format=True)
        for keyword, value in PHI.items():
            assert value.encode() not in encoded.getvalue(), keyword
        original = dcmread(stored.files[int(dataset.InstanceNumber) - 1])
        ink = original.pixel_array >= 4095
        assert ink.sum() > 50 and (dataset.pixel_array[ink] < 4095).all()

        metadata = web.retrieve_instance_metadata(study_uid, series_uid, sop_uid)
        assert metadata["00080018"]["Value"] == [sop_uid]
        # Pixel Data by reference (BulkDataURI), never inline.
        assert set(metadata["7FE00010"]) == {"vr", "BulkDataURI"}
        for value in PHI.values():
            assert value not in str(metadata)

        frames = web.retrieve_instance_frames(study_uid, series_uid, sop_uid, frame_numbers=[1])
        assert len(frames) == 1
        assert frames[0] == bytes(dataset.PixelData)
        assert np.array_equal(
            np.frombuffer(frames[0], dtype="<u2").reshape(dataset.Rows, dataset.Columns),
            dataset.pixel_array,
        )

    series_metadata = web.retrieve_series_metadata(study_uid, series_uid)
    assert len(series_metadata) == 2
    rendered = requests.get(
        f"{serial_live_server.url}/dicomweb/studies/{study_uid}/series/{series_uid}/instances/"
        f"{instances[0]['00080018']['Value'][0]}/rendered",
        headers=web._session.headers,
        timeout=30,
    )
    assert rendered.status_code == 200 and rendered.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_other_departments_and_anonymous_callers_see_nothing(
    serial_live_server: Any, stored: Any, other_doctor: Any, admin: Any, password: str
) -> None:
    assert client(serial_live_server, other_doctor, password).search_for_studies() == []
    instance = DicomInstance.objects.first()
    assert instance is not None
    path = (
        f"/dicomweb/studies/{instance.study_uid}/series/{instance.series_uid}"
        f"/instances/{instance.sop_instance_uid}"
    )
    other = {"Authorization": f"Bearer {token(serial_live_server, other_doctor, password)}"}
    assert (
        requests.get(f"{serial_live_server.url}{path}", headers=other, timeout=30).status_code
        == 404
    )
    assert requests.get(f"{serial_live_server.url}{path}", timeout=30).status_code == 401
    assert requests.get(f"{serial_live_server.url}/dicomweb/studies", timeout=30).status_code == 401


def test_stow_refuses_a_malformed_dataset_and_stores_nothing(
    serial_live_server: Any, technician: Any, doctor: Any, password: str, tmp_path: Path
) -> None:
    study = study_files(tmp_path / "study", count=1)
    bad = dcmread(study.files[0])
    bad.PixelData = bytes(bad.PixelData)[:100]
    with pytest.raises(requests.HTTPError) as refused:
        client(serial_live_server, technician, password).store_instances([bad])
    assert refused.value.response.status_code == 409
    failed = refused.value.response.json()["00081198"]["Value"]
    assert [(f["00081155"]["Value"], f["00081197"]["Value"]) for f in failed] == [
        ([str(bad.SOPInstanceUID)], [0xA900])
    ]
    assert Scan.objects.count() == 0 and Patient.objects.count() == 0
    # Doctors do not store.
    with pytest.raises(requests.HTTPError) as forbidden:
        client(serial_live_server, doctor, password).store_instances([dcmread(study.files[0])])
    assert forbidden.value.response.status_code == 403
    assert Scan.objects.count() == 0


def test_stow_with_a_session_needs_the_csrf_token(
    serial_live_server: Any, technician: Any, password: str, tmp_path: Path
) -> None:
    study = study_files(tmp_path / "study", count=1)
    session = requests.Session()
    login = session.get(f"{serial_live_server.url}/login/", timeout=30)
    assert login.ok
    session.post(
        f"{serial_live_server.url}/login/",
        data={
            "username": technician.username,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{serial_live_server.url}/login/"},
        timeout=30,
    )
    boundary = "policyboundary"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + study.files[0].read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    url = f"{serial_live_server.url}/dicomweb/studies"
    refused = session.post(url, data=body, headers=headers, timeout=60)
    assert refused.status_code == 403, refused.text
    assert Scan.objects.count() == 0
    headers["X-CSRFToken"] = session.cookies["csrftoken"]
    headers["Referer"] = url
    stored = session.post(url, data=body, headers=headers, timeout=60)
    assert stored.status_code == 200, stored.text
    assert Scan.objects.get().status == ScanStatus.COMPLETED
