"""The benchmark command: a tiny run prints the table and valid JSON with every stage."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from imaging.management.commands.bench_pipeline import STAGES
from imaging.tests.conftest import BRIGHT_DETECTOR


def test_it_benchmarks_a_tiny_run(tmp_path: Path) -> None:
    out = io.StringIO()
    json_path = tmp_path / "bench.json"

    call_command(
        "bench_pipeline",
        sizes="96,128",
        repeat=2,
        workers="1,2",
        rounds=1,
        no_real=True,
        detector=BRIGHT_DETECTOR,
        json_path=str(json_path),
        stdout=out,
    )

    text = out.getvalue()
    assert "ms per image, median / p95" in text
    assert "throughput with 2 worker(s)" in text
    report = json.loads(json_path.read_text())
    assert [row["image"] for row in report["images"]] == ["generated-96", "generated-128"]
    for row in report["images"]:
        assert set(row["stages"]) == set(STAGES)
        total = row["stages"]["total_ms"]
        assert 0 < total["median"] <= total["p95"]
        assert row["regions"] >= 1  # the generated images carry burned-in text
    assert set(report["images_per_second"]) == {"1", "2"}
    assert all(rate > 0 for rate in report["images_per_second"].values())


def test_it_refuses_nonsense_arguments() -> None:
    with pytest.raises(CommandError):
        call_command("bench_pipeline", sizes="big", no_real=True, detector=BRIGHT_DETECTOR)
