"""DICOM display rendering: the one module the detector, the `redact` command and the viewer
use to turn decoded pixels into 8-bit RGB (plain: arrays and datasets in, arrays out).

Interface (stable):

    render_frame_uint8(ds, frame, *, index=0, window=None, overlays=True) -> (H, W, 3) uint8
    plain_display(frame) -> (H, W, 3) uint8 | None   # an 8-bit frame shown as it is stored
    shown_as_stored(frame, display) -> bool   # display == plain_display(frame)
    render_frames_uint8(ds, pixels, *, window=None, overlays=True) -> (F, H, W, 3) uint8
    modality_values(ds, frame, *, index=0) -> float64 (H, W)   # e.g. Hounsfield units for CT
    window_choice(ds, *, window=None, centre=None, width=None) -> Window | None
    window_options(ds) -> dict        # what a viewer may ask for this dataset
    display_notes(ds) -> list[str]    # broken optional elements that rendering ignores
    stretch_to_uint8(values) -> uint8   # the "auto" window: 0.5-99.5 percentiles
    is_greyscale(ds) -> bool
    PRESETS = {"brain": (40, 80), ...}   # name -> (centre, width), Hounsfield units

`frame` is one frame of `engine.dicom.io.decode_pixels(ds)` (stored values, YBR already
converted to RGB, palette indices kept) and `index` its position, for per-frame headers.

Greyscale (MONOCHROME1/2), in the order of PS3.4 N.2:
1. modality LUT: the Modality LUT Sequence or RescaleSlope/RescaleIntercept (pydicom's
   `apply_modality_lut`; per-frame values from an enhanced multi-frame file's functional
   groups when it has them);
2. VOI: the requested window, or by default the file's own: its first WindowCenter/Width
   (with its VOILUTFunction: LINEAR, LINEAR_EXACT or SIGMOID) or else its VOI LUT Sequence,
   else "auto" (the 0.5-99.5 percentile range of the frame). Windows go through pydicom's
   `apply_windowing` with an 8-bit output range, LUTs through `apply_voi`;
3. MONOCHROME1 is inverted (its lowest value is white);
4. overlay planes (60xx,3000) are burned in white, frame by frame for multi-frame overlays.
An optional element that is present but empty or malformed (an empty Modality or VOI LUT
Sequence item, an empty or non-numeric RescaleSlope/RescaleIntercept) is treated as absent;
`display_notes` says which, for the scan's processing notes.
PALETTE COLOR goes through its palette (16-bit entries keep their top byte); RGB (and YBR,
converted on decoding) is scaled from BitsStored to 8 bits. Windows apply to greyscale only.

Windows (`window_choice`): a preset name from PRESETS (CT only: they are Hounsfield units),
"file" (the file's own window or VOI LUT), "auto", or an explicit centre and width (width >= 1).
Anything else is the 400 `invalid_window`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing
from pydicom.tag import Tag

from engine import errors
from engine.dicom.io import pixels_photometric

# Hounsfield-unit windows (centre, width), as in Radiopaedia's "Windowing (CT)" article:
# head (brain, subdural, stroke), chest (lung, mediastinum), bone, abdomen and liver.
PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (80.0, 200.0),
    "stroke": (40.0, 40.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
}
SPECIAL_WINDOWS = ("file", "auto")
# Every value `?window=` takes (the API's choices, in this order).
WINDOW_NAMES: tuple[str, ...] = (*PRESETS, *SPECIAL_WINDOWS)
OVERLAY_GROUPS = tuple(range(0x6000, 0x6020, 2))
OVERLAY_VALUE = 255


@dataclass(frozen=True)
class Window:
    """A VOI choice. kind: "preset" or "custom" (centre and width), "file", or "auto"."""

    kind: str
    name: str
    centre: float | None = None
    width: float | None = None


def is_greyscale(ds: Dataset) -> bool:
    return pixels_photometric(ds) in ("MONOCHROME1", "MONOCHROME2")


def _first(value: Any, index: int = 0) -> float | None:
    if value is None:
        return None
    if isinstance(value, list | tuple | pydicom.multival.MultiValue):
        if not value:
            return None
        value = value[min(index, len(value) - 1)]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# --- Per-frame header (enhanced multi-frame) ------------------------------------------------

_FRAME_KEYWORDS = (
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "WindowCenterWidthExplanation",
    "VOILUTFunction",
)


def _functional_item(ds: Dataset, index: int, sequence: str) -> Dataset | None:
    """The frame's item of a functional-group macro (per-frame first, then shared)."""
    for groups, position in (
        ("PerFrameFunctionalGroupsSequence", index),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        items = ds.get(groups)
        if not items or position >= len(items):
            continue
        macro = items[position].get(sequence)
        if macro:
            return cast("Dataset | None", macro[0])
    return None


def frame_header(ds: Dataset, index: int = 0) -> Dataset:
    """`ds` itself, or for an enhanced multi-frame file a copy of the attributes rendering
    needs, with the frame's rescale and window from its functional groups."""
    transform = _functional_item(ds, index, "PixelValueTransformationSequence")
    voi = _functional_item(ds, index, "FrameVOILUTSequence")
    if transform is None and voi is None:
        return ds
    header = Dataset()
    for element in ds:
        if element.tag.group == 0x0028 or element.keyword in ("Modality", "Manufacturer"):
            header.add(element)
    for item in (transform, voi):
        if item is None:
            continue
        for keyword in _FRAME_KEYWORDS:
            if keyword in item:
                setattr(header, keyword, item.get(keyword))
    return header


# --- Optional elements that are there but broken -------------------------------------------


def _broken_lut(items: Any) -> bool:
    """An empty LUT sequence, or a first item without a three-value descriptor and data."""
    try:
        item = items[0]
        descriptor = item.get("LUTDescriptor")
        return not (descriptor is not None and len(descriptor) == 3 and item.get("LUTData"))
    except Exception:  # An item pydicom cannot even read.
        return True


def _broken_elements(ds: Dataset) -> dict[str, str]:
    """Keyword -> why, for the optional display elements present in `ds` but empty or
    malformed: such a file renders as if they were absent (PS3.5 treats an empty Type 3
    value as absent, and no reader can use half a LUT)."""
    broken: dict[str, str] = {}
    for keyword in ("ModalityLUTSequence", "VOILUTSequence"):
        if keyword in ds and _broken_lut(ds.get(keyword)):
            broken[keyword] = "empty or incomplete"
    rescale = [k for k in ("RescaleSlope", "RescaleIntercept") if k in ds]
    bad = [k for k in rescale if _first(ds.get(k)) is None]
    if bad:
        # Slope and intercept only mean something together: one unusable drops both.
        for keyword in rescale:
            broken[keyword] = "empty or not a number" if keyword in bad else "without its pair"
    return broken


def display_notes(ds: Dataset) -> list[str]:
    """What rendering ignored in this file, for the scan's processing notes."""
    broken = _broken_elements(frame_header(ds, 0))
    return [f"{keyword} is {why}: ignored, as if absent" for keyword, why in broken.items()]


def usable_header(ds: Dataset) -> Dataset:
    """`ds`, or a copy of it without its broken optional display elements."""
    broken = _broken_elements(ds)
    if not broken:
        return ds
    drop = {int(Tag(keyword)) for keyword in broken}
    # A new mapping of the same (still raw) elements: deleting from a copy.copy of a pydicom
    # dataset would delete from the original too.
    tags = list(ds.keys())
    header = Dataset({tag: ds.get_item(tag) for tag in tags if int(tag) not in drop})
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta
    header.set_original_encoding(*ds.original_encoding)
    return header


# --- Modality and VOI -----------------------------------------------------------------------


def modality_values(ds: Dataset, frame: np.ndarray, *, index: int = 0) -> np.ndarray:
    """One monochrome frame in modality units (e.g. Hounsfield), as float64."""
    header = usable_header(frame_header(ds, index))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = apply_modality_lut(frame, header)
    return np.asarray(values, dtype=np.float64)


def stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    """Grey values to uint8 over their 0.5-99.5 percentile range (min/max if that is empty)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = np.percentile(finite, [0.5, 99.5])
    if high <= low:
        low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) / (high - low) * 255.0
    return cast("np.ndarray", np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _windowed(
    values: np.ndarray, centre: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """pydicom's windowing (PS3.3 C.11.2.1.2) onto 0..255."""
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored = 8
    voi.PixelRepresentation = 0
    voi.WindowCenter = centre
    voi.WindowWidth = width
    voi.VOILUTFunction = function
    out = apply_windowing(np.asarray(values, dtype=np.float64), voi)
    return cast("np.ndarray", np.clip(np.rint(out), 0, 255).astype(np.uint8))


def _file_window(header: Dataset) -> tuple[float, float, str] | None:
    centre = _first(header.get("WindowCenter"))
    width = _first(header.get("WindowWidth"))
    function = str(header.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    minimum = 1.0 if function == "LINEAR" else 0.0
    if centre is None or width is None or width < minimum or (width == 0):
        return None
    return centre, width, function


def _has_voi_lut(header: Dataset) -> bool:
    items = header.get("VOILUTSequence")
    return bool(items) and "LUTDescriptor" in items[0] and "LUTData" in items[0]


def _voi_lut(values: np.ndarray, header: Dataset) -> np.ndarray:
    """The file's first VOI LUT, its output scaled from the LUT's bit depth to 0..255."""
    item = header.VOILUTSequence[0]
    bits = int(item.LUTDescriptor[2]) or 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # apply_voi indexes the LUT with integers: modality values are whole for LUT files.
        out = np.asarray(apply_voi(np.rint(values).astype(np.int64), header), dtype=np.float64)
    top = max(float(2**bits - 1), float(out.max(initial=0)))
    return np.clip(np.rint(out / top * 255.0), 0, 255).astype(np.uint8)


def has_file_voi(header: Dataset) -> bool:
    return _file_window(header) is not None or _has_voi_lut(header)


def _apply_voi(values: np.ndarray, header: Dataset, window: Window | None) -> np.ndarray:
    if window is None or window.kind == "file":
        own = _file_window(header)
        if own is not None:
            return _windowed(values, *own)
        if _has_voi_lut(header):
            return _voi_lut(values, header)
        return stretch_to_uint8(values)
    if window.kind == "auto":
        return stretch_to_uint8(values)
    assert window.centre is not None and window.width is not None
    return _windowed(values, window.centre, window.width)


# --- Overlays -------------------------------------------------------------------------------


def overlay_groups(ds: Dataset) -> list[int]:
    return [group for group in OVERLAY_GROUPS if (group, 0x3000) in ds]


def _burn_overlays(grey: np.ndarray, ds: Dataset, index: int) -> np.ndarray:
    """Overlay planes drawn in white onto one frame, placed by their origin."""
    height, width = grey.shape
    for group in overlay_groups(ds):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                plane = np.asarray(ds.overlay_array(group))
            frames_in_overlay = int(ds.get((group, 0x0015)).value if (group, 0x0015) in ds else 1)
            first_frame = int(ds.get((group, 0x0051)).value if (group, 0x0051) in ds else 1)
            origin = ds.get((group, 0x0050))
            row0, col0 = (int(origin.value[0]) - 1, int(origin.value[1]) - 1) if origin else (0, 0)
        except Exception:  # A damaged overlay is not worth losing the image over.
            continue
        if plane.ndim == 3:
            position = index - (first_frame - 1)
            if not 0 <= position < min(frames_in_overlay, plane.shape[0]):
                continue
            plane = plane[position]
        elif (group, 0x0051) in ds and index != first_frame - 1:
            continue  # A single-frame plane placed on one frame; without a place, on all.
        top, left = max(row0, 0), max(col0, 0)
        bottom = min(height, row0 + plane.shape[0])
        right = min(width, col0 + plane.shape[1])
        if bottom <= top or right <= left:
            continue
        part = plane[top - row0 : bottom - row0, left - col0 : right - col0].astype(bool)
        grey[top:bottom, left:right][part] = OVERLAY_VALUE
    return grey


# --- Windows --------------------------------------------------------------------------------


def window_choice(
    ds: Dataset,
    *,
    window: str | None = None,
    centre: float | None = None,
    width: float | None = None,
) -> Window | None:
    """The validated VOI request for `ds`; None means the default. invalid_window otherwise."""
    if window is None and centre is None and width is None:
        return None
    if not is_greyscale(ds):
        raise errors.invalid_window("Windowing applies to greyscale DICOM images only.")
    if window is not None and (centre is not None or width is not None):
        raise errors.invalid_window("Give either window or wc and ww, not both.")
    if window is None:
        if centre is None or width is None:
            raise errors.invalid_window("Give both wc (centre) and ww (width).")
        if not (math.isfinite(centre) and math.isfinite(width)) or width < 1:
            raise errors.invalid_window("ww must be at least 1 and both values finite.")
        return Window("custom", "custom", centre, width)
    name = window.strip().lower()
    if name == "auto":
        return Window("auto", "auto")
    if name == "file":
        if not has_file_voi(frame_header(ds, 0)):
            raise errors.invalid_window("This file has no window of its own.")
        return Window("file", "file")
    if name in PRESETS:
        if str(ds.get("Modality", "")).upper() != "CT":
            raise errors.invalid_window("Window presets are in Hounsfield units: CT only.")
        return Window("preset", name, *PRESETS[name])
    raise errors.invalid_window("window must be one of " + ", ".join(WINDOW_NAMES) + ".")


def window_options(ds: Dataset) -> dict[str, Any]:
    """What a viewer may ask of this dataset: {"windowable", "presets", "file", "default"}.

    presets: [{"name", "centre", "width"}] (CT only) then "file" (when the file has its own)
    and "auto"; file: the file's own windows [{"centre", "width", "explanation"}]."""
    if not is_greyscale(ds):
        return {"windowable": False, "presets": [], "file": [], "default": None}
    presets: list[dict[str, Any]] = []
    if str(ds.get("Modality", "")).upper() == "CT":
        presets = [{"name": n, "centre": c, "width": w} for n, (c, w) in PRESETS.items()]
    first = frame_header(ds, 0)  # an enhanced file keeps its windows per frame
    centres = first.get("WindowCenter")
    widths = first.get("WindowWidth")
    count = 0
    if centres is not None and widths is not None:
        count = len(centres) if isinstance(centres, pydicom.multival.MultiValue) else 1
    explanations = first.get("WindowCenterWidthExplanation")
    own = []
    for i in range(count):
        centre, width = _first(centres, i), _first(widths, i)
        if centre is None or width is None:
            continue
        explanation = ""
        if explanations is not None:
            values = (
                list(explanations)
                if isinstance(explanations, pydicom.multival.MultiValue)
                else [explanations]
            )
            explanation = str(values[i]) if i < len(values) else ""
        own.append({"centre": centre, "width": width, "explanation": explanation})
    file_voi = has_file_voi(first)
    if file_voi:
        presets.append({"name": "file", "centre": None, "width": None})
    presets.append({"name": "auto", "centre": None, "width": None})
    return {
        "windowable": True,
        "presets": presets,
        "file": own,
        "default": "file" if file_voi else "auto",
    }


# --- Rendering ------------------------------------------------------------------------------


def _to_uint8_by_bits(frame: np.ndarray, bits: int) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    top = float(2**bits - 1) if bits > 0 else float(frame.max() or 1)
    scaled = frame.astype(np.float64) / top * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def plain_display(frame: np.ndarray) -> np.ndarray | None:
    """An 8-bit frame shown as it is stored, as 8-bit RGB: the frame itself when it is
    (H, W, 3) uint8, grey repeated in three channels when (H, W) uint8; None otherwise. A
    frame whose rendering equals this needs nothing but its pixels to be shown again (the
    display PNGs of a cine's later frames are drawn so, on request: imaging.vault.derivatives)."""
    if frame.dtype != np.uint8:
        return None
    if frame.ndim == 3 and frame.shape[-1] == 3:
        return frame
    if frame.ndim == 2:
        return np.repeat(frame[..., np.newaxis], 3, axis=2)
    return None


def shown_as_stored(frame: np.ndarray, display: np.ndarray) -> bool:
    """Whether `display` (a rendering of `frame`) is `plain_display(frame)`: then the frame's
    pixels are all it takes to show it again."""
    plain = plain_display(frame)
    if plain is None:
        return False
    return plain is display or np.array_equal(plain, display)


def render_frame_uint8(
    ds: Dataset,
    frame: np.ndarray,
    *,
    index: int = 0,
    window: Window | None = None,
    overlays: bool = True,
) -> np.ndarray:
    """One decoded frame (or a crop of one, with overlays=False) as (H, W, 3) uint8 RGB."""
    photometric = pixels_photometric(ds)
    if photometric == "PALETTE COLOR":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rgb = np.asarray(apply_color_lut(frame, ds))
        if rgb.dtype != np.uint8:
            # 16-bit palette entries: keep the top byte.
            rgb = (rgb.astype(np.uint32) >> 8).astype(np.uint8)
        return np.ascontiguousarray(rgb[..., :3])
    if frame.ndim == 3:
        bits = int(ds.get("BitsStored") or frame.dtype.itemsize * 8)
        return np.ascontiguousarray(_to_uint8_by_bits(frame, bits)[..., :3])
    header = usable_header(frame_header(ds, index))
    grey = _apply_voi(modality_values(ds, frame, index=index), header, window)
    if photometric == "MONOCHROME1":
        grey = 255 - grey  # MONOCHROME1: the lowest value is white.
    if overlays:
        grey = _burn_overlays(np.array(grey, copy=True), ds, index)
    return np.ascontiguousarray(np.repeat(grey[..., np.newaxis], 3, axis=2))


def render_frames_uint8(
    ds: Dataset, pixels: np.ndarray, *, window: Window | None = None, overlays: bool = True
) -> np.ndarray:
    """Every frame of `decode_pixels(ds)` rendered: (F, H, W, 3) uint8."""
    return np.stack(
        [
            render_frame_uint8(ds, frame, index=i, window=window, overlays=overlays)
            for i, frame in enumerate(pixels)
        ]
    )
