"""Erasure by crypto-shredding (imaging.jobs.erasure, imaging.services.erasure, the admins'
page and `manage.py erase`), and retention. Real uploads processed by the real pipeline, real
files, the real backup and restore: an erased scan does not come back from a backup taken
before the erasure, and nothing left can be decrypted."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone
from pydicom.uid import generate_uid
from rest_framework.test import APIClient

from accounts.otp import otp_device_for
from accounts.tests.otp_codes import code, enrol, wrong_code
from audit.models import Action, AuditEvent, Outcome
from engine.errors import CryptoError
from imaging.apps import reapply_erasures_after_restore
from imaging.jobs.erasure import erasures_reapply, retention_erase_expired
from imaging.models import Erasure, Region, Scan, ScanStatus
from imaging.services.erasure import erasure_request
from imaging.tests import factories
from imaging.vault.keys import open_data_key, open_original
from medimg.erasures import erased_scan_uids, ledger_entries
from medimg.management.backups import database_restored, stored_files, wipe_media
from patients.models import Patient

pytestmark = pytest.mark.django_db(transaction=True)

NAME = "Erin Erasewright"
MRN = "MRN-ERASE-7731"
REASON = "Erasure request ticket GDPR-2026-0042"


def upload(technician: Any, settings: Any, patient_id: str = MRN, count: int = 1) -> list[int]:
    settings.IMAGING_DETECTOR = "imaging.tests.factories.bright_text_detector"
    Patient.objects.get_or_create(id=patient_id, defaults={"name": NAME, "age": 61})
    api = APIClient()
    api.force_authenticate(technician)
    files = [
        SimpleUploadedFile(f"erin-{i}.png", factories.png_bytes(factories.text_image(200, 160)))
        for i in range(count)
    ]
    response = api.post(f"/api/patients/{patient_id}/images/", {"files": files}, format="multipart")
    assert response.status_code == 201, response.content
    ids = [item["id"] for item in response.json()]
    assert all(Scan.objects.get(pk=i).status == ScanStatus.COMPLETED for i in ids)
    return ids


def restore_status(doctor: Any, scan_id: int) -> int:
    api = APIClient()
    api.force_authenticate(doctor)
    return api.post(f"/api/images/{scan_id}/restore/", {}, format="json").status_code


def scan_files(uid: str) -> list[str]:
    return [name for name in stored_files() if name.startswith(f"scans/{uid}/")]


def erase(admin: Any, kind: str, target: str, **kwargs: Any) -> Erasure:
    device = enrol(admin)
    return erasure_request(
        actor=admin,
        kind=kind,
        target=target,
        reason=kwargs.get("reason", REASON),
        otp_code=kwargs.get("otp_code") or code(device),
    )


def test_it_erases_a_patient_and_leaves_a_tombstone_without_identity(
    technician: Any, doctor: Any, admin: Any, settings: Any, eager_tasks: None
) -> None:
    ids = upload(technician, settings, count=2)
    scans = list(Scan.objects.filter(pk__in=ids))
    uids = [str(scan.uid) for scan in scans]
    assert all(scan_files(uid) for uid in uids)
    assert restore_status(doctor, ids[0]) == 200

    erasure = erase(admin, "patient", MRN)

    assert not Patient.objects.filter(id=MRN).exists()
    assert not Scan.objects.filter(pk__in=ids).exists()
    assert not Region.objects.filter(scan_id__in=ids).exists()
    assert not any(scan_files(uid) for uid in uids)
    assert erasure.files_deleted > 0 and sorted(erasure.scan_ids) == sorted(ids)
    assert erasure.erased_by == admin and erasure.via == "admin page"
    tombstone = json.dumps({f.name: str(getattr(erasure, f.name)) for f in Erasure._meta.fields})
    for identity in (NAME, MRN, "erin-0.png", "Erasewright"):
        assert identity not in tombstone
    # The API answers 404 for the erased scans, exactly as for a scan that never existed.
    assert restore_status(doctor, ids[0]) == 404
    client = Client()
    client.force_login(doctor)
    assert client.get(f"/scans/{ids[0]}/").status_code == 404
    assert client.get(f"/patients/{MRN}/").status_code == 404
    # The audit event names the patient by reference only, and keeps the reason.
    event = AuditEvent.objects.get(action=Action.PATIENT_ERASED)
    text = json.dumps(event.details) + event.target_id
    assert MRN not in text and NAME not in text
    assert event.target_id == erasure.patient_reference and event.details["reason"] == REASON
    assert event.actor_id == admin.pk
    # Nothing in the whole log names the patient or a file (uploads, views, the erasure).
    for logged in AuditEvent.objects.all():
        written = json.dumps(logged.details) + logged.target_id + logged.user_agent
        assert MRN not in written and NAME not in written and "erin-" not in written, logged
    # The ledger has the uids, nothing else that identifies anyone.
    assert set(uids) <= erased_scan_uids()
    assert MRN not in json.dumps(ledger_entries()) and NAME not in json.dumps(ledger_entries())
    call_command("audit_verify", stdout=io.StringIO())


def test_it_erases_one_scan_and_keeps_the_rest(
    technician: Any, doctor: Any, admin: Any, settings: Any, eager_tasks: None
) -> None:
    first, second = upload(technician, settings, count=2)
    erasure = erase(admin, "scan", str(first))
    assert erasure.scan_ids == [first]
    assert Patient.objects.filter(id=MRN).exists()
    assert restore_status(doctor, first) == 404
    assert restore_status(doctor, second) == 200
    event = AuditEvent.objects.get(action=Action.SCAN_ERASED)
    assert event.target_type == "scan" and event.target_id == str(first)
    assert MRN not in json.dumps(event.details)


def test_it_needs_a_fresh_code_a_reason_without_identity_and_an_admin(
    technician: Any, doctor: Any, admin: Any, settings: Any, eager_tasks: None
) -> None:
    (scan_id,) = upload(technician, settings)
    device = enrol(admin)
    with pytest.raises(ValidationError) as refused:
        erasure_request(
            actor=admin, kind="patient", target=MRN, reason=REASON, otp_code=wrong_code(device)
        )
    assert "otp_code" in refused.value.message_dict
    event = AuditEvent.objects.get(action=Action.PATIENT_ERASED)
    assert event.outcome == Outcome.REFUSED and event.details["reason"] == "otp_invalid"
    device.refresh_from_db()
    device.throttle_reset()  # django-otp makes the next try wait after a wrong code.
    for reason in ("short", f"as asked by {NAME}", f"ticket for {MRN.lower()}"):
        with pytest.raises(ValidationError) as refused:
            erasure_request(
                actor=admin,
                kind="patient",
                target=MRN,
                reason=reason,
                otp_code=code(device, steps_ahead=1),
            )
        assert "reason" in refused.value.message_dict
        device.refresh_from_db()
        device.last_t = -1  # The same code again, for the next reason tried.
        device.save(update_fields=["last_t"])
    with pytest.raises(ValidationError) as refused:
        erasure_request(
            actor=admin, kind="scan", target="999999", reason=REASON, otp_code=code(device)
        )
    assert "target" in refused.value.message_dict
    for user in (doctor, technician):
        with pytest.raises(PermissionDenied):
            erasure_request(
                actor=user, kind="scan", target=str(scan_id), reason=REASON, otp_code=""
            )
    assert Scan.objects.filter(pk=scan_id).exists() and not Erasure.objects.exists()


def test_the_admin_page_erases_with_a_typed_code(
    technician: Any, doctor: Any, admin: Any, settings: Any, eager_tasks: None
) -> None:
    (scan_id,) = upload(technician, settings)
    client = Client()
    client.force_login(admin)  # A verified session: the form still wants a code typed now.
    device = otp_device_for(admin)
    assert device is not None
    form = {"kind": "scan", "target": str(scan_id), "reason": REASON, "confirm": "on"}
    page = client.get("/manage/erasure/")
    assert page.status_code == 200 and b"Erase for good" in page.content
    answer = client.post("/manage/erasure/", form)
    assert answer.status_code == 400 and Scan.objects.filter(pk=scan_id).exists()
    answer = client.post("/manage/erasure/", {**form, "otp_code": wrong_code(device)})
    assert answer.status_code == 400
    assert b"not the current code" in answer.content
    device.refresh_from_db()
    device.throttle_reset()  # django-otp makes the next try wait after a wrong code.
    answer = client.post("/manage/erasure/", {**form, "otp_code": code(device)})
    assert answer.status_code == 200, answer.content
    assert b"data-erasure-done" in answer.content and b"data-erasure-row" in answer.content
    assert not Scan.objects.filter(pk=scan_id).exists()
    for user in (doctor, technician):
        other = Client()
        other.force_login(user)
        assert other.post("/manage/erasure/", {**form, "otp_code": code(device)}).status_code == 403


def test_a_backup_from_before_the_erasure_does_not_bring_it_back(
    technician: Any, doctor: Any, admin: Any, settings: Any, tmp_path: Path, eager_tasks: None
) -> None:
    erased_id, kept_id = upload(technician, settings, count=2)
    upload(technician, settings, patient_id="MRN-KEEP-1")
    erased = Scan.objects.get(pk=erased_id)
    uid, wrapped_key, original_path = (
        str(erased.uid),
        bytes(erased.wrapped_key),
        erased.original_path,
    )
    call_command("backup", out=str(tmp_path / "backup"), stdout=io.StringIO())

    erase(admin, "patient", MRN)
    events_after_erasure = AuditEvent.objects.count()

    # The lost-disk drill: database and files gone, the keys (and the ledger beside them) kept.
    call_command("flush", interactive=False, verbosity=0)
    wipe_media()
    out = io.StringIO()
    call_command("restore_backup", str(tmp_path / "backup"), stdout=out)
    assert "Restored the backup" in out.getvalue()

    # The erased patient and scans stay gone, their files were not put back ...
    assert not Patient.objects.filter(id=MRN).exists()
    assert not Scan.objects.filter(uid=uid).exists()
    assert not Scan.objects.filter(pk=kept_id).exists()
    assert not scan_files(uid)
    assert restore_status(doctor, erased_id) == 404
    # ... while everything else came back and restores exactly.
    other = Scan.objects.get(patient_id="MRN-KEEP-1")
    assert scan_files(str(other.uid)) and restore_status(doctor, other.pk) == 200
    # The tombstone is back (from the ledger), the re-application audited, the chain intact.
    erasure = Erasure.objects.get()
    assert erasure.erased_by_username == admin.username and uid in erasure.scan_uids
    assert AuditEvent.objects.filter(
        action=Action.PATIENT_ERASED, details__via="re-applied after restore"
    ).exists()
    assert AuditEvent.objects.count() < events_after_erasure + 5
    call_command("audit_verify", stdout=io.StringIO())

    # Even a row put back by hand, with its old wrapped key, opens nothing: the key is refused.
    ghost = Scan(uid=uid, wrapped_key=wrapped_key, original_path=original_path)
    with pytest.raises(CryptoError):
        open_data_key(ghost)
    with pytest.raises((CryptoError, OSError)):
        open_original(ghost)


def test_a_restore_that_skips_the_ledger_is_refused_and_still_decrypts_nothing(
    technician: Any, doctor: Any, admin: Any, settings: Any, tmp_path: Path, eager_tasks: None
) -> None:
    (scan_id,) = upload(technician, settings)
    call_command("backup", out=str(tmp_path / "backup"), stdout=io.StringIO())
    erase(admin, "scan", str(scan_id))
    call_command("flush", interactive=False, verbosity=0)
    wipe_media()
    database_restored.disconnect(dispatch_uid="imaging_reapply_erasures")
    try:
        with pytest.raises(CommandError, match="erase --reapply"):
            call_command("restore_backup", str(tmp_path / "backup"), stdout=io.StringIO())
        # The old row is back with its old wrapped key, yet nothing unwraps it.
        ghost = Scan.objects.get(pk=scan_id)
        with pytest.raises(CryptoError):
            open_data_key(ghost)
        assert restore_status(doctor, scan_id) != 200
    finally:
        database_restored.connect(
            reapply_erasures_after_restore, dispatch_uid="imaging_reapply_erasures"
        )
    out = io.StringIO()
    call_command("erase", "--reapply", stdout=out)
    assert "Applied 1 erasure" in out.getvalue()
    assert not Scan.objects.filter(pk=scan_id).exists()
    assert erasures_reapply() == 0  # Idempotent.


def test_the_command_erases_for_an_operator(
    technician: Any, doctor: Any, settings: Any, eager_tasks: None
) -> None:
    (scan_id,) = upload(technician, settings)
    with pytest.raises(CommandError, match="leave out the patient's name"):
        call_command("erase", "--patient", MRN, "--reason", f"{NAME} asked", stdout=io.StringIO())
    with pytest.raises(CommandError, match="no patient"):
        call_command("erase", "--patient", "MRN-NOBODY", "--reason", REASON)
    reference = Patient.objects.get(id=MRN).reference
    out = io.StringIO()
    call_command(
        "erase", "--patient", reference, "--reason", REASON, "--operator", "ops-oli", stdout=out
    )
    assert "1 scan(s)" in out.getvalue() and MRN not in out.getvalue()
    assert not Scan.objects.filter(pk=scan_id).exists()
    event = AuditEvent.objects.get(action=Action.PATIENT_ERASED)
    assert event.actor_id is None and "ops-oli" in event.actor_username


def test_retention_erases_completed_scans_older_than_the_setting(
    technician: Any, doctor: Any, settings: Any, eager_tasks: None
) -> None:
    old_id, new_id = upload(technician, settings, count=2)
    pending = Scan.objects.get(pk=new_id)
    Scan.objects.filter(pk=old_id).update(created_at=timezone.now() - timedelta(days=40))
    stuck = Scan.objects.create(
        patient_id=MRN,
        original_filename="stuck.png",
        format="png",
        size_bytes=1,
        width=1,
        height=1,
        pixel_dtype="uint8",
        pixels_sha256="0" * 64,
        status=ScanStatus.FAILED,
        original_path="scans/none/original.enc",
        wrapped_key=b"x",
        key_id="dev",
    )
    Scan.objects.filter(pk=stuck.pk).update(created_at=timezone.now() - timedelta(days=400))

    settings.MEDIMG_RETENTION_DAYS = None
    assert retention_erase_expired() == []
    settings.MEDIMG_RETENTION_DAYS = 30
    from imaging.tasks import erase_expired_scans

    assert erase_expired_scans.delay().get() == 1
    assert not Scan.objects.filter(pk=old_id).exists()
    assert Scan.objects.filter(pk=pending.pk).exists()  # Younger than 30 days.
    assert Scan.objects.filter(pk=stuck.pk).exists()  # Not completed: not erased.
    assert restore_status(doctor, new_id) == 200
    event = AuditEvent.objects.get(action=Action.SCAN_ERASED)
    assert event.actor_id is None and event.actor_username == "system (retention)"
    assert event.details["via"] == "retention" and event.target_id == str(old_id)
    assert Erasure.objects.get().via == "retention"
    assert retention_erase_expired() == []


def test_nothing_of_an_erased_scan_is_left_in_clear_or_decryptable(
    technician: Any, admin: Any, settings: Any, eager_tasks: None
) -> None:
    (scan_id,) = upload(technician, settings)
    scan = Scan.objects.get(pk=scan_id)
    assert open_data_key(scan)
    erase(admin, "scan", str(scan_id))
    # Every file anywhere under the media root: none of the scan's is left.
    root = Path(settings.MEDIA_ROOT)
    leftovers = [p for p in root.rglob("*") if p.is_file() and str(scan.uid) in str(p)]
    assert leftovers == []
    # The data key that was in use is not stored anywhere in the database any more.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT wrapped_key FROM imaging_scan")
        assert all(bytes(row[0]) != bytes(scan.wrapped_key) for row in cursor.fetchall())


def test_no_api_export_or_dicomweb_request_finds_an_erased_dicom_scan(
    technician: Any, doctor: Any, admin: Any, settings: Any, eager_tasks: None
) -> None:
    from gateway.models import DicomInstance

    settings.IMAGING_DETECTOR = "imaging.tests.factories.bright_text_detector"
    Patient.objects.create(id=MRN, name=NAME, age=61)
    api = APIClient()
    api.force_authenticate(technician)
    frames = np.stack([factories.text_image(128, 96)])
    dataset = pydicom.dcmread(io.BytesIO(factories.dicom_bytes(frames)))
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    dicom = SimpleUploadedFile("erin.dcm", buffer.getvalue())
    response = api.post(f"/api/patients/{MRN}/images/", {"files": [dicom]}, format="multipart")
    assert response.status_code == 201, response.content
    scan_id = response.json()[0]["id"]
    instance = DicomInstance.objects.get(scan_id=scan_id)
    wado = (
        f"/dicomweb/studies/{instance.study_uid}/series/{instance.series_uid}"
        f"/instances/{instance.sop_instance_uid}"
    )
    reads = [
        f"/api/images/{scan_id}/",
        f"/api/images/{scan_id}/redacted/",
        f"/api/images/{scan_id}/grid/",
        f"/api/images/{scan_id}/export/",
        f"/api/images/{scan_id}/frames/",
        wado,
        f"{wado}/metadata",
    ]
    client = Client()
    client.force_login(doctor)
    before = {path: client.get(path).status_code for path in reads}
    assert set(before.values()) == {200}, [(p, c) for p, c in before.items() if c != 200]
    assert len(json.loads(client.get("/dicomweb/studies").content)) == 1

    erase(admin, "scan", str(scan_id))

    after = {path: client.get(path).status_code for path in reads}
    assert set(after.values()) == {404}, after
    assert client.get("/dicomweb/studies").status_code == 204  # QIDO: no study at all.
    assert not DicomInstance.objects.exists()
