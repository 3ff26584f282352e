"""`manage.py rotate_keys`: re-wrap every data key under a new KEK, drop the old KEK, and every
restore still returns the exact original."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from audit.models import Action, AuditEvent, Outcome
from engine.errors import CryptoError
from imaging.models import Scan
from imaging.vault.pixels import scan_restore_pixels
from imaging.vault.storage import storage_read

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
K1 = secrets.token_hex(32)
K2 = secrets.token_hex(32)


@pytest.fixture
def under_k1(settings: Any) -> None:
    settings.MEDIMG_KEKS = f"k1:{K1}"
    settings.MEDIMG_KEK_CURRENT = "k1"


def _use(settings: Any, keks: str, current: str) -> None:
    settings.MEDIMG_KEKS = keks
    settings.MEDIMG_KEK_CURRENT = current


def _rotate(*args: str) -> str:
    out = io.StringIO()
    call_command("rotate_keys", *args, stdout=out)
    return out.getvalue()


def _snapshot(scan: Scan) -> dict[str, Any]:
    return {
        "regions": [bytes(r.ciphertext) for r in scan.regions.order_by("index")],
        "original": storage_read(scan.original_path),
        "redacted_pixels": storage_read(scan.redacted_pixels_path),
    }


def test_it_rotates_to_a_new_kek_and_restores_after_the_old_one_is_gone(
    under_k1: None,
    settings: Any,
    api: Any,
    doctor: Any,
    completed_scan: Scan,
    completed_dicom: tuple[Scan, np.ndarray],
    text_png: tuple[bytes, np.ndarray],
) -> None:
    dicom_scan, dicom_pixels = completed_dicom
    scans = [completed_scan, dicom_scan]
    assert {s.key_id for s in Scan.objects.all()} == {"k1"}
    before = {s.pk: _snapshot(s) for s in scans}
    wrapped_before = {s.pk: bytes(s.wrapped_key) for s in scans}

    _use(settings, f"k1:{K1},k2:{K2}", "k2")
    output = _rotate("--batch-size", "1")

    assert "rotated 2, already current 0, failed 0" in output
    assert "Every scan is wrapped under the current KEK." in output
    for scan in Scan.objects.all():
        assert scan.key_id == "k2"
        assert bytes(scan.wrapped_key) != wrapped_before[scan.pk]
        # Only the wrapped key changed: blobs and files are bound to the data key.
        assert _snapshot(scan) == before[scan.pk]

    _use(settings, f"k2:{K2}", "k2")
    completed_scan.refresh_from_db()
    dicom_scan.refresh_from_db()
    assert np.array_equal(scan_restore_pixels(scan=completed_scan)[0], text_png[1])
    assert np.array_equal(scan_restore_pixels(scan=dicom_scan), dicom_pixels)
    api.force_authenticate(doctor)
    response = api.post(f"/api/images/{completed_scan.pk}/restore/", {}, format="json")
    assert response.status_code == 200
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(response.content))), text_png[1])

    event = AuditEvent.objects.get(action=Action.KEYS_ROTATED)
    assert event.outcome == Outcome.SUCCESS
    assert event.details["kek"] == "k2" and event.details["rotated"] == 2
    assert event.details["left_under_other_keks"] == {}


def test_it_cannot_restore_without_the_old_kek_if_nothing_was_rotated(
    under_k1: None, settings: Any, completed_scan: Scan
) -> None:
    # The control for the test above: dropping k1 without rotating loses the scan.

    _use(settings, f"k2:{K2}", "k2")

    with pytest.raises(CryptoError):
        scan_restore_pixels(scan=completed_scan)


def test_it_is_idempotent(under_k1: None, settings: Any, completed_scan: Scan) -> None:
    _use(settings, f"k1:{K1},k2:{K2}", "k2")
    _rotate()
    wrapped = bytes(Scan.objects.get(pk=completed_scan.pk).wrapped_key)

    output = _rotate()

    assert "rotated 0, already current 0, failed 0" in output
    assert bytes(Scan.objects.get(pk=completed_scan.pk).wrapped_key) == wrapped
    assert AuditEvent.objects.filter(action=Action.KEYS_ROTATED).count() == 2


def test_it_reports_scans_whose_kek_is_missing_and_changes_nothing_for_them(
    under_k1: None, settings: Any, completed_scan: Scan
) -> None:
    wrapped = bytes(completed_scan.wrapped_key)
    _use(settings, f"k2:{K2}", "k2")  # k1 removed too early.

    with pytest.raises(CommandError, match="could not be re-wrapped"):
        _rotate()

    completed_scan.refresh_from_db()
    assert completed_scan.key_id == "k1" and bytes(completed_scan.wrapped_key) == wrapped
    event = AuditEvent.objects.get(action=Action.KEYS_ROTATED)
    assert event.outcome == Outcome.FAILURE
    assert event.details["failed_scan_ids"] == [completed_scan.pk]
    assert event.details["left_under_other_keks"] == {"k1": 1}
    # Put k1 back and the same command finishes the job.
    _use(settings, f"k1:{K1},k2:{K2}", "k2")
    assert "rotated 1" in _rotate()
    _use(settings, f"k2:{K2}", "k2")
    completed_scan.refresh_from_db()
    assert scan_restore_pixels(scan=completed_scan).size > 0


def test_it_refuses_a_batch_size_below_one() -> None:
    with pytest.raises(CommandError):
        _rotate("--batch-size", "0")


def _production(**env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": os.environ.get("PATH", ""),
        "MEDIMG_ENV": "production",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused",
        "REDIS_URL": "redis://127.0.0.1:6379/9",  # production needs a shared cache
        "AUDIT_HMAC_KEY": secrets.token_hex(32),
        "MEDIMG_DEID_SECRET": secrets.token_hex(32),
        "ALLOWED_HOSTS": "example.org",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", "import medimg.settings"],
        env=base,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_it_refuses_to_start_production_with_a_kek_that_is_not_a_real_key() -> None:
    for bad in ("k1:", "k1:abcd", f"k1:{secrets.token_hex(16)}", "k1:not-a-key!"):
        result = _production(MEDIMG_KEKS=bad, MEDIMG_KEK_CURRENT="k1")
        assert result.returncode != 0, bad
        assert "MEDIMG_KEKS" in result.stderr
    assert _production(MEDIMG_KEKS="").returncode != 0
    started = _production(MEDIMG_KEKS=f"k1:{K1},k2:{K2}", MEDIMG_KEK_CURRENT="k2")
    assert started.returncode == 0, started.stderr
