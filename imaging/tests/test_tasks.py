"""The processing task: idempotent, retried when transient, failed with a reason otherwise."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import pytest
from django.db import OperationalError
from PIL import Image

from audit.models import Action, AuditEvent, Outcome
from imaging.jobs import processing as jobs
from imaging.jobs.processing import scan_process
from imaging.models import FailureReason, Fingerprint, Region, Scan, ScanStatus
from imaging.services import processing as services
from imaging.services import upload
from imaging.tasks import process_scan
from imaging.tests import factories
from imaging.tests.conftest import as_upload, media_files, wait_for_status
from imaging.vault import keys as vault_keys
from imaging.vault.keys import unwrap_data_key
from imaging.vault.pixels import scan_restore_pixels
from imaging.vault.storage import storage_read

pytestmark = pytest.mark.django_db


@pytest.fixture
def uploaded_scan(
    bright_detector: None,
    technician: Any,
    patient: Any,
    text_png: tuple[bytes, np.ndarray],
    django_capture_on_commit_callbacks: Any,
) -> Scan:
    """A stored upload whose processing has not run (its commit hook is dropped)."""
    with django_capture_on_commit_callbacks(execute=False):
        (scan,) = upload.scan_upload(
            patient=patient, uploads=[as_upload("a.png", text_png[0])], uploaded_by=technician
        )
    assert scan.status == ScanStatus.UPLOADED
    return scan


def _regions(scan: Scan) -> list[tuple[int, tuple[int, int, int, int]]]:
    return [(r.index, r.box) for r in Region.objects.filter(scan=scan).order_by("index")]


def test_it_processes_a_scan_once_however_often_it_runs(
    uploaded_scan: Scan, text_png: tuple[bytes, np.ndarray]
) -> None:
    process_scan.delay(scan_id=uploaded_scan.pk)
    first = _regions(uploaded_scan)
    process_scan.delay(scan_id=uploaded_scan.pk)
    scan_process(scan_id=uploaded_scan.pk)

    assert len(first) >= 2 and _regions(uploaded_scan) == first
    assert AuditEvent.objects.filter(action=Action.SCAN_PROCESSED).count() == 1
    uploaded_scan.refresh_from_db()
    assert uploaded_scan.status == ScanStatus.COMPLETED and uploaded_scan.attempts == 1
    assert np.array_equal(scan_restore_pixels(scan=uploaded_scan), text_png[1][np.newaxis])


def test_a_run_that_dies_after_writing_regions_reruns_and_completes_once(
    uploaded_scan: Scan, monkeypatch: pytest.MonkeyPatch, text_png: tuple[bytes, np.ndarray]
) -> None:
    real_create = Fingerprint.objects.create

    def die(**kwargs: Any) -> Any:
        # The regions are written by now; the process dies before the transaction ends.
        assert Region.objects.filter(scan_id=uploaded_scan.pk).exists()
        raise SystemExit("worker killed")

    monkeypatch.setattr(Fingerprint.objects, "create", die)
    with pytest.raises(SystemExit):
        scan_process(scan_id=uploaded_scan.pk)

    uploaded_scan.refresh_from_db()
    assert uploaded_scan.status == ScanStatus.PROCESSING
    assert not Region.objects.filter(scan=uploaded_scan).exists()

    monkeypatch.setattr(Fingerprint.objects, "create", real_create)
    scan_process(scan_id=uploaded_scan.pk)

    uploaded_scan.refresh_from_db()
    assert uploaded_scan.status == ScanStatus.COMPLETED and uploaded_scan.attempts == 2
    indexes = [i for i, _ in _regions(uploaded_scan)]
    assert indexes == list(range(len(indexes))) and indexes
    assert AuditEvent.objects.filter(action=Action.SCAN_PROCESSED).count() == 1
    assert np.array_equal(scan_restore_pixels(scan=uploaded_scan), text_png[1][np.newaxis])


def test_leftovers_of_an_interrupted_run_are_replaced_not_added_to(
    uploaded_scan: Scan, settings: Any
) -> None:
    # What a crashed older worker could have left: a stray region, status "processing".
    Region.objects.create(
        scan=uploaded_scan,
        index=0,
        label="phi_text",
        confidence=0.5,
        x1=0,
        y1=0,
        x2=4,
        y2=4,
        ciphertext=b"stale",
        dtype="uint8",
    )
    Scan.objects.filter(pk=uploaded_scan.pk).update(status=ScanStatus.PROCESSING)

    scan_process(scan_id=uploaded_scan.pk)

    regions = Region.objects.filter(scan=uploaded_scan)
    assert not regions.filter(ciphertext=b"stale").exists()
    assert list(regions.values_list("index", flat=True)) == list(range(regions.count()))


def test_a_rerun_removes_the_previous_runs_files(
    uploaded_scan: Scan, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        scan_process(scan_id=uploaded_scan.pk)
    files_after_first = media_files(settings)
    Scan.objects.filter(pk=uploaded_scan.pk).update(status=ScanStatus.FAILED)

    with django_capture_on_commit_callbacks(execute=True):
        services.scans_reprocess(scan_ids=[uploaded_scan.pk])

    uploaded_scan.refresh_from_db()
    assert uploaded_scan.status == ScanStatus.COMPLETED
    files = media_files(settings)
    assert len(files) == len(files_after_first) and files != files_after_first


def test_a_transient_storage_error_is_retried(
    uploaded_scan: Scan, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_read = vault_keys.storage_read
    calls = {"n": 0}

    def flaky_read(name: str) -> bytes:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(5, "Input/output error")
        return real_read(name)

    monkeypatch.setattr(vault_keys, "storage_read", flaky_read)

    process_scan.delay(scan_id=uploaded_scan.pk)

    uploaded_scan.refresh_from_db()
    assert uploaded_scan.status == ScanStatus.COMPLETED
    assert uploaded_scan.attempts == 2


def test_it_marks_the_scan_failed_when_retries_run_out(
    uploaded_scan: Scan, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_disk(name: str) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(vault_keys, "storage_read", broken_disk)

    with pytest.raises(OSError):
        process_scan.delay(scan_id=uploaded_scan.pk)

    uploaded_scan.refresh_from_db()
    assert uploaded_scan.status == ScanStatus.FAILED
    assert uploaded_scan.failure_reason == FailureReason.STORAGE_FAILED
    assert uploaded_scan.attempts == process_scan.max_retries + 1
    event = AuditEvent.objects.get(action=Action.SCAN_FAILED)
    assert event.outcome == Outcome.FAILURE and event.details["reason"] == "storage_failed"


def test_a_database_outage_is_retried(uploaded_scan: Scan, monkeypatch: pytest.MonkeyPatch) -> None:
    real = jobs._scan_complete
    calls = {"n": 0}

    def flaky(**kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("could not connect to server")
        return real(**kwargs)

    monkeypatch.setattr(jobs, "_scan_complete", flaky)

    process_scan.delay(scan_id=uploaded_scan.pk)

    uploaded_scan.refresh_from_db()
    assert uploaded_scan.status == ScanStatus.COMPLETED and calls["n"] == 2


def test_an_undecryptable_upload_fails_for_good_with_a_reason(uploaded_scan: Scan) -> None:
    wrapped = bytearray(uploaded_scan.wrapped_key)
    wrapped[-1] ^= 0xFF
    Scan.objects.filter(pk=uploaded_scan.pk).update(wrapped_key=bytes(wrapped))

    process_scan.delay(scan_id=uploaded_scan.pk)

    uploaded_scan.refresh_from_db()
    assert uploaded_scan.status == ScanStatus.FAILED
    assert uploaded_scan.failure_reason == FailureReason.DECRYPT_FAILED
    assert uploaded_scan.attempts == 1  # permanent: not retried
    assert AuditEvent.objects.filter(action=Action.SCAN_FAILED).count() == 1


@pytest.mark.parametrize("detector", ["crashing_detector", "weightless_detector"])
def test_a_detector_failure_fails_the_scan_without_retries(
    uploaded_scan: Scan, settings: Any, detector: str
) -> None:
    settings.IMAGING_DETECTOR = f"imaging.tests.test_tasks.{detector}"

    process_scan.delay(scan_id=uploaded_scan.pk)

    uploaded_scan.refresh_from_db()
    assert uploaded_scan.status == ScanStatus.FAILED
    assert uploaded_scan.failure_reason == FailureReason.DETECTION_FAILED
    assert uploaded_scan.attempts == 1
    assert not Region.objects.filter(scan=uploaded_scan).exists()


def weightless_detector(frame: np.ndarray) -> list[Any]:
    # FileNotFoundError is an OSError, but no retry brings missing weights back.
    raise FileNotFoundError("detector weights not found: model/detector/best.onnx")


def test_an_unexpected_error_fails_the_scan_and_is_raised(
    uploaded_scan: Scan, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug")

    # The last step that writes the run's files (frames are written as they are processed).
    monkeypatch.setattr(jobs._OutputWriter, "finish", bug)

    with pytest.raises(KeyError):
        process_scan.delay(scan_id=uploaded_scan.pk)

    uploaded_scan.refresh_from_db()
    assert uploaded_scan.status == ScanStatus.FAILED
    assert uploaded_scan.failure_reason == FailureReason.PROCESSING_ERROR


def crashing_detector(frame: np.ndarray) -> list[Any]:
    raise RuntimeError("CUDA error: device-side assert triggered")


@pytest.mark.parametrize("rounds", [0, 2])
def test_it_flags_a_scan_whose_redacted_image_still_shows_text(
    uploaded_scan: Scan, settings: Any, text_png: tuple[bytes, np.ndarray], rounds: int
) -> None:
    # A detector that sees only one line at a time: the verification pass finds the rest.
    settings.IMAGING_DETECTOR = "imaging.tests.test_tasks.one_line_detector"
    settings.IMAGING_VERIFY_ROUNDS = rounds

    scan_process(scan_id=uploaded_scan.pk)

    uploaded_scan.refresh_from_db()
    assert uploaded_scan.status == ScanStatus.COMPLETED
    assert uploaded_scan.needs_review is True
    metrics = uploaded_scan.metrics
    assert metrics["residual_detections"] == 1
    redacted = np.asarray(
        Image.open(io.BytesIO(storage_read(uploaded_scan.frame_paths["redacted"][0])))
    )
    ink_left = int((redacted.min(axis=2) >= factories.INK_THRESHOLD).sum())
    if rounds:
        # The second line was sealed and filled in a verification round.
        assert metrics["verification_rounds"] == 1
        assert metrics["residual_after_verification"] == 0
        assert uploaded_scan.regions.count() == 2 and ink_left == 0
    else:
        assert metrics["residual_after_verification"] == 1
        assert uploaded_scan.regions.count() == 1 and ink_left > 0
    # Overlapping or not, the regions give back exactly the upload.
    assert np.array_equal(scan_restore_pixels(scan=uploaded_scan)[0], text_png[1])


def one_line_detector(frame: np.ndarray) -> list[Any]:
    return factories.bright_text_detector(frame)[:1]


def test_only_the_configured_classes_are_redacted(uploaded_scan: Scan, settings: Any) -> None:
    settings.IMAGING_REDACT_CLASSES = ["barcode"]

    scan_process(scan_id=uploaded_scan.pk)

    uploaded_scan.refresh_from_db()
    assert uploaded_scan.status == ScanStatus.COMPLETED
    assert not uploaded_scan.regions.exists()
    assert uploaded_scan.needs_review is False


def test_requeue_picks_up_a_stuck_scan(uploaded_scan: Scan) -> None:
    Scan.objects.filter(pk=uploaded_scan.pk).update(status=ScanStatus.PROCESSING)

    ids = services.scans_requeue(older_than_seconds=0)

    assert ids == [uploaded_scan.pk]
    uploaded_scan.refresh_from_db()
    assert uploaded_scan.status == ScanStatus.COMPLETED


# --- A real Celery worker (CI: PostgreSQL and Redis) ----------------------------------------


@pytest.mark.celery
@pytest.mark.slow
def test_a_real_worker_processes_an_upload(
    bright_detector: None,
    celery_worker: Any,
    api: Any,
    technician: Any,
    doctor: Any,
    patient: Any,
    text_png: tuple[bytes, np.ndarray],
) -> None:
    api.force_authenticate(technician)
    response = api.post(
        f"/api/patients/{patient.id}/images/",
        {"files": [as_upload("a.png", text_png[0])]},
        format="multipart",
    )
    assert response.status_code == 201

    scan = wait_for_status(response.json()[0]["id"], {ScanStatus.COMPLETED, ScanStatus.FAILED})

    assert scan.status == ScanStatus.COMPLETED, celery_worker.log()
    assert scan.regions.count() >= 2
    assert np.array_equal(scan_restore_pixels(scan=scan), text_png[1][np.newaxis])


@pytest.mark.celery
@pytest.mark.slow
def test_a_worker_killed_mid_task_is_rerun_and_completes_once(
    settings: Any,
    celery_worker: Any,
    api: Any,
    technician: Any,
    patient: Any,
    text_png: tuple[bytes, np.ndarray],
) -> None:
    # The worker was started with the slow detector (set below before it is restarted).
    celery_worker.stop()
    settings.IMAGING_DETECTOR = "imaging.tests.factories.slow_bright_text_detector"
    celery_worker.env["IMAGING_DETECTOR"] = settings.IMAGING_DETECTOR
    celery_worker.start()
    api.force_authenticate(technician)
    response = api.post(
        f"/api/patients/{patient.id}/images/",
        {"files": [as_upload("a.png", text_png[0])]},
        format="multipart",
    )
    scan_id = response.json()[0]["id"]
    wait_for_status(scan_id, {ScanStatus.PROCESSING}, timeout=60)
    time.sleep(0.5)
    celery_worker.kill()
    assert Scan.objects.get(pk=scan_id).status == ScanStatus.PROCESSING

    # A fresh worker, and the periodic requeue that finds the stuck scan.
    celery_worker.start()
    services.scans_requeue(older_than_seconds=0)
    scan = wait_for_status(scan_id, {ScanStatus.COMPLETED, ScanStatus.FAILED})

    assert scan.status == ScanStatus.COMPLETED, celery_worker.log()
    assert scan.attempts == 2
    assert AuditEvent.objects.filter(action=Action.SCAN_PROCESSED).count() == 1
    indexes = list(scan.regions.values_list("index", flat=True))
    assert indexes == list(range(len(indexes))) and indexes
    assert np.array_equal(scan_restore_pixels(scan=scan), text_png[1][np.newaxis])
    assert unwrap_data_key(bytes(scan.wrapped_key), scan_ref=str(scan.uid))
