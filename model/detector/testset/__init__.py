"""The real test set: images with burned-in text shipped in PyPI packages, and their boxes.

`ground_truth.json` names each image by package and file (the images are not copied here) and
lists hand-checked boxes in original pixel coordinates, each with a class: `phi_text` (must be
found), `tech_text` or `barcode` (may be found without counting as a false region).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut

from model.detector.backgrounds import package_file

GROUND_TRUTH = Path(__file__).resolve().parent / "ground_truth.json"


@dataclass(frozen=True)
class TruthBox:
    cls: str
    x0: int
    y0: int
    x1: int
    y1: int
    text: str = ""


@dataclass(frozen=True)
class TestImage:
    package: str
    file: str
    frame: int
    boxes: tuple[TruthBox, ...]

    @property
    def key(self) -> str:
        return f"{self.package}:{self.file}#{self.frame}"


def to_display_uint8(frame: np.ndarray, photometric: str, ds: pydicom.Dataset) -> np.ndarray:
    """8-bit RGB or greyscale as a viewer shows it: 8-bit data as stored, else a linear window.

    pydicom already returns YBR pixel data converted to RGB, so no colour conversion here.
    """
    if photometric == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
        if frame.dtype != np.uint8:
            # 16-bit palette entries: keep the top byte.
            frame = (frame >> 8).astype(np.uint8) if frame.max() > 255 else frame.astype(np.uint8)
    if frame.dtype != np.uint8:
        low, high = float(frame.min()), float(frame.max())
        frame = ((frame.astype(np.float32) - low) / max(high - low, 1.0) * 255).astype(np.uint8)
    if photometric == "MONOCHROME1":
        frame = 255 - frame
    return np.ascontiguousarray(frame)


def load_frame(package: str, file: str, frame: int = 0) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(package_file(package, file))
        pixels = ds.pixel_array
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[frame]
    return to_display_uint8(pixels, str(ds.PhotometricInterpretation), ds)


def _four(box: list[int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return x0, y0, x1, y1


def load_ground_truth(path: Path = GROUND_TRUTH) -> list[TestImage]:
    entries = json.loads(path.read_text())["images"]
    return [
        TestImage(
            package=e["package"],
            file=e["file"],
            frame=e.get("frame", 0),
            boxes=tuple(
                TruthBox(b["cls"], *_four(b["box"]), b.get("text", "")) for b in e["boxes"]
            ),
        )
        for e in entries
    ]
