"""A second opinion that does not share the detector's blind spots: PP-OCR's text detection
network (a DB, differentiable-binarisation, model trained on general scene and document text),
whose ONNX weights ship inside the `rapidocr` package on PyPI (Apache-2.0). Only the weights
are used; the pre- and post-processing are ours, on onnxruntime, so nothing is downloaded and
no other OCR code runs.

    finder = TextFinder()                       # the packaged PP-OCRv6 small detector
    finder(frame) -> [TextBox(x0, y0, x1, y1, score), ...]   # axis-aligned, frame pixels
    finder.search(frame, windows) -> [...]      # the same, inside some windows only

The model sees a uint8 frame (grey or RGB), resized so its longer side is at most
`limit_side` (multiples of 32), normalised to [-1, 1]. Its output is a text probability map;
pixels above `threshold` are joined into components, a component whose mean probability is
below `box_threshold` is dropped, and each kept one is grown by the DB "unclip" distance
(area x ratio / perimeter, as the model was trained to shrink its targets) and mapped back to
frame coordinates. Only line-like boxes are kept (`_line_like`): the network also fires on
calipers, crosses and traces, which are not what a second opinion on text is for.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

MODEL_FILE = "PP-OCRv6_det_small.onnx"


class OcrUnavailable(Exception):
    """The `rapidocr` package (which holds the weights) or onnxruntime is not installed."""


def packaged_model() -> Path:
    """The PP-OCR detection weights inside the installed `rapidocr` package."""
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        raise OcrUnavailable("the rapidocr package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILE
    if not path.is_file():
        raise OcrUnavailable(f"{path} is missing from the rapidocr package")
    return path


@dataclass(frozen=True)
class TextBox:
    x0: int
    y0: int
    x1: int
    y1: int
    score: float

    @property
    def coords(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)


class TextFinder:
    def __init__(
        self,
        model: str | Path | None = None,
        *,
        threads: int = 1,
        limit_side: int = 960,
        threshold: float = 0.3,
        box_threshold: float = 0.6,
        unclip_ratio: float = 1.5,
        min_side: int = 3,
        min_aspect: float = 1.5,
        max_line_share: float = 0.06,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
            raise OcrUnavailable("onnxruntime is not installed") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(model or packaged_model()), options, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name
        self.limit_side = limit_side
        self.threshold = threshold
        self.box_threshold = box_threshold
        self.unclip_ratio = unclip_ratio
        self.min_side = min_side
        self.min_aspect = min_aspect
        self.max_line_share = max_line_share

    def _probabilities(self, frame: np.ndarray) -> tuple[np.ndarray, float, float]:
        import cv2

        rgb = frame if frame.ndim == 3 else np.repeat(frame[:, :, np.newaxis], 3, axis=2)
        rgb = rgb[:, :, :3]
        height, width = rgb.shape[:2]
        scale = min(1.0, self.limit_side / max(height, width))
        new_h = max(32, int(round(height * scale / 32)) * 32)
        new_w = max(32, int(round(width * scale / 32)) * 32)
        resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        tensor = (resized.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[np.newaxis]
        output = self.session.run(None, {self.input: np.ascontiguousarray(tensor)})[0]
        return cast(np.ndarray, output[0, 0]), width / new_w, height / new_h

    def __call__(self, frame: np.ndarray) -> list[TextBox]:
        import cv2

        if frame.shape[0] < 8 or frame.shape[1] < 8:
            return []
        probability, sx, sy = self._probabilities(frame)
        mask = (probability > self.threshold).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        height, width = frame.shape[:2]
        found = []
        for i in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[i])
            if min(w, h) < self.min_side:
                continue
            score = float(probability[labels == i].mean())
            if score < self.box_threshold:
                continue
            grow = area * self.unclip_ratio / (2 * (w + h))
            x0 = int(np.floor((x - grow) * sx))
            y0 = int(np.floor((y - grow) * sy))
            x1 = int(np.ceil((x + w + grow) * sx))
            y1 = int(np.ceil((y + h + grow) * sy))
            box = TextBox(max(0, x0), max(0, y0), min(width, x1), min(height, y1), score)
            if box.x1 > box.x0 and box.y1 > box.y0 and self._line_like(box, height):
                found.append(box)
        return sorted(found, key=lambda b: (b.y0, b.x0))

    def _line_like(self, box: TextBox, frame_height: int) -> bool:
        """A line of text: wider than tall by `min_aspect`, and no taller than a text line
        gets (`max_line_share` of the frame's height, at least 48 px). Measured on the real
        test set (bench.second_opinion): what fails this is calipers, crosses, ECG traces,
        colour bars and probe marks, the detector's hard negatives, not writing."""
        tall, wide = box.y1 - box.y0, box.x1 - box.x0
        return wide >= self.min_aspect * tall and tall <= max(
            48, self.max_line_share * frame_height
        )

    def search(self, frame: np.ndarray, windows: Sequence[Sequence[int]]) -> list[TextBox]:
        """Text inside each (x0, y0, x1, y1) window (clipped to the frame), in frame
        coordinates; a box found in two overlapping windows comes back once per window."""
        height, width = frame.shape[:2]
        found: list[TextBox] = []
        for window in windows:
            x0, y0, x1, y1 = (int(v) for v in window)
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
            if x1 - x0 < 8 or y1 - y0 < 8:
                continue
            for box in self(frame[y0:y1, x0:x1]):
                found.append(TextBox(box.x0 + x0, box.y0 + y0, box.x1 + x0, box.y1 + y0, box.score))
        return found
