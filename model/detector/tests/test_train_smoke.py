"""A one-epoch training run on 8 generated images finishes in under a minute."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_it_trains_one_epoch_on_eight_images_in_under_a_minute(tmp_path: Path) -> None:
    shipped = REPO / "model" / "detector" / "best.pt"
    shipped_mtime = shipped.stat().st_mtime if shipped.exists() else None
    start = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "model/detector/train.py",
            "--epochs",
            "1",
            "--n-train",
            "8",
            "--n-val",
            "4",
            "--imgsz",
            "160",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-2000:]
    assert elapsed < 60, f"took {elapsed:.0f} s"
    assert (tmp_path / "runs" / "detector" / "weights" / "last.pt").exists()
    assert len(list((tmp_path / "data" / "images" / "train").glob("*.jpg"))) == 8
    # A smoke run never overwrites the shipped weights.
    assert (shipped.stat().st_mtime if shipped.exists() else None) == shipped_mtime
