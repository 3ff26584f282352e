from __future__ import annotations

from pathlib import Path

import pytest

from model.detector.generate import generate_split, write_data_yaml, yolo_label_lines
from model.detector.synth import Label


def test_it_writes_normalised_yolo_lines_and_drops_slivers() -> None:
    labels = [Label(0, 10, 20, 110, 40), Label(1, 5, 5, 6, 6), Label(2, -5, 90, 50, 120)]
    lines = yolo_label_lines(labels, height=100, width=200)
    assert lines[0] == "0 0.300000 0.300000 0.500000 0.200000"
    assert len(lines) == 2
    cls, cx, cy, w, h = lines[1].split()
    assert cls == "2" and float(cy) + float(h) / 2 == pytest.approx(1.0)


def test_it_generates_a_small_split(tmp_path: Path) -> None:
    boxes = generate_split(tmp_path, "train", 3, seed=7, groups={}, max_side=640)
    images = sorted((tmp_path / "images" / "train").glob("*.jpg"))
    labels = sorted((tmp_path / "labels" / "train").glob("*.txt"))
    assert len(images) == 3 and len(labels) == 3
    written = [line for p in labels for line in p.read_text().split("\n") if line.strip()]
    assert len(written) <= boxes and written
    for line in written:
        values = [float(v) for v in line.split()[1:]]
        assert all(0.0 <= v <= 1.0 for v in values)
    assert "names:" in write_data_yaml(tmp_path).read_text()
