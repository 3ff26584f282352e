"""DICOM de-identification through the app: real files from pydicom-data and deid-data are
uploaded, processed (detector, sealed regions, PS3.15 Annex E header) and read back through
the export, identity and restore APIs.

The detector here is the classical `bright_text_detector` (it finds the near-white burned-in
annotations of the real ultrasounds), so the tests do not depend on the state of the YOLO
weights; `test_deidentify_command.py` runs the YOLO detector too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.utils import timezone
from pydicom.uid import UID_dictionary

from audit.models import Action, AuditEvent, Outcome
from engine.crypto import envelope as crypto
from engine.dicom import deid
from engine.dicom import io as dicom
from imaging.models import Scan, ScanStatus
from imaging.tests.conftest import media_files
from imaging.tests.deid_checks import (
    dciodvfy_available,
    dciodvfy_errors,
    private_tags,
    read,
    surviving_phi,
    walk,
)
from imaging.tests.fixtures.samples import deid_bytes, dicom_bytes
from imaging.vault import identity
from imaging.vault.keys import unwrap_data_key
from imaging.vault.storage import storage_read

SECRET = "a1" * 32  # MEDIMG_DEID_SECRET for these tests: fixed, so every run is the same
BURNED_IN = "US1_UNCR.dcm"  # RGB ultrasound, name and dates burned into the pixels


@pytest.fixture(autouse=True)
def _deid_settings(settings: Any, bright_detector: None) -> None:
    settings.MEDIMG_DEID_SECRET = SECRET
    settings.DEID_RETAIN_DEVICE_IDENTITY = False
    settings.DEID_RETAIN_PATIENT_CHARACTERISTICS = False
    settings.DEID_SAFE_PRIVATE = []


@pytest.fixture
def dicom_scan(upload: Any) -> Any:
    """Upload real DICOM files; returns their completed scans."""

    def _scans(*files: tuple[str, bytes]) -> list[Scan]:
        response = upload(*files)
        assert response.status_code == 201, response.content
        scans = [Scan.objects.get(pk=item["id"]) for item in response.json()]
        for scan in scans:
            assert scan.status == ScanStatus.COMPLETED, scan.failure_reason
        return scans

    return _scans


def export(api: Any, doctor: Any, scan: Scan) -> bytes:
    api.force_authenticate(doctor)
    response = api.get(f"/api/images/{scan.pk}/export/?format=dicom")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/dicom"
    return bytes(response.content)


REAL = [
    pytest.param("pydicom", "CT_small.dcm", id="CT_small"),
    pytest.param("pydicom", "MR_small.dcm", id="MR_small"),
    pytest.param("pydicom", BURNED_IN, id="US1_UNCR"),
    pytest.param("deid", "humans/ctbrain1.dcm", id="ctbrain1"),
    pytest.param("deid", "ultrasounds/RGB_IMAGE.dcm", id="RGB_IMAGE"),
    pytest.param("deid", "animals/cat.dcm", id="cat", marks=pytest.mark.slow),  # large: ~20 s
]


NO_PRIVATE = {BURNED_IN, "MR_small.dcm"}  # the files here without private elements


def load(source: str, name: str) -> bytes:
    return dicom_bytes(name) if source == "pydicom" else deid_bytes(name)


@pytest.mark.parametrize(("source", "name"), REAL)
def test_it_leaves_no_original_phi_and_no_private_tag_in_an_uploaded_dicom(
    api: Any, doctor: Any, dicom_scan: Any, source: str, name: str
) -> None:
    data = load(source, name)
    [scan] = dicom_scan((Path(name).name, data))
    out = export(api, doctor, scan)

    assert surviving_phi(data, out) == []
    if name not in NO_PRIVATE:
        assert private_tags(data), "the file has no private tags: it tests nothing"
    assert private_tags(out) == []
    ds = read(out)
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.PatientID == deid.patient_pseudonym(read(data).PatientID, identity.uid_secret())
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    # DEID_DESCRIPTORS=remove (the default): descriptors removed, Clean Descriptors not claimed.
    assert codes[:2] == ["113100", "113107"] and "113105" not in codes
    assert list(ds.DeidentificationMethod)[0] == "DICOM PS3.15 2026c Basic Profile"


def test_it_remaps_uids_consistently_across_the_files_of_a_study(
    api: Any, doctor: Any, dicom_scan: Any
) -> None:
    one, two = deid_bytes("humans/ctbrain1.dcm"), deid_bytes("humans/ctbrain2.dcm")
    first, second = dicom_scan(("a.dcm", one), ("b.dcm", two))
    original = read(one)
    expected = deid.remap_uid(original.StudyInstanceUID, identity.uid_secret())
    assert first.study_uid == second.study_uid == expected
    assert first.series_uid == second.series_uid
    assert first.series_uid == deid.remap_uid(original.SeriesInstanceUID, identity.uid_secret())
    assert first.modality == "CT"
    out = read(export(api, doctor, first))
    assert out.StudyInstanceUID == expected
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    # No UID of the original survives, at any depth (standard UIDs like SOP classes aside).
    before = {str(e.value) for e in walk(original) if e.VR == "UI"}
    after = {str(e.value) for e in walk(out) if e.VR == "UI"}
    assert {u for u in before & after if u not in UID_dictionary} == set()
    # The same file uploaded again gets the same UIDs: one study stays one study.
    [again] = dicom_scan(("c.dcm", one))
    assert (again.study_uid, again.series_uid) == (first.study_uid, first.series_uid)


def _date(value: str) -> dt.date:
    return dt.datetime.strptime(value, "%Y%m%d").date()


def test_it_shifts_every_date_of_a_patient_by_one_amount_keeping_intervals(
    api: Any, doctor: Any, dicom_scan: Any
) -> None:
    data = dicom_bytes("CT_small.dcm")
    later = read(data)
    later.StudyDate = "20040301"  # the same patient, a later study
    later.StudyInstanceUID = later.StudyInstanceUID + ".2"
    buffer = io.BytesIO()
    later.save_as(buffer)
    first, second = dicom_scan(("a.dcm", data), ("b.dcm", buffer.getvalue()))
    a, b = read(export(api, doctor, first)), read(export(api, doctor, second))
    original = read(data)
    shift = _date(a.StudyDate) - _date(original.StudyDate)
    assert shift.days != 0
    # Within a file: series and content dates move with the study date.
    assert _date(a.SeriesDate) - _date(original.SeriesDate) == shift
    assert _date(a.ContentDate) - _date(original.ContentDate) == shift
    # Across the patient's studies: the same shift, so the interval is kept.
    assert _date(b.StudyDate) - _date(a.StudyDate) == dt.timedelta(days=42)
    assert a.LongitudinalTemporalInformationModified == "MODIFIED"
    assert a.StudyTime == original.StudyTime


def test_it_changes_the_pixels_where_text_was_burned_in_and_only_there(
    api: Any, doctor: Any, dicom_scan: Any
) -> None:
    data = dicom_bytes(BURNED_IN)
    [scan] = dicom_scan(("us.dcm", data))
    assert scan.regions.count() >= 1
    assert not scan.needs_review
    out = read(export(api, doctor, scan))
    before, after = read(data).pixel_array, out.pixel_array
    inside = np.zeros(before.shape[:2], dtype=bool)
    for region in scan.regions.all():
        inside[region.y1 : region.y2, region.x1 : region.x2] = True
    assert not np.array_equal(before[inside], after[inside])
    assert np.array_equal(before[~inside], after[~inside])
    # Only now may the file say so.
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert scan.deid_report["pixels"] == {
        "regions": scan.regions.count(),
        "clean": True,
        "burned_in_annotation": "NO",
    }


def test_it_does_not_claim_clean_pixels_while_the_scan_needs_review() -> None:
    data = read(dicom_bytes(BURNED_IN))
    data.BurnedInAnnotation = "YES"
    buffer = io.BytesIO()
    data.save_as(buffer)
    source = buffer.getvalue()
    pixels = data.pixel_array[np.newaxis, ...]
    flagged = identity.dicom_deidentify(source, pixels, pixels_clean=False, regions=3)
    assert read(flagged.data).BurnedInAnnotation == "YES"
    assert "clean_pixel_data" not in flagged.report["options"]
    assert flagged.report["pixels"] == {
        "regions": 3,
        "clean": False,
        "burned_in_annotation": "YES",
    }
    cleared = identity.dicom_deidentify(source, pixels, pixels_clean=True, regions=3)
    assert read(cleared.data).BurnedInAnnotation == "NO"


def test_it_refuses_export_of_a_flagged_scan_until_a_technician_reviewed_it(
    api: Any, doctor: Any, dicom_scan: Any
) -> None:
    [scan] = dicom_scan(("us.dcm", dicom_bytes(BURNED_IN)))
    Scan.objects.filter(pk=scan.pk).update(needs_review=True)
    api.force_authenticate(doctor)
    response = api.get(f"/api/images/{scan.pk}/export/?format=dicom")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "needs_review"
    refused = AuditEvent.objects.filter(action=Action.SCAN_VIEWED, outcome=Outcome.REFUSED)
    assert refused.filter(target_id=str(scan.pk), details__error="needs_review").exists()
    zipped = api.get(f"/api/patients/{scan.patient_id}/export/")
    assert zipped.json()["error"]["code"] == "nothing_to_export"
    Scan.objects.filter(pk=scan.pk).update(reviewed_at=timezone.now())
    assert api.get(f"/api/images/{scan.pk}/export/?format=dicom").status_code == 200


@pytest.mark.skipif(not dciodvfy_available(), reason="dciodvfy (Debian dicom3tools) missing")
@pytest.mark.parametrize(("source", "name"), REAL)
def test_it_adds_no_dciodvfy_error(
    api: Any, doctor: Any, dicom_scan: Any, source: str, name: str
) -> None:
    data = load(source, name)
    [scan] = dicom_scan((Path(name).name, data))
    out = export(api, doctor, scan)
    assert dciodvfy_errors(out) - dciodvfy_errors(data) == set()


def test_it_shows_a_doctor_the_patients_identity_and_audits_it(
    api: Any, doctor: Any, dicom_scan: Any
) -> None:
    data = dicom_bytes("CT_small.dcm")
    [scan] = dicom_scan(("ct.dcm", data))
    assert scan.identity_ciphertext and b"CompressedSamples" not in bytes(scan.identity_ciphertext)
    api.force_authenticate(doctor)
    response = api.get(f"/api/images/{scan.pk}/identity/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["patient"]["PatientName"] == "CompressedSamples^CT1"
    assert body["patient"]["PatientID"] == "1CT1"
    assert body["patient"]["InstitutionName"] == "JFK IMAGING CENTER"
    assert body["pseudonym"].startswith("ANON-")
    assert body["date_shift_days"] < 0
    assert any(v["keyword"] == "StudyInstanceUID" for v in body["values"])
    assert response["Cache-Control"] == "no-store, private"
    event = AuditEvent.objects.filter(action=Action.SCAN_RESTORED).last()
    assert event is not None and event.details == {"part": "identity"}
    assert event.outcome == Outcome.SUCCESS and event.target_id == str(scan.pk)


def test_it_refuses_identity_and_export_to_a_technician_and_audits_the_refusal(
    api: Any, technician: Any, dicom_scan: Any
) -> None:
    [scan] = dicom_scan(("ct.dcm", dicom_bytes("CT_small.dcm")))
    api.force_authenticate(technician)
    for url, action in (
        (f"/api/images/{scan.pk}/identity/", Action.SCAN_RESTORED),
        (f"/api/images/{scan.pk}/export/?format=dicom", Action.SCAN_VIEWED),
        (f"/api/patients/{scan.patient_id}/export/", Action.PATIENT_VIEWED),
        (f"/api/patients/{scan.patient_id}/studies/{scan.study_uid}/export/", Action.SCAN_VIEWED),
    ):
        before = AuditEvent.objects.filter(action=action, outcome=Outcome.REFUSED).count()
        response = api.get(url)
        assert response.status_code == 403, url
        assert b"CompressedSamples" not in response.content
        after = AuditEvent.objects.filter(action=action, outcome=Outcome.REFUSED).count()
        assert after == before + 1, url


def test_it_restores_the_uploaded_dicom_file_byte_for_byte(
    api: Any, doctor: Any, dicom_scan: Any
) -> None:
    data = dicom_bytes(BURNED_IN)
    [scan] = dicom_scan(("us.dcm", data))
    api.force_authenticate(doctor)
    response = api.post(f"/api/images/{scan.pk}/restore/", {"format": "dicom"}, format="json")
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == hashlib.sha256(data).hexdigest()
    # The identity kept rebuilds the original header exactly from the de-identified file:
    # what `reidentify` gives back is the upload with only its pixels redacted.
    scan_ref = str(scan.uid)
    data_key = unwrap_data_key(bytes(scan.wrapped_key), scan_ref=scan_ref)
    document = identity.identity_open(
        bytes(scan.identity_ciphertext), data_key=data_key, scan_ref=scan_ref
    )
    stored = crypto.decrypt_blob(
        data_key,
        storage_read(scan.redacted_path),
        aad=crypto.redacted_dataset_aad(scan_ref=scan_ref),
    )
    rebuilt = deid.reidentify(stored, document["removed_values"])
    redacted_pixels = read(stored).pixel_array[np.newaxis, ...]
    assert rebuilt == dicom.write_redacted_dataset(data, redacted_pixels)


def test_a_changed_stored_file_fails_the_zip_export_before_a_byte_is_sent(
    api: Any, doctor: Any, dicom_scan: Any, settings: Any
) -> None:
    from pathlib import Path

    (scan,) = dicom_scan(("SIMPSON_HOMER_1.dcm", deid_bytes("humans/ctbrain1.dcm")))
    path = Path(settings.MEDIA_ROOT) / scan.redacted_path
    data = bytearray(path.read_bytes())
    data[300] ^= 0x01
    path.write_bytes(bytes(data))
    api.force_authenticate(doctor)

    response = api.get(f"/api/patients/{scan.patient_id}/export/")

    # Checked before streaming starts: a JSON error, not a truncated zip.
    assert response.status_code == 500
    assert not response.streaming
    assert response.json()["error"]["code"] == "restore_failed"
    assert AuditEvent.objects.filter(
        action=Action.PATIENT_VIEWED, outcome=Outcome.FAILURE, target_id=scan.patient.reference
    ).exists()


def test_it_exports_a_patient_and_a_study_as_zips_of_deidentified_files(
    api: Any, doctor: Any, dicom_scan: Any
) -> None:
    one, two = deid_bytes("humans/ctbrain1.dcm"), deid_bytes("humans/ctbrain2.dcm")
    first, second = dicom_scan(("SIMPSON_HOMER_1.dcm", one), ("SIMPSON_HOMER_2.dcm", two))
    api.force_authenticate(doctor)
    for url in (
        f"/api/patients/{first.patient_id}/export/",
        f"/api/patients/{first.patient_id}/studies/{first.study_uid}/export/",
    ):
        response = api.get(url)
        assert response.status_code == 200
        assert response["Content-Type"] == "application/zip"
        # Streamed: sent file by file, never built whole in memory.
        assert response.streaming
        archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
        names = sorted(archive.namelist())
        assert "manifest.json" in names
        dicoms = [n for n in names if n.endswith(".dcm")]
        assert len(dicoms) == 2
        assert all(n.startswith(f"{first.study_uid}/{first.series_uid}/") for n in dicoms)
        assert not any("SIMPSON" in n.upper() for n in names)
        for name, original in zip(dicoms, (one, two), strict=True):
            assert surviving_phi(original, archive.read(name)) == []
        manifest = json.loads(archive.read("manifest.json"))
        assert sorted(s["scan"] for s in manifest["scans"]) == sorted([first.pk, second.pk])
        assert "SIMPSON" not in json.dumps(manifest).upper()
    events = AuditEvent.objects.filter(outcome=Outcome.SUCCESS, details__view="export")
    assert {e.action for e in events} == {Action.PATIENT_VIEWED, Action.SCAN_VIEWED}
    assert api.get(f"/api/patients/{first.patient_id}/studies/2.25.1/export/").status_code == 404


def test_it_exports_only_the_named_patients_scans_of_a_study_uid_two_patients_share(
    api: Any, doctor: Any, upload: Any, other_patient: Any
) -> None:
    # One file uploaded for two patients: the same remapped Study Instance UID on both.
    data = deid_bytes("humans/ctbrain1.dcm")
    response = upload(("SIMPSON_HOMER_1.dcm", data))
    assert response.status_code == 201, response.content
    mine = Scan.objects.get(pk=response.json()[0]["id"])
    response = upload(("SIMPSON_HOMER_1.dcm", data), patient_id=other_patient.id)
    assert response.status_code == 201, response.content
    theirs = Scan.objects.get(pk=response.json()[0]["id"])
    assert mine.study_uid and mine.study_uid == theirs.study_uid
    assert mine.patient_id != theirs.patient_id
    api.force_authenticate(doctor)

    for scan, other in ((mine, theirs), (theirs, mine)):
        response = api.get(f"/api/patients/{scan.patient_id}/studies/{scan.study_uid}/export/")
        assert response.status_code == 200
        archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
        manifest = json.loads(archive.read("manifest.json"))
        assert [s["scan"] for s in manifest["scans"]] == [scan.pk]
        assert not any(f"scan-{other.pk}." in name for name in archive.namelist())
        event = AuditEvent.objects.filter(action=Action.SCAN_VIEWED, target_type="study").last()
        assert event is not None and event.details["scans"] == [scan.pk]
        assert event.details["patient"] == scan.patient.reference
    # The old patient-less route, which mixed both patients' scans, is gone.
    assert api.get(f"/api/studies/{mine.study_uid}/export/").status_code == 404


def test_it_keeps_the_device_identity_only_when_the_setting_says_so(
    api: Any, doctor: Any, dicom_scan: Any, settings: Any
) -> None:
    data = dicom_bytes(BURNED_IN)  # Device Serial Number 4121885, station mvme22
    [plain] = dicom_scan(("a.dcm", data))
    out = read(export(api, doctor, plain))
    assert "DeviceSerialNumber" not in out or not out.DeviceSerialNumber
    assert "4121885" not in plain.scanner
    settings.DEID_RETAIN_DEVICE_IDENTITY = True
    [kept] = dicom_scan(("b.dcm", data))
    out = read(export(api, doctor, kept))
    assert out.DeviceSerialNumber == "4121885"
    assert "4121885" in kept.scanner and "113109" in kept.deid_report["method_codes"]


def test_it_records_a_report_with_counts_and_no_identifying_value(dicom_scan: Any) -> None:
    [scan] = dicom_scan(("ct.dcm", dicom_bytes("CT_small.dcm")))
    report = scan.deid_report
    assert report["edition"] == "DICOM PS3.15 2026c"
    # Descriptors are removed by default (DEID_DESCRIPTORS=remove): no Clean Descriptors.
    assert report["options"] == ["retain_long_modified_dates", "clean_pixel_data"]
    counts = report["counts"]
    assert counts["removed"] > 0 and counts["private_removed"] > 0 and counts["uid_remapped"] > 0
    text = json.dumps(report)
    for value in ("CompressedSamples", "1CT1", "JFK", "20040119"):
        assert value not in text


BAD = {
    "truncated": lambda d: d[: len(d) // 2],
    "wrong_length": lambda d: d.replace(
        b"PN\x16\x00CompressedSamples^CT1", b"PN\xff\x7fCompressedSamples^CT1"
    ),
    "no_pixel_data": lambda d: _without_pixels(d),
    "not_dicom": lambda d: b"this is not a DICOM file at all\n" * 20,
}


def _without_pixels(data: bytes) -> bytes:
    ds = read(data)
    del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("case", sorted(BAD))
def test_it_refuses_bad_dicom_with_a_clear_error_and_stores_nothing(
    upload: Any, settings: Any, case: str
) -> None:
    data = dicom_bytes("CT_small.dcm")
    bad = BAD[case](data)
    assert bad != data, "the corruption did not apply: it tests nothing"
    response = upload(("bad.dcm", bad))
    assert response.status_code == 400
    if case == "no_pixel_data":  # A non-image object has its own code (issue 13).
        assert response.json()["error"]["code"] == "no_pixel_data"
    else:
        assert response.json()["error"]["code"] in ("corrupt_image", "unsupported_format")
    assert not Scan.objects.exists()
    assert media_files(settings) == []


def test_it_keeps_only_the_private_elements_the_safe_list_names(
    api: Any, doctor: Any, dicom_scan: Any, settings: Any
) -> None:
    settings.DEID_SAFE_PRIVATE = ["GEMS_ACQU_01:0019:03"]  # GE's acquisition (0019,1003)
    [scan] = dicom_scan(("ct.dcm", dicom_bytes("CT_small.dcm")))
    out = read(export(api, doctor, scan))
    assert private_tags(export(api, doctor, scan)) == ["(0019,0010)", "(0019,1003)"]
    assert out[0x00191003].value == "373.750000" and out[0x00190010].value == "GEMS_ACQU_01"
    assert "113111" in scan.deid_report["method_codes"]


def test_the_phi_walk_finds_values_left_anywhere_including_sequences() -> None:
    data = deid_bytes("humans/ctbrain1.dcm")
    left = surviving_phi(data, data)
    assert "PatientName: 'SIMPSON^HOMER^J^'" in left
    assert "ScheduledProcedureStepID: '999887722'" in left  # inside Request Attributes Sequence
    assert "header bytes: '00007041776'" in left


def test_it_offers_the_identity_panel_on_the_doctors_page_without_the_identity_in_it(
    client: Any, doctor: Any, technician: Any, dicom_scan: Any
) -> None:
    [scan] = dicom_scan(("ct.dcm", dicom_bytes("CT_small.dcm")))
    client.force_login(doctor)
    page = client.get(f"/scans/{scan.pk}/").content.decode()
    assert "data-identity-url" in page and f"/api/images/{scan.pk}/identity/" in page
    assert f"/api/images/{scan.pk}/export/?format=dicom" in page
    assert "CompressedSamples" not in page and "1CT1" not in page
    client.force_login(technician)
    assert "data-identity-url" not in client.get(f"/scans/{scan.pk}/").content.decode()


def test_it_shows_technicians_the_remapped_uids_and_the_report_only(
    api: Any, technician: Any, dicom_scan: Any
) -> None:
    [scan] = dicom_scan(("ct.dcm", dicom_bytes("CT_small.dcm")))
    api.force_authenticate(technician)
    body = api.get(f"/api/images/{scan.pk}/").json()
    assert body["study_uid"] == scan.study_uid and body["study_uid"].startswith("2.25.")
    assert body["deid_report"]["counts"] == scan.deid_report["counts"]
    assert read(dicom_bytes("CT_small.dcm")).StudyInstanceUID not in json.dumps(body)
    assert "CompressedSamples" not in json.dumps(body) and "1CT1" not in json.dumps(body)


def test_it_refuses_identity_and_dicom_export_for_a_png_scan(
    api: Any, doctor: Any, completed_scan: Scan
) -> None:
    api.force_authenticate(doctor)
    for url in (
        f"/api/images/{completed_scan.pk}/identity/",
        f"/api/images/{completed_scan.pk}/export/?format=dicom",
    ):
        response = api.get(url)
        assert response.status_code == 400, url
        assert response.json()["error"]["code"] == "invalid_format"
    refused = AuditEvent.objects.filter(outcome=Outcome.REFUSED, target_id=str(completed_scan.pk))
    assert {e.action for e in refused} == {Action.SCAN_RESTORED, Action.SCAN_VIEWED}
    # A PNG scan still goes into a patient zip, as its redacted frames.
    zipped = api.get(f"/api/patients/{completed_scan.patient_id}/export/")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(zipped.streaming_content)))
    assert f"images/scan-{completed_scan.pk}-frame-0.png" in archive.namelist()
