"""The real test set: images with burned-in text shipped in PyPI packages, and their boxes.

`ground_truth.json` names each image by package and file (the images are not copied here) and
lists hand-checked boxes in original pixel coordinates, each with a class: `phi_text` (must be
found), `tech_text` or `barcode` (may be found without counting as a false region).

`leave_vendor_out.json` is the same for real images from other toolkits' test suites, in
`../shared/corpus/files/` beside the checkout (package "corpus"; MEDIMG_CORPUS_DIR overrides the
folder), from vendors that neither the generator nor the real set above ever used, each
pinned by sha256 and grouped by `vendor`. `corpus_available()` says whether the folder is
there (tests skip with that reason when it is not).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut

from model.detector.backgrounds import package_file

GROUND_TRUTH = Path(__file__).resolve().parent / "ground_truth.json"
LEAVE_VENDOR_OUT = Path(__file__).resolve().parent / "leave_vendor_out.json"


def corpus_dir() -> Path:
    """../shared/corpus beside the checkout, or MEDIMG_CORPUS_DIR."""
    configured = os.environ.get("MEDIMG_CORPUS_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3].parent / "shared" / "corpus"


def corpus_available() -> bool:
    return (corpus_dir() / "files").is_dir()


def image_path(package: str, file: str, sha256: str = "") -> Path:
    """Where a test image lives; a corpus file must match its pinned sha256."""
    if package != "corpus":
        return package_file(package, file)
    path = corpus_dir() / "files" / file
    if sha256 and hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
        raise ValueError(f"{path} is not the file the ground truth was drawn on (sha256)")
    return path


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
    vendor: str = ""
    sha256: str = ""

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


def load_frame(package: str, file: str, frame: int = 0, sha256: str = "") -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(image_path(package, file, sha256))
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
            vendor=e.get("vendor", ""),
            sha256=e.get("sha256", ""),
        )
        for e in entries
    ]
