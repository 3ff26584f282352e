"""Find burned-in sensitive regions (PHI text, technical labels, barcodes) in an 8-bit image.

    detect(frame) -> list[Detection]      # frame: (H, W) or (H, W, 3) uint8, RGB

Pure: every parameter is an argument, defaulting to DEFAULTS below; nothing is read from
settings (imaging.jobs.detector applies the IMAGING_DETECTOR_* settings).

How an image is looked at:
- one pass over the whole image, scaled so its long side is `imgsz` (640);
- for images whose long side exceeds `tile_above`, also native-resolution tiles of `imgsz`
  with overlap, because scaling a 2048 px radiograph to 640 px shrinks 8 px text to 2.5 px.
The weights were trained on native-resolution 320 px crops; the network is fully
convolutional, so it runs on 640 px inputs unchanged.

The model is loaded once per process, lazily and under a lock. Backends: "onnx" (ONNX Runtime)
and "torch"; both share this module's pre- and post-processing, so they return the same boxes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

from engine.pixels.redaction import pad_box

MODEL_DIR = Path(__file__).resolve().parents[2] / "model" / "detector"
CLASS_NAMES: tuple[str, ...] = ("phi_text", "tech_text", "barcode")
DEFAULTS: dict[str, Any] = {
    "weights": None,  # None: WEIGHTS_FILES[backend] in model/detector/
    "backend": "onnx",  # faster than torch on the 2-core CPU (model/detector/MODEL_CARD.md)
    "confidence": 0.25,
    "iou": 0.45,
    "imgsz": 640,
    "tile_above": 1280,
    "tiles": "grid",
}
# Which native-resolution tiles an image above `tile_above` gets besides the whole-image pass:
# "grid" every tile; "margins" only the tiles touching the image's edges (scanners write their
# text in the margins and header bars), the interior left to the whole-image pass.
TILE_MODES = ("grid", "margins")
TILE_OVERLAP = 64
STRIDE = 32  # the network's largest stride: input sides must be multiples of it
# A box this much inside a bigger one adds nothing to a redaction.
CONTAINED = 0.9


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1, half-open, original pixels
    label: str
    confidence: float


# The shipped weights by backend. ONNX Runtime runs the int8 model (static QDQ quantization of
# best.onnx, int8 weights per channel, calibrated on generated images; the first convolution and
# the head's outputs stay float; model/detector/quantize.py): a third less CPU than the float
# best.onnx, the same PHI boxes found on the generated, real and leave-vendor-out sets
# (model/detector/MODEL_CARD.md, "Speed"). best.onnx stays as its source and as the float
# reference (IMAGING_DETECTOR_WEIGHTS=.../best.onnx runs it).
WEIGHTS_FILES = {"onnx": "best.int8.onnx", "torch": "best.pt"}
FLOAT_ONNX = "best.onnx"


def weights_path(backend: str | None = None) -> Path:
    """The shipped weights for `backend` (the default backend when None)."""
    return MODEL_DIR / WEIGHTS_FILES[backend or DEFAULTS["backend"]]


# ---------------------------------------------------------------- backends

Runner = Callable[[np.ndarray], np.ndarray]  # (N, 3, H, W) float32 -> (N, 4 + classes, A)

_runners: dict[tuple[str, str], Runner] = {}
_runners_lock = threading.Lock()


def load_onnx_runner(path: Path) -> Runner:
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    options = ort.SessionOptions()
    # Follow OMP_NUM_THREADS like torch does, so a worker can be told to use fewer cores.
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    # Idle pool threads sleep instead of spinning: on a CPU shared with the web server, other
    # workers and each other, spinning threads burn the cores the busy ones need (640 px pass
    # at load 11: 918 ms spinning, 579 ms not; MODEL_CARD.md, "Speed").
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {input_name: batch})[0])

    return run


def load_torch_runner(path: Path) -> Runner:
    import torch
    from ultralytics import YOLO

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Ultralytics types `.model` loosely (a str before loading): it is the torch module here.
    network: Any = YOLO(str(path)).model
    model = network.to(device).eval()
    model = model.float() if device == "cpu" else model.half()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            tensor = torch.from_numpy(batch).to(device)
            output = model(tensor.half() if device == "cuda" else tensor)
            output = output[0] if isinstance(output, (list, tuple)) else output
            return cast("np.ndarray", output.float().cpu().numpy())

    return run


def get_runner(backend: str, weights: Path) -> Runner:
    """The process-wide runner for (backend, weights), loaded on first use."""
    key = (backend, str(weights))
    runner = _runners.get(key)
    if runner is not None:
        return runner
    with _runners_lock:
        if key not in _runners:
            if not weights.exists():
                raise FileNotFoundError(f"detector weights not found: {weights}")
            loader = load_onnx_runner if backend == "onnx" else load_torch_runner
            _runners[key] = loader(weights)
        return _runners[key]


# ---------------------------------------------------------------- pre- and post-processing


def as_planes(frame: np.ndarray) -> np.ndarray:
    """The frame as (H, W) grey or (H, W, 3) RGB, uint8. Grey stays one plane: it is resized
    once and spread over the network's three input channels only when the tensor is built."""
    if frame.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {frame.dtype}")
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 4:
        return frame[:, :, :3]
    if frame.ndim == 3 and frame.shape[2] == 1:
        return frame[:, :, 0]
    raise ValueError(f"expected (H, W) or (H, W, 3), got {frame.shape}")


def as_rgb(frame: np.ndarray) -> np.ndarray:
    """The frame as (H, W, 3) RGB uint8."""
    planes = as_planes(frame)
    return np.repeat(planes[:, :, None], 3, axis=2) if planes.ndim == 2 else planes


def to_input(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """Resize so the long side is at most `side`, pad right and bottom to a multiple of the
    network stride; returns (3, H', W') float32 in [0, 1] and the scale. `image` is (H, W)
    grey (copied into all three channels) or (H, W, 3) RGB.

    Padding to the stride instead of a `side` square (Ultralytics' own `rect` letterbox) spends
    nothing on blank canvas: a 512 px image runs at 512, a 4:3 ultrasound at 640x480.
    Padding value 114 is what Ultralytics trains with. The tensor is written in one pass
    (scale and channel-first layout together) into a canvas of the padding value.
    """
    height, width = image.shape[:2]
    scale = min(1.0, side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    rows, cols = image.shape[:2]
    padded_h = -(-rows // STRIDE) * STRIDE
    padded_w = -(-cols // STRIDE) * STRIDE
    canvas = np.full((3, padded_h, padded_w), np.float32(114 / 255), np.float32)
    planes = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
    np.multiply(planes, np.float32(1 / 255), out=canvas[:, :rows, :cols])
    return canvas, scale


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def tile_boxes(height: int, width: int, tile: int, mode: str) -> list[tuple[int, int]]:
    """(top, left) of the native-resolution tiles `mode` asks for (TILE_MODES)."""
    if mode not in TILE_MODES:
        raise ValueError(f"unknown tile mode {mode!r}; expected one of {TILE_MODES}")
    tops = tile_origins(height, tile, TILE_OVERLAP)
    lefts = tile_origins(width, tile, TILE_OVERLAP)
    return [
        (top, left)
        for top in tops
        for left in lefts
        if mode == "grid" or top in (tops[0], tops[-1]) or left in (lefts[0], lefts[-1])
    ]


def decode(output: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw head output (4 + classes, A) -> boxes (x0, y0, x1, y1), scores, class ids."""
    scores_all = output[4:]
    class_ids = scores_all.argmax(axis=0)
    scores = scores_all[class_ids, np.arange(scores_all.shape[1])]
    keep = scores >= confidence
    cx, cy, w, h = output[:4, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return boxes, scores[keep], class_ids[keep]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indexes kept by class-agnostic non-maximum suppression (one region, one box)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).tolist()
    kept = cv2.dnn.NMSBoxes(xywh, scores.astype(float).tolist(), 0.0, iou)
    return np.asarray(kept, np.int64).reshape(-1)


def drop_contained(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indexes of boxes not lying mostly inside a larger kept box (tile fragments)."""
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    kept: list[int] = []
    for i in order:
        x0, y0, x1, y1 = boxes[i]
        area = max(1e-6, (x1 - x0) * (y1 - y0))
        inside = False
        for j in kept:
            ix = max(0.0, min(x1, boxes[j, 2]) - max(x0, boxes[j, 0]))
            iy = max(0.0, min(y1, boxes[j, 3]) - max(y0, boxes[j, 1]))
            if ix * iy / area >= CONTAINED:
                inside = True
                break
        if not inside:
            kept.append(int(i))
    return np.asarray(sorted(kept), np.int64)


def detect(
    frame: np.ndarray,
    *,
    confidence: float | None = None,
    iou: float | None = None,
    imgsz: int | None = None,
    tile_above: int | None = None,
    tiles: str | None = None,
    padding: int = 0,
    backend: str | None = None,
    weights: Path | str | None = None,
) -> list[Detection]:
    """Sensitive regions of `frame` in original pixel coordinates, best first.

    `padding` > 0 grows each box with `engine.pixels.redaction.pad_box` (it also grows with the box
    height); the pipeline pads itself, so the default is the detector's own box.
    """
    confidence = DEFAULTS["confidence"] if confidence is None else confidence
    iou = DEFAULTS["iou"] if iou is None else iou
    imgsz = int(DEFAULTS["imgsz"] if imgsz is None else imgsz)
    tile_above = int(DEFAULTS["tile_above"] if tile_above is None else tile_above)
    tiles = tiles or DEFAULTS["tiles"]
    backend = backend or DEFAULTS["backend"]
    if backend not in ("onnx", "torch"):
        raise ValueError(f"unknown detector backend {backend!r}")
    runner = get_runner(backend, Path(weights) if weights else weights_path(backend))

    image = as_planes(frame)
    height, width = image.shape[:2]
    inputs, placements = [], []
    whole, scale = to_input(image, imgsz)
    inputs.append(whole)
    placements.append((0, 0, scale))
    if max(height, width) > tile_above:
        for top, left in tile_boxes(height, width, imgsz, tiles):
            tile, _ = to_input(image[top : top + imgsz, left : left + imgsz], imgsz)
            inputs.append(tile)
            placements.append((left, top, 1.0))

    all_boxes, all_scores, all_classes = [], [], []
    batch_size = 8
    # Inputs of one shape run as one batch (tiles share a shape; the whole image may not).
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, tensor in enumerate(inputs):
        by_shape.setdefault(tensor.shape, []).append(index)
    for indexes in by_shape.values():
        for start in range(0, len(indexes), batch_size):
            chunk = indexes[start : start + batch_size]
            # One input (the common case) runs as a view: no copy into a batch.
            batch = (
                inputs[chunk[0]][None] if len(chunk) == 1 else np.stack([inputs[i] for i in chunk])
            )
            outputs = runner(batch)
            for output, index in zip(outputs, chunk, strict=True):
                left, top, scale = placements[index]
                boxes, scores, classes = decode(output, confidence)
                keep = nms(boxes, scores, iou)
                boxes = boxes[keep] / scale + np.array([left, top, left, top], np.float32)
                all_boxes.append(boxes)
                all_scores.append(scores[keep])
                all_classes.append(classes[keep])

    boxes = np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4), np.float32)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0, np.float32)
    classes = np.concatenate(all_classes) if all_classes else np.zeros(0, np.int64)
    if len(placements) > 1 and len(boxes):
        keep = nms(boxes, scores, iou)
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        keep = drop_contained(boxes, scores)
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]

    detections = []
    for box, score, cls in zip(boxes, scores, classes, strict=True):
        coords = pad_box(box, 0, (height, width), height_ratio=0.0)  # whole pixels, clipped
        if padding:
            coords = pad_box(coords, padding, (height, width))
        x0, y0, x1, y1 = coords
        if x1 > x0 and y1 > y0:
            detections.append(Detection((x0, y0, x1, y1), CLASS_NAMES[int(cls)], float(score)))
    detections.sort(key=lambda d: -d.confidence)
    return detections
