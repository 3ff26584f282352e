"""Gateway fixtures: the listener in-process on a free port, dcmtk and Orthanc as peers.

The listener runs in threads of this process (pynetdicom: one per association), so it shares
the test database; the tests that use it are transactional (`transaction=True`), since the
listener's threads cannot see an uncommitted test transaction. Celery tasks run in-process
(eagerly) here, as imaging's tests do without a real worker. A test whose binary is missing
is skipped, naming it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.listener import listener_start
from gateway.models import DestinationKind, DicomPeer, ForwardDestination, ForwardSend, SendStatus
from gateway.tests.dicom_files import study_files
from imaging.models import Scan
from medimg.celery import app as celery_app

LISTENER_AET = "MEDIMG"
DETECTOR = "imaging.tests.factories.bright_text_detector"
ORTHANC_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (Debian package: see .ci/run)")
    return path


@pytest.fixture(autouse=True)
def _tasks_in_process() -> Iterator[None]:
    before = (celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates)
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = before


@pytest.fixture(autouse=True)
def _gateway_settings(settings: Any) -> None:
    settings.IMAGING_DETECTOR = DETECTOR
    settings.DICOM_FORWARD_TO = ""
    settings.DICOM_PEERS = ""
    settings.DICOM_FORWARD_TIMEOUT = 5


@pytest.fixture
def listener(transactional_db: Any) -> Iterator[int]:
    """The listener on a free port; yields the port."""
    port = free_port()
    server = listener_start(host="127.0.0.1", port=port, ae_title=LISTENER_AET)
    try:
        yield port
    finally:
        server.shutdown()


@pytest.fixture
def peer(transactional_db: Any, technician: Any) -> DicomPeer:
    """dcmtk's tools on this machine, filed as the technician."""
    return DicomPeer.objects.create(
        ae_title="MODALITY1", host="127.0.0.1", upload_user=technician, description="test"
    )


def storescu(
    port: int,
    *files: Path,
    aet: str = "MODALITY1",
    called: str = LISTENER_AET,
    options: tuple[str, ...] = (),
) -> Any:
    """Send files with dcmtk's storescu; returns the completed process (stdout+stderr)."""
    return subprocess.run(
        [need("storescu"), "-v", *options, "-aet", aet, "-aec", called, "127.0.0.1", str(port)]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- Orthanc --------------------------------------------------------------------------------


class Orthanc:
    """Debian's Orthanc with the DICOMweb plugin, on free ports, in a temporary folder."""

    def __init__(self, root: Path, *, listener_port: int | None) -> None:
        self.root = root
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.aet = "ORTHANC"
        self.process: subprocess.Popen[bytes] | None = None
        modalities = {}
        if listener_port is not None:
            modalities["medimg"] = [LISTENER_AET, "127.0.0.1", listener_port]
        config = {
            "Name": "medimg-test-orthanc",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "DicomCheckCalledAet": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomModalities": modalities,
            "Plugins": [str(ORTHANC_PLUGIN)] if ORTHANC_PLUGIN.exists() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StableAge": 1,
            "HttpTimeout": 30,
            "ConcurrentJobs": 1,
        }
        root.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.log_path = root / "orthanc.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30.0) -> None:
        binary = need("Orthanc")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [binary, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/system", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc not ready:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)

    def get(self, path: str) -> Any:
        response = requests.get(f"{self.url}{path}", timeout=30)
        response.raise_for_status()
        return response

    def instances(self) -> list[str]:
        return list(self.get("/instances").json())

    def destination(self) -> ForwardDestination:
        return ForwardDestination.objects.create(
            name="research-orthanc",
            kind=DestinationKind.DIMSE,
            ae_title=self.aet,
            host="127.0.0.1",
            port=self.dicom_port,
        )


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Any]:
    need("Orthanc")
    started: list[Orthanc] = []

    def make(*, listener_port: int | None = None, start: bool = True) -> Orthanc:
        server = Orthanc(tmp_path / f"orthanc-{len(started)}", listener_port=listener_port)
        started.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in started:
        server.stop()


# --- A forwarded instance (the pages' cards) -------------------------------------------------


@pytest.fixture
def forwarded(listener: int, peer: Any, orthanc_factory: Any, tmp_path: Path) -> Scan:
    """One instance pushed by storescu, processed, sent to Orthanc and not (yet) to a
    destination that is down."""
    orthanc = orthanc_factory()
    orthanc.destination()
    ForwardDestination.objects.create(
        name="archive-down",
        kind=DestinationKind.DIMSE,
        ae_title="ARCHIVE",
        host="127.0.0.1",
        port=free_port(),  # Nothing listens there.
    )
    study = study_files(tmp_path / "study", count=1)
    result = storescu(listener, *study.files)
    assert result.returncode == 0, result.stdout + result.stderr
    statuses = dict(ForwardSend.objects.values_list("destination__name", "status"))
    assert statuses == {"research-orthanc": SendStatus.SENT, "archive-down": SendStatus.RETRYING}
    return Scan.objects.get()
