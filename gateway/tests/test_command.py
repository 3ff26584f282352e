"""`manage.py dicom_listener` as operators run it: its own process, its own database."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.tests.conftest import LISTENER_AET, free_port, need

ROOT = Path(__file__).resolve().parents[2]


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _echo(port: int, aet: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need("echoscu"), "-aet", aet, "-aec", LISTENER_AET, "127.0.0.1", str(port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_listener_command_seeds_peers_and_answers(tmp_path: Path) -> None:
    need("echoscu")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL") and not key.startswith(("DICOM_", "PYTEST"))
    }
    env.update(
        SQLITE_PATH=str(tmp_path / "db.sqlite3"),
        MEDIMG_KEY_DIR=str(tmp_path / "keys"),
        MEDIA_ROOT=str(tmp_path / "media"),
        MEDIMG_PASSWORD="gateway-test-password-4471",
        DICOM_PEERS="ECHOER@127.0.0.1",
        DICOM_GATEWAY_USER="gateway-technician",
    )
    assert _manage(env, "migrate", "--noinput").returncode == 0
    made = _manage(env, "adduser", "gateway-technician", "--role", "technician")
    assert made.returncode == 0, made.stderr
    mismatched = _manage(env, "dicom_listener", "--tls-cert", str(tmp_path / "c.pem"))
    assert mismatched.returncode != 0
    assert "--tls-cert and --tls-key go together" in mismatched.stderr

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "dicom_listener", "--host", "127.0.0.1",
         "--port", str(port), "--aet", LISTENER_AET],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the listener did not open its port")
        assert _echo(port, "ECHOER").returncode == 0
        refused = _echo(port, "STRANGER")
        assert refused.returncode != 0
        assert "Association Rejected" in refused.stdout + refused.stderr
        # The heartbeat the statistics page reads: written at start, not stopped.
        assert _heartbeats(tmp_path) == [(f"{LISTENER_AET}@127.0.0.1:{port}", process.pid, None)]
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "1 peer(s) from DICOM_PEERS" in output
    # SIGTERM (systemd's stop) ends it cleanly, marked stopped.
    assert process.returncode == 0, output
    assert "DICOM listener stopped" in output
    ((name, pid, stopped_at),) = _heartbeats(tmp_path)
    assert stopped_at is not None


def _heartbeats(tmp_path: Path) -> list[tuple[str, int, str | None]]:
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        return db.execute("SELECT name, pid, stopped_at FROM gateway_listenerheartbeat").fetchall()
