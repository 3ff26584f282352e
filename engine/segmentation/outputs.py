"""What a doctor sees of a segmentation: the overlay PNG with its legend, and the measurements.

    class_colours(classes) -> {index: (r, g, b)}
    overlay_png(base, labels, classes, *, alpha=0.45, title="") -> PNG bytes
    measure(labels, classes, spacing_mm=None) -> Measurements

Plain module (arrays in, bytes and numbers out). `base` is the REDACTED display image of the
frame (uint8, grey or RGB): an overlay never shows burned-in identity. Each class is tinted
with its colour and outlined; a legend strip below the image names the classes.

Measurements: pixel counts per class always. With the in-plane spacing (row, column) in mm,
a single image gets areas in mm^2; with a slice spacing too, a volume (Z, H, W) gets volumes
in mL (voxel count x row x column x slice spacing / 1000). Background (class 0) is counted
but not tinted.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

# Distinct, colour-blind-aware hues (Okabe-Ito first), cycled for models with many classes.
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 114, 178),
    (230, 159, 0),
    (0, 158, 115),
    (204, 121, 167),
    (86, 180, 233),
    (213, 94, 0),
    (240, 228, 66),
    (150, 150, 150),
)
FONT_PATHS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf"),
)


def class_colours(classes: dict[int, str]) -> dict[int, tuple[int, int, int]]:
    """A colour per foreground class, by index (stable across frames, jobs and the viewer)."""
    foreground = sorted(k for k in classes if k != 0)
    return {k: _PALETTE[i % len(_PALETTE)] for i, k in enumerate(foreground)}


@cache
def _font(size: int) -> Any:
    for path in FONT_PATHS:
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default()


def _rgb(base: np.ndarray) -> np.ndarray:
    image = np.asarray(base)
    if image.dtype != np.uint8:
        raise ValueError("the overlay base is a uint8 display image")
    if image.ndim == 2:
        return np.stack([image] * 3, axis=-1)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[..., :3]
    raise ValueError(f"cannot overlay on an image of shape {image.shape}")


def overlay_image(
    base: np.ndarray, labels: np.ndarray, classes: dict[int, str], *, alpha: float = 0.45
) -> np.ndarray:
    """(H, W, 3) uint8: each class tinted by its colour, with a one-pixel outline."""
    rgb = _rgb(base).astype(np.float32)
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"mask {labels.shape} and image {rgb.shape[:2]} differ in size")
    out = rgb.copy()
    for k, colour in class_colours(classes).items():
        mask = labels == k
        if not mask.any():
            continue
        tint = np.array(colour, dtype=np.float32)
        out[mask] = (1.0 - alpha) * rgb[mask] + alpha * tint
        edge = mask & ~ndimage.binary_erosion(mask)
        out[edge] = tint
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def overlay_png(
    base: np.ndarray,
    labels: np.ndarray,
    classes: dict[int, str],
    *,
    alpha: float = 0.45,
    title: str = "",
) -> bytes:
    """The overlay with a legend strip below it (swatch and name per foreground class)."""
    tinted = overlay_image(base, labels, classes, alpha=alpha)
    height, width = tinted.shape[:2]
    colours = class_colours(classes)
    size = max(11, min(18, width // 40))
    font = _font(size)
    line = size + 8
    entries = [(colours[k], classes[k].replace("_", " ")) for k in sorted(colours)]
    if title:
        entries.insert(0, ((0, 0, 0), title))
    # Lay the entries out left to right, wrapping to as many rows as the width needs.
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    positions: list[tuple[int, int]] = []
    x, y = 8, 6
    for colour, text in entries:
        swatch = 0 if colour == (0, 0, 0) and text == title else size + 6
        needed = swatch + int(probe.textlength(text, font=font)) + 16
        if x > 8 and x + needed > width:
            x, y = 8, y + line
        positions.append((x, y))
        x += needed
    legend_height = y + line + 4
    canvas = Image.new("RGB", (width, height + legend_height), (255, 255, 255))
    canvas.paste(Image.fromarray(tinted), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for (colour, text), (x, y) in zip(entries, positions, strict=True):
        top = height + y
        if title and text == title and colour == (0, 0, 0):
            draw.text((x, top), text, fill=(0, 0, 0), font=font)
            continue
        draw.rectangle([x, top + 2, x + size, top + 2 + size], fill=colour, outline=(0, 0, 0))
        draw.text((x + size + 6, top), text, fill=(0, 0, 0), font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


@dataclass
class Measurements:
    pixels: dict[str, int]
    spacing_mm: list[float] | None = None  # [row, column] or [slice, row, column]
    areas_mm2: dict[str, float] | None = None
    volumes_ml: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pixels": self.pixels, "spacing_mm": self.spacing_mm}
        if self.areas_mm2 is not None:
            out["areas_mm2"] = self.areas_mm2
        if self.volumes_ml is not None:
            out["volumes_ml"] = self.volumes_ml
        if self.notes:
            out["notes"] = self.notes
        return out


def measure(
    labels: np.ndarray,
    classes: dict[int, str],
    *,
    pixel_spacing_mm: tuple[float, float] | None = None,
    slice_spacing_mm: float | None = None,
) -> Measurements:
    """Counts per class; areas (one 2D frame) or volumes (frames with a slice spacing).

    `labels` is (H, W) or (Z, H, W). Frames with no slice spacing (a cine loop, an
    ultrasound clip) are not a volume: they get the mean area per frame, with a note.
    """
    counts = np.bincount(labels.ravel(), minlength=max(classes) + 1)
    pixels = {classes[k]: int(counts[k]) for k in sorted(classes)}
    result = Measurements(pixels=pixels)
    if pixel_spacing_mm is None:
        result.notes.append("no pixel spacing: pixel counts only")
        return result
    row, column = (float(v) for v in pixel_spacing_mm)
    frames = labels.shape[0] if labels.ndim == 3 else 1
    if frames > 1 and slice_spacing_mm:
        voxel_ml = row * column * float(slice_spacing_mm) / 1000.0
        result.spacing_mm = [float(slice_spacing_mm), row, column]
        result.volumes_ml = {
            classes[k]: round(float(counts[k]) * voxel_ml, 3) for k in sorted(classes)
        }
        return result
    result.spacing_mm = [row, column]
    per_frame = 1.0 / frames
    result.areas_mm2 = {
        classes[k]: round(float(counts[k]) * row * column * per_frame, 2) for k in sorted(classes)
    }
    if frames > 1:
        result.notes.append(f"{frames} frames without a slice spacing: mean area per frame")
    return result
