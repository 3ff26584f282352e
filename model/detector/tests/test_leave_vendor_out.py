"""The leave-vendor-out real test set (issue 14 item 4): real images from ../shared/corpus that
neither the generator nor the project's real set used, with hand-checked boxes, scored per
vendor by evaluate.py. Skipped, with the reason, where the corpus is not beside the checkout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from engine.detection import detector as detection
from model.detector import evaluate
from model.detector.backgrounds import is_excluded_from_training
from model.detector.testset import (
    GROUND_TRUTH,
    LEAVE_VENDOR_OUT,
    corpus_available,
    corpus_dir,
    image_path,
    load_frame,
    load_ground_truth,
)

pytestmark = pytest.mark.skipif(
    not corpus_available(), reason=f"no real-file corpus at {corpus_dir()} (../shared/corpus)"
)


def test_every_image_is_the_pinned_file_and_every_box_lies_inside_it() -> None:
    truths = load_ground_truth(LEAVE_VENDOR_OUT)
    assert len(truths) >= 7
    assert sum(b.cls == "phi_text" for t in truths for b in t.boxes) >= 60
    sizes = {e["file"]: e["size"] for e in json.loads(LEAVE_VENDOR_OUT.read_text())["images"]}
    for truth in truths:
        assert truth.vendor, truth.file
        data = image_path(truth.package, truth.file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == truth.sha256
        frame = load_frame(truth.package, truth.file, truth.frame, truth.sha256)
        width, height = sizes[truth.file]
        assert frame.shape[:2] == (height, width)
        for box in truth.boxes:
            assert 0 <= box.x0 < box.x1 <= width and 0 <= box.y0 < box.y1 <= height, box


def test_no_image_is_in_the_real_set_or_could_become_a_training_background() -> None:
    real = {t.file.rsplit("/", 1)[-1] for t in load_ground_truth(GROUND_TRUTH)}
    for truth in load_ground_truth(LEAVE_VENDOR_OUT):
        original = truth.file.rsplit("__", 1)[-1]
        assert original not in real
        # Training backgrounds come from pydicom-data and deid-data only, never the corpus;
        # the pydicom files here are on the exclusion list as well.
        if "examples_" in original:
            assert is_excluded_from_training(original)


def test_a_changed_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    truth = load_ground_truth(LEAVE_VENDOR_OUT)[0]
    (tmp_path / "files").mkdir()
    data = bytearray(image_path(truth.package, truth.file).read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "files" / truth.file).write_bytes(bytes(data))
    monkeypatch.setenv("MEDIMG_CORPUS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="sha256"):
        load_frame(truth.package, truth.file, truth.frame, truth.sha256)


@pytest.mark.slow
def test_evaluate_scores_each_vendor_group(tmp_path: Path) -> None:
    """The small images (the mammogram and radiograph take seconds each): per-vendor recall,
    the text-pixel rule and false regions, with the shipped ONNX weights."""
    weights = detection.weights_path("onnx")
    if not weights.is_file():
        pytest.skip(f"no detector weights at {weights}")
    doc = json.loads(LEAVE_VENDOR_OUT.read_text())
    doc["images"] = [e for e in doc["images"] if e["size"][0] * e["size"][1] <= 800 * 600]
    small = tmp_path / "small.json"
    small.write_text(json.dumps(doc))
    options = {
        "confidence": 0.25, "iou": 0.45, "imgsz": 640, "tile_above": 1280,
        "backend": "onnx", "weights": weights,
    }  # fmt: skip
    report = evaluate.evaluate_real(options, 4, small)
    assert report["images"] == len(doc["images"]) >= 3
    endoscopy = report["per_vendor"]["unnamed / endoscopy video capture (VL)"]
    # Measured with the shipped weights: 4 of its 5 patient-text lines ("M 63", with a wide
    # gap between its words, is 87 % covered), the floor this test holds.
    assert endoscopy["phi_boxes"] == 5 and endoscopy["phi_found"] >= 4
    for group in report["per_vendor"].values():
        assert {"images", "phi_box_recall", "false_regions_per_image", "ms_median"} <= set(group)
