"""The shipped int8 detector (best.int8.onnx): made from the shipped float weights, and finding
what they find on real images."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from engine.detection import detector as detection
from model.detector.testset import GROUND_TRUTH, load_frame, load_ground_truth

INT8 = detection.MODEL_DIR / "best.int8.onnx"
FLOAT = detection.MODEL_DIR / detection.FLOAT_ONNX
needs_weights = pytest.mark.skipif(
    not (INT8.is_file() and FLOAT.is_file()), reason="model/detector/best*.onnx not shipped"
)


def metadata(path: object) -> dict[str, str]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def test_the_onnx_backend_runs_the_int8_model_by_default() -> None:
    assert detection.weights_path("onnx") == INT8
    assert detection.weights_path("torch") == detection.MODEL_DIR / "best.pt"


@needs_weights
def test_the_int8_model_was_quantized_from_the_shipped_float_model() -> None:
    """A retrained best.onnx must be quantized again (model/detector/quantize.py)."""
    meta = metadata(INT8)
    assert meta["quantized_from_sha256"] == hashlib.sha256(FLOAT.read_bytes()).hexdigest()
    recipe = json.loads(meta["quantization"])
    assert recipe["format"] == "QDQ" and recipe["per_channel"] and recipe["float_ends"]


@needs_weights
def test_the_int8_model_finds_every_phi_box_the_float_model_finds_on_the_real_set() -> None:
    """Each image of the real set (testset/ground_truth.json): a PHI box at least 90 % covered
    by the float model's boxes is at least 90 % covered by the int8 model's."""
    checked = 0
    for truth in load_ground_truth(GROUND_TRUTH):
        frame = load_frame(truth.package, truth.file, truth.frame, truth.sha256)
        runs = {w: detection.detect(frame, weights=w, padding=4) for w in (FLOAT, INT8)}
        masks = {}
        for weights, found in runs.items():
            mask = np.zeros(frame.shape[:2], bool)
            for d in found:
                x0, y0, x1, y1 = d.box
                mask[y0:y1, x0:x1] = True
            masks[weights] = mask
        for box in (b for b in truth.boxes if b.cls == "phi_text"):
            window = np.s_[box.y0 : box.y1, box.x0 : box.x1]
            if masks[FLOAT][window].mean() >= 0.9:
                checked += 1
                assert masks[INT8][window].mean() >= 0.9, (truth.key, box.text)
    assert checked >= 20  # the float model covers (nearly) all 24 of the set's PHI boxes
