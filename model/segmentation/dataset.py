"""Segmentation data sets in one convention, and a loader for it.

    DIR/classes.json            {"0": "background", "1": "csf", ...}  index -> name, 0 included
    DIR/images/<case>.<ext>     ext: png | nii.gz | dcm
    DIR/masks/<case>.<ext>      same case names; values are class indices
    DIR/spacing.json            optional, for PNG only: {"*": [row_mm, col_mm], "<case>": [...]}

Arrays come back as (H, W) for a single image or (Z, H, W) for a volume, with the spacing in
mm per axis in the same order. Where each format keeps its spacing:
- png: none in the file, so spacing.json or 1 mm. 8- or 16-bit grey; colour is made grey.
- nii.gz: the header zooms. A NIfTI array (X, Y[, Z]) is read as slices along its last axis:
  (Z, X, Y) with spacing (dz, dx, dy); a (X, Y) or (X, Y, 1) file is one 2D image.
- dcm: PixelSpacing (row, col), and SpacingBetweenSlices or SliceThickness for multi-frame.
  Pixel values go through the modality LUT (RescaleSlope/Intercept). A mask .dcm is either
  an ordinary image whose pixel values are class indices, or a DICOM SEG (Modality SEG):
  each segment whose SegmentLabel matches a name in classes.json (case-insensitive) becomes
  that class, otherwise its segment number is the class index; frame f of a segment goes to
  the image frame named by its SourceImageSequence ReferencedFrameNumber, or to the f-th
  image frame when the SEG does not say.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

EXTENSIONS = (".nii.gz", ".png", ".dcm")
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


class DatasetError(ValueError):
    """The directory does not follow the convention; the message says where."""


@dataclass
class Case:
    name: str
    image: np.ndarray  # float32, (H, W) or (Z, H, W)
    mask: np.ndarray  # uint8 class indices, same shape
    spacing: tuple[float, ...]  # mm per axis


def split_name(path: Path) -> tuple[str, str] | None:
    for ext in EXTENSIONS:
        if path.name.lower().endswith(ext):
            return path.name[: -len(ext)], ext
    return None


def load_classes(root: Path) -> dict[int, str]:
    path = Path(root) / "classes.json"
    if not path.is_file():
        raise DatasetError(f"{path} is missing")
    classes = {int(k): str(v) for k, v in json.loads(path.read_text()).items()}
    if 0 not in classes:
        raise DatasetError(f"{path} must name class 0 (background)")
    return classes


def _index(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder} is missing")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        parts = split_name(path)
        if parts is None:
            continue
        if parts[0] in found:
            raise DatasetError(f"case {parts[0]!r} has two files in {folder}")
        found[parts[0]] = path
    return found


def case_names(root: Path) -> list[str]:
    root = Path(root)
    images, masks = _index(root / "images"), _index(root / "masks")
    missing = sorted(set(images) ^ set(masks))
    if missing:
        raise DatasetError(f"cases without both an image and a mask: {', '.join(missing[:10])}")
    if not images:
        raise DatasetError(f"no images in {root / 'images'}")
    return sorted(images)


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        if image.mode in ("RGB", "RGBA", "P", "LA"):
            return np.asarray(image.convert("L"))
        return np.asarray(image)


def _png_spacing(root: Path, case: str) -> tuple[float, float]:
    path = root / "spacing.json"
    if not path.is_file():
        return (1.0, 1.0)
    table = json.loads(path.read_text())
    row, col = table.get(case, table.get("*", [1.0, 1.0]))
    return (float(row), float(col))


def _read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    import nibabel as nib

    # nibabel types load() as its base class; a .nii(.gz) loads as a Nifti1Image.
    image: Any = nib.load(path)
    data = np.asarray(image.dataobj)
    zooms = tuple(float(z) for z in image.header.get_zooms()[: data.ndim])
    if data.ndim == 3 and data.shape[2] == 1:
        data, zooms = data[:, :, 0], zooms[:2]
    if data.ndim == 2:
        return data, zooms
    if data.ndim != 3:
        raise DatasetError(f"{path}: expected 2 or 3 dimensions, got {data.shape}")
    return np.transpose(data, (2, 0, 1)), (zooms[2], zooms[0], zooms[1])


def _dicom_spacing(ds: object, frames: int) -> tuple[float, ...]:
    def first(*keywords: str) -> object | None:
        for keyword in keywords:
            value = getattr(ds, keyword, None)
            if value is not None:
                return value
        shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
        if shared:
            measures = getattr(shared[0], "PixelMeasuresSequence", None)
            if measures:
                for keyword in keywords:
                    value = getattr(measures[0], keyword, None)
                    if value is not None:
                        return value
        return None

    pixel = first("PixelSpacing")
    row, col = (float(pixel[0]), float(pixel[1])) if pixel else (1.0, 1.0)  # type: ignore[index]
    if frames == 1:
        return (row, col)
    between = first("SpacingBetweenSlices", "SliceThickness")
    return (float(between) if between else 1.0, row, col)  # type: ignore[arg-type]


def _read_dicom(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(path)
    data = apply_modality_lut(ds.pixel_array, ds)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    return np.asarray(data), _dicom_spacing(ds, frames)


def _read_dicom_seg(
    path: Path, shape: tuple[int, ...], classes: dict[int, str]
) -> np.ndarray | None:
    """Class-index mask from a DICOM SEG, or None when the file is not a SEG."""
    import pydicom

    ds = pydicom.dcmread(path)
    if ds.get("Modality") != "SEG" and ds.get("SOPClassUID") != SEG_SOP_CLASS:
        return None
    by_name = {name.lower(): index for index, name in classes.items()}
    class_of = {
        int(item.SegmentNumber): by_name.get(
            str(getattr(item, "SegmentLabel", "")).lower(), int(item.SegmentNumber)
        )
        for item in ds.SegmentSequence
    }
    pixels = ds.pixel_array
    pixels = pixels[None] if pixels.ndim == 2 else pixels
    mask = np.zeros(shape, dtype=np.uint8)
    volume = mask if len(shape) == 3 else mask[None]
    seen: dict[int, int] = {}
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        target = seen.get(segment, 0)
        seen[segment] = target + 1
        derivation = getattr(item, "DerivationImageSequence", None)
        if derivation and getattr(derivation[0], "SourceImageSequence", None):
            number = getattr(derivation[0].SourceImageSequence[0], "ReferencedFrameNumber", None)
            if number is not None:
                target = int(number if not isinstance(number, list) else number[0]) - 1
        if not 0 <= target < volume.shape[0]:
            raise DatasetError(f"{path}: frame {f} points outside the image ({target})")
        volume[target][pixels[f] > 0] = class_of[segment]
    return mask


def read_image(path: Path, root: Path, case: str) -> tuple[np.ndarray, tuple[float, ...]]:
    ext = split_name(path)[1]  # type: ignore[index]
    if ext == ".png":
        return _read_png(path), _png_spacing(root, case)
    if ext == ".nii.gz":
        return _read_nifti(path)
    return _read_dicom(path)


def case_index(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """The image and mask files of every case; pass it to load_case when loading many cases
    (listing a folder of thousands of files once per case made loading quadratic)."""
    root = Path(root)
    return _index(root / "images"), _index(root / "masks")


def load_case(
    root: Path,
    case: str,
    classes: dict[int, str] | None = None,
    index: tuple[dict[str, Path], dict[str, Path]] | None = None,
) -> Case:
    root = Path(root)
    classes = classes if classes is not None else load_classes(root)
    images, masks = index if index is not None else case_index(root)
    image_path, mask_path = images[case], masks[case]
    image, spacing = read_image(image_path, root, case)
    if image.ndim == 3 and image.shape[0] == 1:
        image, spacing = image[0], spacing[1:]
    mask: np.ndarray | None = None
    if split_name(mask_path)[1] == ".dcm":  # type: ignore[index]
        mask = _read_dicom_seg(mask_path, image.shape, classes)
    if mask is None:
        mask = read_image(mask_path, root, case)[0]
        if mask.ndim == 3 and mask.shape[0] == 1:
            mask = mask[0]
    if mask.shape != image.shape:
        raise DatasetError(f"case {case!r}: image {image.shape} but mask {mask.shape}")
    rounded = np.rint(mask).astype(np.int64)
    unknown = sorted(set(np.unique(rounded).tolist()) - set(classes))
    if unknown:
        raise DatasetError(f"case {case!r}: mask values {unknown} are not in classes.json")
    return Case(case, image.astype(np.float32), rounded.astype(np.uint8), spacing)


def iter_cases(root: Path, names: list[str] | None = None) -> Iterator[Case]:
    root = Path(root)
    classes = load_classes(root)
    index = case_index(root)
    for name in names if names is not None else case_names(root):
        yield load_case(root, name, classes, index)
