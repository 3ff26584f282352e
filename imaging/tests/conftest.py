"""Imaging fixtures: a patient, uploads through the API, completed scans, a real worker.

Without REDIS_URL, Celery runs tasks in-process right after commit (settings). With it (CI),
every test except those marked `celery` still runs in-process (forced eager here), and the
`celery_worker` fixture starts a real worker for the marked ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from imaging.models import Scan, ScanStatus
from imaging.tests import factories
from medimg.celery import app as celery_app
from patients.models import Patient

ROOT = Path(__file__).resolve().parents[2]
BRIGHT_DETECTOR = "imaging.tests.factories.bright_text_detector"


@pytest.fixture(autouse=True)
def _tasks_in_process(request: pytest.FixtureRequest) -> Iterator[None]:
    """In-process tasks for every test that does not ask for a real worker."""
    eager = request.node.get_closest_marker("celery") is None
    before = (celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates)
    celery_app.conf.task_always_eager = eager
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = before


@pytest.fixture
def bright_detector(settings: Any) -> None:
    """The classical detector for synthetic images (see factories)."""
    settings.IMAGING_DETECTOR = BRIGHT_DETECTOR


@pytest.fixture
def patient(db: Any) -> Patient:
    return Patient.objects.create(id="MRN-0001", name="Jane Doe", age=54)


@pytest.fixture
def other_patient(db: Any) -> Patient:
    return Patient.objects.create(id="MRN-0002", name="John Roe", age=61)


def as_upload(name: str, data: bytes, content_type: str = "application/octet-stream") -> Any:
    return SimpleUploadedFile(name, data, content_type=content_type)


def media_files(settings: Any) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def upload(
    api: Any, technician: Any, patient: Patient, django_capture_on_commit_callbacks: Any
) -> Any:
    """POST files to the patient's images endpoint as the technician; returns the response.

    The test's transaction never commits, so the on-commit callbacks (the processing task)
    are run as a commit would run them.
    """

    def _upload(*files: tuple[str, bytes], patient_id: str | None = None) -> Any:
        api.force_authenticate(technician)
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post(
                f"/api/patients/{patient_id or patient.id}/images/",
                {"files": [as_upload(name, data) for name, data in files]},
                format="multipart",
            )
        api.force_authenticate(None)
        return response

    return _upload


@pytest.fixture
def text_png() -> tuple[bytes, Any]:
    pixels = factories.text_image(320, 240)
    return factories.png_bytes(pixels), pixels


@pytest.fixture
def completed_scan(bright_detector: None, upload: Any, text_png: tuple[bytes, Any]) -> Scan:
    """A synthetic PNG with burned-in text, uploaded and processed."""
    response = upload(("scan.png", text_png[0]))
    assert response.status_code == 201, response.content
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert scan.status == ScanStatus.COMPLETED, scan.failure_reason
    assert scan.regions.count() >= 2
    return scan


@pytest.fixture
def completed_dicom_upload(bright_detector: None, upload: Any) -> tuple[Scan, Any, bytes]:
    """A 16-bit, two-frame DICOM with burned-in text, uploaded and processed:
    (scan, its pixels, the uploaded bytes)."""
    data, pixels = factories.dicom16_text(frames=2)
    response = upload(("scan.dcm", data))
    assert response.status_code == 201, response.content
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert scan.status == ScanStatus.COMPLETED, scan.failure_reason
    return scan, pixels, data


@pytest.fixture
def completed_dicom(completed_dicom_upload: tuple[Scan, Any, bytes]) -> tuple[Scan, Any]:
    """The same DICOM scan: (scan, its pixels)."""
    scan, pixels, _ = completed_dicom_upload
    return scan, pixels


# --- A real Celery worker -------------------------------------------------------------------


def _database_url(settings_dict: dict[str, Any]) -> str:
    user = quote(str(settings_dict.get("USER") or ""))
    password = quote(str(settings_dict.get("PASSWORD") or ""))
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{settings_dict['NAME']}"


class Worker:
    """A `celery -A medimg worker` subprocess pointed at this test's database and folders."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.hostname = ""

    def start(self, timeout: float = 90.0) -> None:
        self.hostname = f"medimg-test-{uuid.uuid4().hex[:8]}@localhost"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "medimg",
                "worker",
                "--pool=solo",
                "--concurrency=1",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                # Every queue of settings.CELERY_TASK_ROUTES, as one worker.
                "-Q",
                "celery,detect,segment",
                "-n",
                self.hostname,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited at start:\n{self.log()}")
            if celery_app.control.ping(destination=[self.hostname], timeout=1.0):
                return
        self.stop()
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: what the OOM killer or a lost machine does, no cleanup at all."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture
def celery_worker(transactional_db: Any, settings: Any, tmp_path: Path) -> Iterator[Worker]:
    """A real worker for `@pytest.mark.celery` tests (needs REDIS_URL and PostgreSQL)."""
    from django.db import connection

    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.skip("REDIS_URL is not set: no broker for a real Celery worker")
    if connection.vendor != "postgresql":
        pytest.skip("a separate worker process needs PostgreSQL (DATABASE_URL)")
    env = dict(os.environ)
    env.update(
        DATABASE_URL=_database_url(connection.settings_dict),
        REDIS_URL=redis_url,
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        MEDIMG_KEY_DIR=str(settings.KEY_DIR),
        IMAGING_DETECTOR=settings.IMAGING_DETECTOR,
        DJANGO_SETTINGS_MODULE="medimg.settings",
        # A failed task must not wait minutes for its backoff in a test.
        IMAGING_TASK_MAX_RETRIES="1",
    )
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def wait_for_status(scan_id: int, statuses: set[str], timeout: float = 120.0) -> Scan:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scan = Scan.objects.get(pk=scan_id)
        if scan.status in statuses:
            return scan
        time.sleep(0.2)
    raise AssertionError(f"scan {scan_id} still {Scan.objects.get(pk=scan_id).status}")
