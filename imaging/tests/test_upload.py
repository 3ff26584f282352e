"""Upload: accepted formats, encrypted atomic storage, refusals that store nothing."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.db import OperationalError
from PIL import Image

from audit.models import Action, AuditEvent
from engine.crypto import envelope as crypto
from imaging.models import Scan, ScanFormat, ScanStatus
from imaging.tests import factories
from imaging.tests.conftest import as_upload, media_files
from imaging.vault.keys import current_kek_id, unwrap_data_key
from imaging.vault.storage import AtomicFileSystemStorage, storage_read
from patients.models import Patient

pytestmark = pytest.mark.django_db


def _assert_nothing_stored(settings: Any) -> None:
    assert not Scan.objects.exists()
    assert media_files(settings) == []
    assert not AuditEvent.objects.filter(action=Action.SCAN_UPLOADED).exists()


def test_it_stores_a_png_encrypted_and_processes_it(
    bright_detector: None, upload: Any, text_png: tuple[bytes, np.ndarray], technician: Any
) -> None:
    data, pixels = text_png
    response = upload(("chest.png", data))

    assert response.status_code == 201
    body = response.json()
    assert len(body) == 1
    scan = Scan.objects.get(pk=body[0]["id"])
    assert scan.status == ScanStatus.COMPLETED
    assert (scan.format, scan.width, scan.height, scan.frames) == ("png", 320, 240, 1)
    assert scan.uploaded_by == technician
    assert scan.key_id == current_kek_id()
    # On disk: ciphertext only, under the MIMG header, never the image bytes.
    stored = storage_read(scan.original_path)
    assert stored.startswith(crypto.MAGIC)
    assert b"IHDR" not in stored
    key = unwrap_data_key(bytes(scan.wrapped_key), scan_ref=str(scan.uid))
    clean = crypto.decrypt_blob(key, stored, aad=crypto.original_aad(scan_ref=str(scan.uid)))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(clean))), pixels)
    event = AuditEvent.objects.get(action=Action.SCAN_UPLOADED)
    assert event.actor == technician and event.target_id == str(scan.pk)


def test_it_accepts_many_files_in_one_request(bright_detector: None, upload: Any) -> None:
    png = factories.png_bytes(factories.text_image(200, 160, seed=1))
    jpeg = factories.jpeg_bytes(factories.text_image(200, 160, seed=2))
    dicom, _ = factories.dicom16_text()

    response = upload(("a.png", png), ("b.jpg", jpeg), ("c.dcm", dicom))

    assert response.status_code == 201
    formats = [item["format"] for item in response.json()]
    assert formats == [ScanFormat.PNG, ScanFormat.JPEG, ScanFormat.DICOM]
    assert Scan.objects.filter(status=ScanStatus.COMPLETED).count() == 3
    assert AuditEvent.objects.filter(action=Action.SCAN_UPLOADED).count() == 3


def test_it_decides_the_type_by_content_not_name(bright_detector: None, upload: Any) -> None:
    png = factories.png_bytes(factories.text_image(160, 120))
    response = upload(("looks-like.dcm", png))
    assert response.status_code == 201
    assert response.json()[0]["format"] == "png"


def _truncated_png() -> bytes:
    data = factories.png_bytes(factories.text_image(160, 120))
    return data[: len(data) // 2]


def _png_with_zip_appended() -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("payload.txt", "hidden")
    return factories.png_bytes(factories.text_image(64, 64)) + archive.getvalue()


BAD_INPUTS = [
    ("empty.png", lambda: b"", 400, "empty_file"),
    ("notes.txt", lambda: b"patient name: jane doe\n" * 100, 400, "unsupported_format"),
    ("fake.png", lambda: b"GIF89a" + b"\x00" * 2000, 400, "unsupported_format"),
    ("polyglot.png", _png_with_zip_appended, 400, "unsupported_format"),
    ("half.png", _truncated_png, 400, "corrupt_image"),
    ("broken.jpg", lambda: b"\xff\xd8\xff\xe0" + b"\x13" * 3000, 400, "corrupt_image"),
    (
        "half.dcm",
        lambda: factories.dicom16_text()[0][:-5000],
        400,
        "corrupt_image",
    ),
]


@pytest.mark.parametrize(("name", "make", "status", "code"), BAD_INPUTS)
def test_it_refuses_bad_input_and_stores_nothing(
    upload: Any, settings: Any, name: str, make: Any, status: int, code: str
) -> None:
    response = upload((name, make()))

    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    _assert_nothing_stored(settings)


def test_it_refuses_a_file_over_the_size_limit_with_413(upload: Any, settings: Any) -> None:
    settings.UPLOAD_MAX_BYTES = 4096
    big = factories.png_bytes(factories.text_image(400, 300))
    assert len(big) > 4096

    response = upload(("big.png", big))

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    _assert_nothing_stored(settings)


def test_it_limits_size_by_kind_and_names_the_limit(
    upload: Any, settings: Any, bright_detector: None
) -> None:
    settings.UPLOAD_MAX_BYTES = 4096
    settings.UPLOAD_DICOM_MAX_BYTES = 1024 * 1024
    dicom, _pixels = factories.dicom16_text(frames=2)
    assert len(dicom) > 4096

    accepted = upload(("cine.dcm", dicom))
    assert accepted.status_code == 201, accepted.content

    png = upload(("big.png", factories.png_bytes(factories.text_image(400, 300))))
    assert png.status_code == 413
    assert "over the 4 KB limit for JPEG/PNG" in png.json()["error"]["message"]
    settings.UPLOAD_DICOM_MAX_BYTES = 8192
    too_big = upload(("cine.dcm", dicom))
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "file_too_large"
    assert "over the 8 KB limit for DICOM" in too_big.json()["error"]["message"]
    assert Scan.objects.count() == 1


def test_it_refuses_too_many_pixels(upload: Any, settings: Any) -> None:
    settings.UPLOAD_MAX_PIXELS = 100 * 100
    response = upload(("wide.png", factories.png_bytes(factories.text_image(200, 100))))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_pixels"
    _assert_nothing_stored(settings)


def test_it_refuses_the_whole_batch_when_one_file_is_bad(upload: Any, settings: Any) -> None:
    good = factories.png_bytes(factories.text_image(160, 120))
    response = upload(("good.png", good), ("bad.png", b""))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "empty_file"
    _assert_nothing_stored(settings)


def test_it_refuses_a_request_without_files(api: Any, technician: Any, patient: Any) -> None:
    api.force_authenticate(technician)
    response = api.post(f"/api/patients/{patient.id}/images/", {}, format="multipart")
    assert response.status_code == 400
    assert not Scan.objects.exists()


def test_it_404s_for_an_unknown_patient(upload: Any, settings: Any) -> None:
    png = factories.png_bytes(factories.text_image(64, 64))
    response = upload(("a.png", png), patient_id="NO-SUCH-PATIENT")
    assert response.status_code == 404
    _assert_nothing_stored(settings)


def test_it_leaves_no_row_when_the_storage_write_fails(
    upload: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(self: Any, name: str, content: Any) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(AtomicFileSystemStorage, "_save", disk_full)

    response = upload(("a.png", factories.png_bytes(factories.text_image(64, 64))))

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "storage_unavailable"
    _assert_nothing_stored(settings)


def test_it_removes_earlier_files_when_a_later_write_in_the_batch_fails(
    upload: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = AtomicFileSystemStorage._save
    calls = {"n": 0}

    def second_write_fails(self: Any, name: str, content: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(5, "Input/output error")
        return real_save(self, name, content)

    monkeypatch.setattr(AtomicFileSystemStorage, "_save", second_write_fails)
    png = factories.png_bytes(factories.text_image(64, 64))

    response = upload(("a.png", png), ("b.png", png))

    assert response.status_code == 503
    assert calls["n"] == 2
    _assert_nothing_stored(settings)


def test_it_removes_the_file_when_the_row_cannot_be_committed(
    upload: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def database_gone(**kwargs: Any) -> None:
        raise OperationalError("server closed the connection unexpectedly")

    # The audit append is the last write in the upload's transaction.
    monkeypatch.setattr("imaging.services.upload.audit_record", database_gone)

    response = upload(("a.png", factories.png_bytes(factories.text_image(64, 64))))

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"
    _assert_nothing_stored(settings)


def test_it_enqueues_processing_only_after_commit(
    api: Any,
    technician: Any,
    patient: Any,
    bright_detector: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    api.force_authenticate(technician)
    png = factories.png_bytes(factories.text_image(160, 120))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api.post(
            f"/api/patients/{patient.id}/images/",
            {"files": [as_upload("a.png", png)]},
            format="multipart",
        )
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    # Committed and answered, but nothing processed until the commit hook runs.
    assert response.status_code == 201 and scan.status == ScanStatus.UPLOADED
    # One hook queues the processing; the others (the metrics' audit observers) only count.
    processing = [c for c in callbacks if c.__module__ == "imaging.services.processing"]
    assert len(processing) == 1

    processing[0]()

    scan.refresh_from_db()
    assert scan.status == ScanStatus.COMPLETED


def test_atomic_storage_never_shows_a_partial_file(settings: Any, tmp_path: Path) -> None:
    storage = AtomicFileSystemStorage(location=tmp_path / "store")

    class Exploding:
        """Content whose second chunk fails: the write dies half-way."""

        def seek(self, position: int) -> None:
            pass

        def chunks(self) -> Any:
            yield b"first half"
            raise OSError(5, "Input/output error")

    with pytest.raises(OSError):
        storage._save("scans/x/original.enc", Exploding())

    leftovers = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert leftovers == []


def test_atomic_storage_keeps_both_files_on_a_name_clash(tmp_path: Path) -> None:
    from django.core.files.base import ContentFile

    storage = AtomicFileSystemStorage(location=tmp_path / "store")
    first = storage.save("a/b.bin", ContentFile(b"one"))
    second = storage.save("a/b.bin", ContentFile(b"two"))

    assert first != second
    assert storage.open(first).read() == b"one"
    assert storage.open(second).read() == b"two"


def test_it_creates_a_patient_with_images_in_one_request(
    api: Any, technician: Any, bright_detector: None, django_capture_on_commit_callbacks: Any
) -> None:
    png = factories.png_bytes(factories.text_image(200, 150, seed=3))
    api.force_authenticate(technician)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/patients/",
            {"id": "MRN-7777", "name": "New Patient", "images": [as_upload("a.png", png)]},
            format="multipart",
        )

    assert response.status_code == 201, response.content
    scan = Scan.objects.get(patient_id="MRN-7777")
    assert scan.status == ScanStatus.COMPLETED and scan.uploaded_by == technician
    assert AuditEvent.objects.filter(action=Action.SCAN_UPLOADED, actor=technician).count() == 1


def test_a_refused_image_creates_no_patient(api: Any, technician: Any, settings: Any) -> None:
    api.force_authenticate(technician)
    response = api.post(
        "/api/patients/",
        {"id": "MRN-8888", "name": "Nobody", "images": [as_upload("a.png", b"not an image")]},
        format="multipart",
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_format"
    assert not Patient.objects.filter(pk="MRN-8888").exists()
    _assert_nothing_stored(settings)
