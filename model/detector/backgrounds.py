"""Text-free background images for the detector's training data.

Every background is a real medical image from an installed package (pydicom-data, pydicom's own
test files, deid-data, the nilearn MNI152 template) or a synthetic ultrasound-like picture.
Real images that carry burned-in text are the real test set: they are listed in
`TEST_SET_FILES` and can never be loaded as a background (see `load_backgrounds`).
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut, convert_color_space


def package_dir(package: str) -> Path:
    """Directory of an installed package, found without importing it (data_store is tiny)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(package)
    return Path(spec.origin).parent


# pydicom-data installs its files as the `data_store` package.
PACKAGE_DATA_DIRS: dict[str, tuple[str, str]] = {
    "pydicom-data": ("data_store", "data"),
    "pydicom": ("pydicom", "data/test_files"),
    "deid-data": ("deid_data", "data"),
}


def package_file(package: str, name: str) -> Path:
    """Path of `name` inside a package's data folder, e.g. ("deid-data", "animals/cat.dcm")."""
    module, sub = PACKAGE_DATA_DIRS[package]
    return package_dir(module) / sub / name


# Real images with burned-in text (or test patterns with text). They are the real test set or
# unusable, and must never become training backgrounds. Matched by file-name stem prefix so the
# compressed and multi-frame variants (US1_J2KI, OBXXXX1A_rle_2frame, ...) are covered too.
TEST_SET_FILES: tuple[str, ...] = (
    "US1_",
    "OBXXXX1A",
    "gdcm-US-ALOKA-16",
    "JPGLosslessP14SV1",
    "examples_palette",
    "examples_rgb_color",
    "examples_ybr_color",
    "color3d_jpeg_baseline",
    "GREYSCALE_IMAGE",
    "RGB_IMAGE",
    "ultrasound-multiframe",
    "GREYSCALE_CINE",
    "RGB_CINE",
    "mlut_18",
    "vlut_04",
)


def is_excluded_from_training(path: Path | str) -> bool:
    """True for any real image with burned-in text: those are for testing only."""
    stem = Path(path).name
    return any(stem.startswith(prefix) for prefix in TEST_SET_FILES)


@dataclass(frozen=True)
class BackgroundSource:
    """One allowed DICOM background; `keep_rows` crops away a burned-in L/R marker."""

    package: str
    name: str
    kind: str
    keep_rows: tuple[float, float] = (0.0, 1.0)


# Checked by eye on rendered overviews: none of these shows text in the kept rows.
BACKGROUND_SOURCES: tuple[BackgroundSource, ...] = (
    BackgroundSource("pydicom-data", "693_UNCR.dcm", "CT"),
    BackgroundSource("pydicom-data", "eCT_Supplemental.dcm", "CT"),
    BackgroundSource("pydicom-data", "explicit_VR-UN.dcm", "CT"),
    BackgroundSource("pydicom-data", "bad_sequence.dcm", "CT"),
    BackgroundSource("pydicom", "CT_small.dcm", "CT"),
    BackgroundSource("pydicom-data", "MR2_UNCR.dcm", "MR"),
    BackgroundSource("pydicom-data", "MR-SIEMENS-DICOM-WithOverlays.dcm", "MR"),
    BackgroundSource("pydicom", "examples_overlay.dcm", "MR"),
    BackgroundSource("pydicom", "MR_small.dcm", "MR"),
    BackgroundSource("pydicom-data", "emri_small.dcm", "MR"),
    BackgroundSource("pydicom-data", "JPEG-LL.dcm", "NM"),
    BackgroundSource("pydicom-data", "RG1_UNCR.dcm", "CR"),
    # RG3 has a mirrored "R" marker low on the right: keep the upper part only.
    BackgroundSource("pydicom-data", "RG3_UNCR.dcm", "CR", keep_rows=(0.0, 0.72)),
    # The cat radiograph has an "R" marker at the bottom.
    BackgroundSource("deid-data", "animals/cat.dcm", "DX", keep_rows=(0.0, 0.84)),
    BackgroundSource("pydicom-data", "color-pl.dcm", "US"),
    BackgroundSource("pydicom-data", "color-px.dcm", "US"),
    *(BackgroundSource("deid-data", f"dicom-cookies/image{i}.dcm", "RGB") for i in range(1, 8)),
)


def window_to_uint8(pixels: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Percentile window to 8 bits, the way a viewer's auto-window would show it."""
    data = pixels.astype(np.float32)
    low, high = np.percentile(data, [low_pct, high_pct])
    scaled = (data - low) / max(float(high - low), 1e-6) * 255.0
    return np.clip(scaled, 0, 255).astype(np.uint8)


def dicom_frames_as_uint8(path: Path) -> list[np.ndarray]:
    """All frames of a DICOM file as 8-bit greyscale or RGB arrays."""
    if is_excluded_from_training(path):
        raise ValueError(f"{path.name} has burned-in text and is reserved for testing")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    photometric = str(ds.PhotometricInterpretation)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    stack = pixels if frames > 1 else pixels[None]
    out = []
    for frame in stack:
        if photometric == "PALETTE COLOR":
            frame = apply_color_lut(frame, ds)
        elif photometric.startswith("YBR") and frame.ndim == 3:
            frame = convert_color_space(frame, photometric, "RGB")
        image = window_to_uint8(frame)
        if photometric == "MONOCHROME1":
            image = 255 - image
        out.append(image)
    return out


def mni152_slices(step: int = 6) -> list[np.ndarray]:
    """Axial, coronal and sagittal slices of the MNI152 T1 template and tissue maps."""
    from nilearn import datasets

    slices = []
    for loader in (
        datasets.load_mni152_template,
        datasets.load_mni152_gm_template,
        datasets.load_mni152_wm_template,
    ):
        volume = np.asarray(loader(resolution=1).get_fdata(), dtype=np.float32)
        for axis in range(3):
            size = volume.shape[axis]
            for index in range(size // 5, size * 4 // 5, step):
                plane = np.rot90(np.take(volume, index, axis=axis))
                if plane.max() > 0:
                    slices.append(window_to_uint8(plane, 0.0, 99.8))
    return slices


def load_backgrounds(include_mni: bool = True) -> dict[str, list[np.ndarray]]:
    """All real backgrounds, grouped by kind (CT, MR, ..., MNI)."""
    groups: dict[str, list[np.ndarray]] = {}
    for source in BACKGROUND_SOURCES:
        path = package_file(source.package, source.name)
        for frame in dicom_frames_as_uint8(path):
            top, bottom = (int(frame.shape[0] * f) for f in source.keep_rows)
            groups.setdefault(source.kind, []).append(np.ascontiguousarray(frame[top:bottom]))
    if include_mni:
        groups["MNI"] = mni152_slices()
    return groups
