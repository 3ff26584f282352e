"""Stored files no scan points at (found by the chaos soak): a killed upload's original and a
killed processing run's folder are swept once old; everything else stays."""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import Action, AuditEvent
from imaging.jobs.orphans import orphans_find, orphans_sweep
from imaging.models import Scan

pytestmark = pytest.mark.django_db

DAY = 86_400


def _write(root: Path, name: str, *, age: float) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"sealed bytes")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_it_sweeps_only_old_folders_that_nothing_points_at(
    settings: Any, api: Any, doctor: Any, completed_scan: Scan
) -> None:
    media = Path(settings.MEDIA_ROOT)
    lost_upload = _write(media, f"scans/{uuid.uuid4()}/original.enc", age=2 * DAY)
    in_flight = _write(media, f"scans/{uuid.uuid4()}/original.enc", age=30)
    mine = f"scans/{completed_scan.uid}"
    killed_run = _write(media, f"{mine}/run-deadbeef/redacted.enc", age=2 * DAY)
    fresh_run = _write(media, f"{mine}/run-0ddba11/redacted.enc", age=30)
    segmentation = _write(media, f"{mine}/segmentation-1-abcd/mask.enc", age=2 * DAY)
    kept = sorted(p for p in (media / mine).rglob("*") if p.is_file() and "run-" in str(p))

    found = orphans_find(DAY)

    assert found == sorted([f"scans/{lost_upload.parent.name}/", f"{mine}/run-deadbeef/"])
    assert orphans_sweep(DAY, dry_run=True)["files"] == 0 and lost_upload.exists()

    result = orphans_sweep(DAY)

    assert result["files"] == 2
    assert not lost_upload.exists() and not killed_run.exists()
    assert in_flight.exists() and fresh_run.exists() and segmentation.exists()
    assert all(p.exists() for p in kept if "deadbeef" not in str(p))
    event = AuditEvent.objects.filter(action=Action.ADMIN_CHANGE).latest("id")
    assert event.details["change"] == "orphan files deleted" and event.details["files"] == 2
    # The scan itself still restores: its own run was not touched.
    api.force_authenticate(doctor)
    response = api.post(
        f"/api/images/{completed_scan.pk}/restore/", {"reason": "checking the sweep"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert orphans_find(DAY) == []


def test_the_command_lists_and_refuses_a_too_short_age(settings: Any) -> None:
    lost = _write(Path(settings.MEDIA_ROOT), f"scans/{uuid.uuid4()}/original.enc", age=2 * DAY)
    out = io.StringIO()
    call_command("sweep_orphans", "--dry-run", stdout=out)
    line = json.loads(out.getvalue())
    assert line["dry_run"] is True and line["folders"] == [f"scans/{lost.parent.name}/"]
    assert lost.exists()
    with pytest.raises(CommandError, match="at least 60"):
        call_command("sweep_orphans", "--older-than", "5")
    call_command("sweep_orphans", stdout=io.StringIO())
    assert not lost.exists()
