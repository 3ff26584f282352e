"""`medimg-client` against a live server: the installed console script, run as a subprocess,
logs in, uploads sealed, waits, and a doctor restores sealed to a file that must hold exactly
the uploaded pixels."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from audit.models import Action, AuditEvent
from imaging.models import Scan
from imaging.tests import factories
from patients.models import Patient

SCRIPT = Path(sys.executable).with_name("medimg-client")
PASSWORD = "correct-horse-battery-staple-42"  # conftest's personas


@pytest.fixture
def server(serial_live_server: Any, eager_tasks: None, settings: Any) -> Any:
    """The live server with in-process tasks and the classical detector for synthetic text,
    requiring sealed transfers as production does (the client always seals, with a nonce)."""
    settings.IMAGING_DETECTOR = "imaging.tests.factories.bright_text_detector"
    settings.MEDIMG_REQUIRE_SEALED_TRANSFERS = True
    return serial_live_server


def _client(server: Any, session: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.exists(), f"{SCRIPT} missing: `make install` installs the project (pip -e .)"
    env = {**os.environ, "MEDIMG_PASSWORD": PASSWORD}
    return subprocess.run(
        [str(SCRIPT), "--url", server.url, "--session", str(session), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.parametrize("group", ["x25519", "ffdhe3072"])
def test_it_round_trips_a_sealed_upload_and_restore(
    server: Any, technician: Any, doctor: Any, tmp_path: Path, group: str
) -> None:
    patient = Patient.objects.create(id="MRN-CLI-1", name="Ada Lovelace", created_by=technician)
    pixels = factories.text_image(160, 120, seed=3)
    original = tmp_path / "scan.png"
    original.write_bytes(factories.png_bytes(pixels))
    tech_session, doc_session = tmp_path / "tech.json", tmp_path / "doc.json"

    login = _client(server, tech_session, "login", "--username", technician.username)
    assert login.returncode == 0, login.stderr
    assert oct(tech_session.stat().st_mode & 0o777) == "0o600"
    up = _client(
        server,
        tech_session,
        "--group",
        group,
        "upload",
        "--patient",
        patient.id,
        "--wait",
        str(original),
    )
    assert up.returncode == 0, up.stderr
    scan = Scan.objects.get(patient=patient)
    assert up.stdout.strip() == f"scan {scan.pk} completed"

    assert _client(server, doc_session, "login", "--username", doctor.username).returncode == 0
    restored = tmp_path / "restored.png"
    down = _client(
        server,
        doc_session,
        "--group",
        group,
        "restore",
        "--scan",
        str(scan.pk),
        "--out",
        str(restored),
    )

    assert down.returncode == 0, down.stderr
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(restored.read_bytes()))), pixels)
    # Both transfers went through a session key agreed for this user and group.
    exchanges = AuditEvent.objects.filter(action=Action.KEY_EXCHANGED)
    assert {e.details["group"] for e in exchanges} == {group}
    assert {e.actor_id for e in exchanges} == {technician.pk, doctor.pk}


def test_it_reports_a_refusal_without_a_traceback(
    server: Any, technician: Any, tmp_path: Path
) -> None:
    session = tmp_path / "tech.json"
    assert _client(server, session, "login", "--username", technician.username).returncode == 0

    refused = _client(server, session, "restore", "--scan", "1", "--out", str(tmp_path / "x"))

    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert "403" in refused.stderr
    assert not (tmp_path / "x").exists()
