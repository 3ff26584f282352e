"""The backup and restore drill: upload and process through the API, back up, wipe the
database and the stored files, restore; the audit chain verifies and a doctor's restore is
pixel-exact. Also: the backup is encrypted and holds no key, and a damaged backup is refused
before anything is touched."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image
from rest_framework.test import APIClient

from audit.models import AuditEvent
from imaging.tests import factories
from medimg.management.backups import stored_files, wipe_media
from patients.models import Patient

pytestmark = pytest.mark.django_db(transaction=True)

PATIENT_NAME = "Jane Backupdrill"
PATIENT_ID = "MRN-DRILL-0042"


def _upload_and_process(technician: Any, settings: Any) -> tuple[int, np.ndarray]:
    settings.IMAGING_DETECTOR = "imaging.tests.factories.bright_text_detector"
    pixels = factories.text_image(320, 240)
    patient = Patient.objects.create(id=PATIENT_ID, name=PATIENT_NAME, age=54)
    api = APIClient()
    api.force_authenticate(technician)
    response = api.post(
        f"/api/patients/{patient.id}/images/",
        {"files": [SimpleUploadedFile("scan.png", factories.png_bytes(pixels))]},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    scan_id = response.json()[0]["id"]
    status = api.get(f"/api/images/{scan_id}/status/").json()
    assert status["status"] == "completed", status
    return scan_id, pixels


def _restored_pixels(doctor: Any, scan_id: int) -> np.ndarray:
    api = APIClient()
    api.force_authenticate(doctor)
    response = api.post(f"/api/images/{scan_id}/restore/", {}, format="json")
    assert response.status_code == 200, response.content
    return np.asarray(Image.open(io.BytesIO(response.content)))


def _audit_verify() -> str:
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


def _backup(out: Path) -> dict[str, Any]:
    call_command("backup", out=str(out), stdout=io.StringIO())
    return json.loads((out / "manifest.json").read_text())


def _wipe() -> None:
    call_command("flush", interactive=False, verbosity=0)
    wipe_media()


def test_the_drill(
    technician: Any, doctor: Any, settings: Any, tmp_path: Path, eager_tasks: None
) -> None:
    scan_id, pixels = _upload_and_process(technician, settings)
    assert np.array_equal(_restored_pixels(doctor, scan_id), pixels)
    files_before = sorted(stored_files())
    events_before = AuditEvent.objects.count()
    assert files_before and events_before

    manifest = _backup(tmp_path / "backup")
    kinds = [entry["kind"] for entry in manifest["files"]]
    assert kinds.count("database") == 1 and kinds.count("audit") == 1
    assert sorted(e["name"] for e in manifest["files"] if e["kind"] == "media") == files_before
    # The export was taken first, so the backup's database holds its own AUDIT_EXPORTED event.
    assert manifest["audit"]["count"] == events_before

    _wipe()
    assert AuditEvent.objects.count() == 0 and not list(stored_files())
    assert not Patient.objects.exists()
    with pytest.raises(Exception):  # noqa: B017 - whatever the failure, it must not restore
        _restored_pixels(doctor, scan_id)

    out = io.StringIO()
    call_command("restore_backup", str(tmp_path / "backup"), stdout=out)
    assert "Restored the backup" in out.getvalue()

    assert sorted(stored_files()) == files_before
    assert _audit_verify().startswith(f"OK {events_before + 1} events")
    assert Patient.objects.get(id=PATIENT_ID).name == PATIENT_NAME
    assert np.array_equal(_restored_pixels(doctor, scan_id), pixels)
    assert _audit_verify().startswith("OK")


def test_files_of_several_chunks_and_empty_ones_come_back_byte_for_byte(
    technician: Any, tmp_path: Path
) -> None:
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from audit.models import Action
    from audit.services import audit_record

    big = bytes(range(256)) * (3 * 4096) + b"tail"  # three 1 MiB chunks and a bit
    default_storage.save("scans/deep/big.bin", ContentFile(big))
    default_storage.save("empty.bin", ContentFile(b""))
    audit_record(action=Action.PATIENT_VIEWED, actor=technician, target_id="1")
    files = sorted(stored_files())
    _backup(tmp_path / "backup")
    _wipe()
    call_command("restore_backup", str(tmp_path / "backup"), stdout=io.StringIO())
    assert sorted(stored_files()) == files
    with default_storage.open("scans/deep/big.bin") as handle:
        assert handle.read() == big
    with default_storage.open("empty.bin") as handle:
        assert handle.read() == b""
    assert _audit_verify().startswith("OK 2 events")


def test_the_backup_is_encrypted_and_holds_no_key(
    technician: Any, settings: Any, tmp_path: Path, eager_tasks: None
) -> None:
    _upload_and_process(technician, settings)
    _backup(tmp_path / "backup")
    # The keys this installation uses (development keys generated under KEY_DIR).
    secrets = [
        bytes.fromhex(path.read_text().strip()) for path in Path(settings.KEY_DIR).glob("*.key")
    ]
    assert secrets
    for path in (tmp_path / "backup").rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        for key in secrets:
            assert key not in data and key.hex().encode() not in data, path
        # Patient names and ids are in the database in clear: never in the backup.
        assert PATIENT_NAME.encode() not in data and PATIENT_ID.encode() not in data, path
        # No image in clear either: no PNG signature.
        assert b"\x89PNG\r\n\x1a\n" not in data, path


def test_a_damaged_backup_is_refused_before_anything_changes(
    technician: Any, settings: Any, tmp_path: Path, eager_tasks: None
) -> None:
    _upload_and_process(technician, settings)
    manifest = _backup(tmp_path / "backup")
    _wipe()
    media = next(e for e in manifest["files"] if e["kind"] == "media")
    damaged = tmp_path / "backup" / media["stored"]
    data = bytearray(damaged.read_bytes())
    data[-3] ^= 0x01
    damaged.write_bytes(bytes(data))
    with pytest.raises(CommandError, match="does not match its SHA-256"):
        call_command("restore_backup", str(tmp_path / "backup"))
    # Nothing was put back.
    assert not Patient.objects.exists() and not list(stored_files())

    # Edit the manifest to match the damaged file: its HMAC no longer matches.
    manifest["files"][manifest["files"].index(media)]["stored_sha256"] = "0" * 64
    (tmp_path / "backup" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CommandError, match="HMAC"):
        call_command("restore_backup", str(tmp_path / "backup"))


def test_another_backup_key_cannot_read_it(
    technician: Any, settings: Any, tmp_path: Path, eager_tasks: None
) -> None:
    _upload_and_process(technician, settings)
    _backup(tmp_path / "backup")
    settings.MEDIMG_BACKUP_KEY = "ab" * 32
    with pytest.raises(CommandError, match="another backup key"):
        call_command("restore_backup", str(tmp_path / "backup"), "--check")


def test_check_only_changes_nothing(
    technician: Any, settings: Any, tmp_path: Path, eager_tasks: None
) -> None:
    _upload_and_process(technician, settings)
    _backup(tmp_path / "backup")
    _wipe()
    out = io.StringIO()
    call_command("restore_backup", str(tmp_path / "backup"), "--check", stdout=out)
    assert out.getvalue().startswith("OK: ")
    assert not Patient.objects.exists()


def test_it_refuses_to_restore_over_data_without_force(
    technician: Any, settings: Any, tmp_path: Path, eager_tasks: None
) -> None:
    _upload_and_process(technician, settings)
    _backup(tmp_path / "backup")
    with pytest.raises(CommandError, match="holds data"):
        call_command("restore_backup", str(tmp_path / "backup"))
    call_command("restore_backup", str(tmp_path / "backup"), "--force", stdout=io.StringIO())
    assert _audit_verify().startswith("OK")


def test_it_will_not_write_into_a_folder_with_files(db: Any, tmp_path: Path) -> None:
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "something").write_text("x")
    with pytest.raises(CommandError, match="not empty"):
        call_command("backup", out=str(tmp_path / "backup"))


def test_backup_and_restore_through_s3(
    technician: Any, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same commands against S3-compatible storage (moto's in-process S3 API)."""
    moto = pytest.importorskip("moto")
    import boto3
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from audit.models import Action
    from audit.services import audit_record

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with moto.mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="medimg-backup-test")
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": {
                    "bucket_name": "medimg-backup-test",
                    "region_name": "us-east-1",
                    "default_acl": "private",
                    "file_overwrite": False,
                },
            },
        }
        contents = {
            "scans/1/original.enc": b"\x01" * 5000,
            "scans/1/regions/0.enc": b"\x02" * 10,
            "scans/2/redacted.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,
        }
        for name, data in contents.items():
            assert default_storage.save(name, ContentFile(data)) == name
        audit_record(action=Action.PATIENT_VIEWED, actor=technician, target_id="1")

        _backup(tmp_path / "backup")
        _wipe()
        assert s3.list_objects_v2(Bucket="medimg-backup-test").get("KeyCount") == 0

        call_command("restore_backup", str(tmp_path / "backup"), stdout=io.StringIO())
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="medimg-backup-test")["Contents"])
        assert keys == sorted(contents)
        for name, data in contents.items():
            assert s3.get_object(Bucket="medimg-backup-test", Key=name)["Body"].read() == data
        assert _audit_verify().startswith("OK 2 events")
