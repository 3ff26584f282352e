"""The chaos soak (bench/soak.py): its checks can fail, and its short version passes.

The short soak starts its own PostgreSQL cluster and redis-server (so restarting them disturbs
no one), gunicorn, a Celery worker with the real detector and beat, uploads 50 images from 8
clients, SIGKILLs the whole Celery worker and the whole gunicorn once each, restarts
PostgreSQL and Redis once each, and checks that nothing was lost, duplicated, left
unprocessed or restored wrong. It runs where the services run (CI sets DATABASE_URL and
REDIS_URL) and PostgreSQL's initdb and redis-server are installed; 1-3 minutes here.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from bench import soak
from engine.intake.validation import validate_upload

ROOT = Path(__file__).resolve().parents[2]


def test_it_generates_distinct_uploads_the_intake_accepts_with_planted_identity() -> None:
    items = soak.make_items(6, clients=3)
    assert {i.kind for i in items} == {"png", "dicom"}
    assert len({i.name for i in items}) == len({i.data for i in items}) == 6
    assert [i.client for i in items] == [0, 1, 2, 0, 1, 2]
    for item in items:
        image = validate_upload(
            name=item.name, data=item.data, max_bytes=len(item.data), max_pixels=10**7
        )
        assert image.kind == item.kind
        # Burned-in text: full white ink on a background that stays at or below 200.
        assert (image.pixels >= 250).sum() > 200
        name, mrn = soak.planted(item.number)
        if item.kind == "dicom":
            ds = pydicom.dcmread(io.BytesIO(item.data))
            assert (str(ds.PatientName), ds.PatientID) == (name, mrn)
        else:
            assert name in Image.open(io.BytesIO(item.data)).text["Comment"]
            pixels = np.asarray(Image.open(io.BytesIO(item.data)))
            assert soak.hashlib.sha256(pixels.tobytes()).hexdigest() == item.pixels_sha256


def _write(media: Path, rel: str, data: bytes) -> None:
    path = media / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_it_finds_identity_images_and_uploads_in_clear_among_stored_files(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    upload = soak.make_items(1, clients=1)[0]
    _write(tmp_path, "scans/aaa/original.enc", noise)
    _write(tmp_path, "scans/aaa/run-1/redacted-0000.png", b"\x89PNG\r\n\x1a\n" + noise)
    assert soak.blobs_check(tmp_path, {"aaa": upload.needle}) == (2, [])

    _write(tmp_path, "scans/bbb/region.enc", noise[:100] + b"QUILLFEATHER^ABC" + noise)
    _write(tmp_path, "scans/bbb/run-1/redacted.dcm.enc", bytes(128) + b"DICM" + noise)
    _write(tmp_path, "scans/bbb/run-1/redacted-pixels.enc", b"\xff\xd8\xff\xe0" + noise)
    _write(tmp_path, "scans/ccc/original.enc", noise[:50] + upload.needle + noise)
    _write(tmp_path, "scans/ddd/original.enc", noise + b"\x89PNG\r\n\x1a\n" + noise)
    _write(tmp_path, "other/mrn.txt", "SKMRN000001".encode("utf-16-le"))
    files, problems = soak.blobs_check(tmp_path, {"aaa": upload.needle, "ccc": upload.needle})
    assert files == 8
    assert problems == [
        "other/mrn.txt: holds the planted identifier " + repr("SKMRN".encode("utf-16-le")),
        "scans/bbb/region.enc: holds the planted identifier b'QUILLFEATHER'",
        "scans/bbb/run-1/redacted-pixels.enc: starts like a JPEG file (stored in clear)",
        "scans/bbb/run-1/redacted.dcm.enc: starts like a DICOM file (stored in clear)",
        "scans/ccc/original.enc: holds its upload's bytes in clear",
        "scans/ddd/original.enc: holds a PNG file in clear",
    ]


def test_it_counts_files_no_scan_row_points_at(tmp_path: Path) -> None:
    for rel in (
        "scans/a/original.enc",
        "scans/a/run-1/redacted-pixels.enc",
        "scans/a/run-1/redacted.dcm.enc",
        "scans/a/run-0/redacted-0000.png",  # a run killed before it completed
        "scans/a/run-0/grid-0000.png",
        "scans/b/original.enc",  # an upload whose row never committed
    ):
        _write(tmp_path, rel, b"x")
    rows = [("a", "scans/a/original.enc", "scans/a/run-1/redacted-pixels.enc")]
    assert soak.orphan_files(tmp_path, rows) == {"without_a_scan": 1, "of_killed_runs": 2}


def test_it_plans_the_asked_kills_and_restarts() -> None:
    args = soak.parser().parse_args(["--worker-kills", "3", "--web-kills", "2", "--whole-first"])
    assert sorted(soak.chaos_events(args)) == sorted(
        [
            "kill whole worker",
            "kill worker pool process",
            "kill whole worker",
            "kill whole web",
            "kill web worker",
            "restart postgresql",
            "restart redis",
        ]
    )
    args = soak.parser().parse_args(["--worker-kills", "1", "--web-kills", "0", "--no-pg-restart"])
    assert soak.chaos_events(args) == ["kill worker pool process", "restart redis"]


def test_it_times_web_side_events_by_uploads_and_worker_kills_by_completions() -> None:
    events = ["kill whole worker", "kill worker pool process", "kill web worker", "restart redis"]
    chaos = soak.Chaos(installation=None, events=events, progress=lambda phase: 0.0)  # type: ignore[arg-type]
    plan = chaos.plan(soak.random.Random(3))
    assert sorted(e for _, _, e in plan) == sorted(events)
    for phase, share, event in plan:
        assert phase == ("upload" if event in soak.WEB_SIDE else "process")
        assert 0.05 <= share <= 0.9
    for phase in ("upload", "process"):
        shares = [share for p, share, _ in plan if p == phase]
        assert shares == sorted(shares)  # the k-th event in the k-th slice: spread out


def _services_missing() -> str:
    if not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
        return "the short soak runs where PostgreSQL and Redis run (DATABASE_URL and REDIS_URL)"
    if not (list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or shutil.which("initdb")):
        return "the short soak starts its own PostgreSQL cluster: initdb not found"
    if shutil.which("redis-server") is None:
        return "the short soak starts its own Redis: redis-server not found"
    return ""


@pytest.mark.slow
@pytest.mark.skipif(bool(_services_missing()), reason=_services_missing() or "ready")
def test_it_loses_nothing_through_kills_and_restarts(tmp_path: Path) -> None:
    report_path = tmp_path / "soak.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--uploads", "50", "--clients", "8",
         "--worker-kills", "1", "--web-kills", "1", "--whole-first", "--stuck-after", "20",
         "--timeout", "600", "--json", str(report_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    report = soak.json.loads(report_path.read_text())
    assert report["failures"] == []
    assert report["accepted"] == report["completed"] == report["restores_exact"] == 50
    assert report["lost"] == report["duplicates"] == report["failed"] == 0
    assert report["kills"] == {"kill whole web": 1, "kill whole worker": 1}
    assert report["restarts"] == {"restart postgresql": 1, "restart redis": 1}
    assert "SOAK PASSED" in done.stdout
