"""The detector module: real PHI found, coordinates right, model loaded once, inputs checked."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from engine.detection import detector as detection
from engine.pixels.redaction import pad_box
from imaging.jobs import detector as configured

FIXTURES = Path(__file__).resolve().parents[2] / "model" / "detector" / "testset" / "fixtures"
FIXTURE_INDEX = json.loads((FIXTURES / "fixtures.json").read_text())
HAS_WEIGHTS = detection.weights_path("onnx").exists() and detection.weights_path("torch").exists()
needs_weights = pytest.mark.skipif(not HAS_WEIGHTS, reason="model/detector/best.* not trained")
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def load_fixture(name: str) -> np.ndarray:
    image = cv2.imread(str(FIXTURES / name), cv2.IMREAD_UNCHANGED)
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def coverage(box: list[int], found: list[detection.Detection], shape: tuple[int, ...]) -> float:
    mask = np.zeros(shape[:2], bool)
    for d in found:
        x0, y0, x1, y1 = pad_box(d.box, 4, shape)
        mask[y0:y1, x0:x1] = True
    return float(mask[box[1] : box[3], box[0] : box[2]].mean())


def text_image(height: int, width: int, text: str, size: int, at: tuple[int, int]) -> np.ndarray:
    canvas = Image.new("L", (width, height), 20)
    ImageDraw.Draw(canvas).text(at, text, font=ImageFont.truetype(FONT, size), fill=235)
    return np.asarray(canvas)


@needs_weights
@pytest.mark.parametrize("fixture", FIXTURE_INDEX, ids=[f["file"] for f in FIXTURE_INDEX])
def test_it_finds_the_phi_lines_on_real_images(fixture: dict[str, Any]) -> None:
    image = load_fixture(fixture["file"])
    found = detection.detect(image)
    missed = [
        b["text"] for b in fixture["phi_boxes"] if coverage(b["box"], found, image.shape) < 0.9
    ]
    assert not missed


def white_box_runner(batch: np.ndarray) -> np.ndarray:
    """A stand-in network that 'detects' the white pixels of each input as one phi_text box."""
    out = np.zeros((len(batch), 7, 1), np.float32)
    for i, tensor in enumerate(batch):
        ys, xs = np.nonzero(tensor[0] > 0.95)
        if len(xs):
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            out[i, :5, 0] = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0.9]
    return out


@pytest.mark.parametrize(
    ("shape", "box"),
    [
        ((480, 600), (100, 40, 300, 60)),  # no scaling
        ((1000, 900), (500, 700, 820, 740)),  # scaled to 640
        ((2048, 2048), (1500, 1900, 1700, 1912)),  # scaled pass plus native tiles
    ],
)
def test_it_returns_boxes_in_original_pixel_coordinates(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, int], box: tuple[int, int, int, int]
) -> None:
    monkeypatch.setattr(detection, "get_runner", lambda backend, weights: white_box_runner)
    image = np.zeros(shape, np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 255
    found = detection.detect(image)
    assert found and found[0].label == "phi_text"
    # Exact without scaling; within the resize rounding (one input pixel) otherwise.
    scale = max(1.0, max(shape) / 640)
    assert np.abs(np.subtract(found[0].box, box)).max() <= (0 if scale == 1 else scale + 1)
    if max(shape) > 1280:
        # The tile and the scaled pass both saw it: their copies were merged into one.
        assert len(found) == 1


@needs_weights
def test_it_finds_8px_text_on_a_2048px_image_by_tiling() -> None:
    image = text_image(2048, 2048, "DOE^JANE  04/05/1961", 11, (1400, 1900))
    ink = np.argwhere(image > 128)
    (y0, x0), (y1, x1) = ink.min(axis=0), ink.max(axis=0) + 1
    assert 7 <= y1 - y0 <= 10  # 8 px text, as small scanners print it
    found = detection.detect(image)
    assert coverage([x0, y0, x1, y1], found, image.shape) >= 0.9


@needs_weights
def test_greyscale_and_rgb_inputs_give_the_same_boxes() -> None:
    grey = load_fixture("GREYSCALE_IMAGE.png")
    assert grey.ndim == 2
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    assert detection.detect(grey) == detection.detect(rgb)


@needs_weights
def test_onnx_and_torch_backends_agree() -> None:
    """The same float weights in both runtimes (the int8 model is checked against the float
    one by model/detector/tests/test_quantized.py)."""
    image = load_fixture("RGB_IMAGE.png")
    onnx = detection.detect(image, backend="onnx", weights=detection.MODEL_DIR / "best.onnx")
    torch = detection.detect(image, backend="torch")
    assert len(onnx) == len(torch)
    for a, b in zip(
        sorted(onnx, key=lambda d: d.box), sorted(torch, key=lambda d: d.box), strict=True
    ):
        assert a.label == b.label and np.abs(np.subtract(a.box, b.box)).max() <= 2


@needs_weights
def test_it_pads_boxes_when_asked() -> None:
    image = load_fixture("GREYSCALE_IMAGE.png")
    raw = detection.detect(image)
    padded = detection.detect(image, padding=4)
    assert len(raw) == len(padded)
    for r, p in zip(raw, padded, strict=True):
        assert p.box == pad_box(r.box, 4, image.shape)


def test_it_rejects_images_that_are_not_8_bit() -> None:
    with pytest.raises(ValueError, match="uint8"):
        detection.as_rgb(np.zeros((10, 10), np.uint16))
    with pytest.raises(ValueError, match="expected"):
        detection.as_rgb(np.zeros((10, 10, 2), np.uint8))


def test_it_decodes_head_output_to_corner_boxes() -> None:
    output = np.zeros((7, 3), np.float32)
    output[:4, 0] = [50, 40, 20, 10]  # cx, cy, w, h
    output[4:, 0] = [0.1, 0.8, 0.05]  # best class: tech_text
    output[4:, 1] = [0.1, 0.1, 0.1]  # below the confidence threshold
    output[:4, 2] = [10, 10, 4, 4]
    output[4:, 2] = [0.3, 0.0, 0.0]
    boxes, scores, classes = detection.decode(output, confidence=0.25)
    assert boxes.tolist() == [[40, 35, 60, 45], [8, 8, 12, 12]]
    assert classes.tolist() == [1, 0] and scores.tolist() == pytest.approx([0.8, 0.3])


def test_it_suppresses_overlaps_across_classes_and_drops_fragments() -> None:
    boxes = np.array([[0, 0, 100, 20], [2, 0, 100, 20], [10, 2, 40, 18]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert detection.nms(boxes, scores, 0.45).tolist() == [0, 2]
    assert detection.drop_contained(boxes[[0, 2]], scores[[0, 2]]).tolist() == [0]


def test_it_tiles_large_images_with_overlap() -> None:
    assert detection.tile_origins(500, 640, 64) == [0]
    assert detection.tile_origins(2048, 640, 64) == [0, 576, 1152, 1408]
    grid = detection.tile_boxes(2048, 2048, 640, "grid")
    margins = detection.tile_boxes(2048, 2048, 640, "margins")
    assert len(grid) == 16 and set(margins) < set(grid)
    # Every tile touching an edge, none of the four inner ones.
    assert len(margins) == 12 and not {(576, 576), (576, 1152), (1152, 576)} & set(margins)
    with pytest.raises(ValueError, match="tile mode"):
        detection.tile_boxes(2048, 2048, 640, "centre")


def test_it_loads_the_model_once_for_many_threads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    weights = tmp_path / "fake.onnx"
    weights.write_bytes(b"")
    loads = []

    def fake_loader(path: Path) -> detection.Runner:
        loads.append(path)
        return lambda batch: np.zeros((len(batch), 7, 0), np.float32)

    monkeypatch.setattr(detection, "load_onnx_runner", fake_loader)
    monkeypatch.setattr(detection, "_runners", {})
    results: list[list[detection.Detection]] = []
    image = np.zeros((64, 64), np.uint8)
    threads = [
        threading.Thread(
            target=lambda: results.append(detection.detect(image, backend="onnx", weights=weights))
        )
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and results == [[]] * 8


def test_it_reads_defaults_from_django_settings(settings: Any) -> None:
    settings.IMAGING_DETECTOR_IMGSZ = 512
    settings.IMAGING_DETECTOR_CONFIDENCE = 0.5
    assert configured.setting("imgsz") == 512 and configured.setting("confidence") == 0.5
    del settings.IMAGING_DETECTOR_IMGSZ
    assert configured.setting("imgsz") == detection.DEFAULTS["imgsz"]


def test_the_engine_detector_reads_no_settings_and_the_worker_one_applies_them(
    settings: Any, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.onnx"
    settings.IMAGING_DETECTOR_WEIGHTS = str(missing)
    frame = np.zeros((32, 32), np.uint8)
    with pytest.raises(FileNotFoundError, match="nowhere.onnx"):
        configured.detect(frame)
    assert configured.weights_path() == missing
    assert detection.weights_path() == detection.MODEL_DIR / "best.int8.onnx"
    # A configuration that names the engine's detector gets the settings-aware one.
    settings.IMAGING_DETECTOR = "engine.detection.detector.detect"
    assert configured.default_detector() is configured.detect
    settings.IMAGING_DETECTOR = "imaging.tests.factories.bright_text_detector"
    assert configured.default_detector().__name__ == "bright_text_detector"
