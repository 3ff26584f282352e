"""The "grid" overview: the redacted image with numbered, labelled boxes over each region.

Interface (stable):

    GridBox(number, box, label, confidence=None)     # box (x0, y0, x1, y1), half-open
    draw_grid(image_uint8, regions) -> np.ndarray    # (H, W, 3) uint8, a new array

`image_uint8` is one frame, (H, W) or (H, W, 3) uint8 (e.g. the redacted frame rendered, or
`DecodedImage.display[frame]` after redaction); pass only the boxes of that frame. Each box
gets a two-pixel outline and a tag "number label confidence%" in a filled band above it
(inside the image, below the box top when there is no room above). Colours cycle through a
palette chosen to read on black, white and grey; tag text is black or white, whichever
contrasts more with its band. Line width and font size scale with the image.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_PATH = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")

# Okabe-Ito colours: distinct for colour-blind readers, visible on grey medical images.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
)


# The detector's class names as people read them on the image (the pages use the same words).
CAPTIONS = {"phi_text": "patient text", "tech_text": "technical", "barcode": "barcode"}


@dataclass(frozen=True)
class GridBox:
    number: int
    box: Sequence[int]
    label: str
    confidence: float | None = None

    @property
    def caption(self) -> str:
        text = f"{self.number} {CAPTIONS.get(self.label, self.label)}".strip()
        if self.confidence is not None:
            text += f" {round(self.confidence * 100)}%"
        return text


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if FONT_PATH.exists():
        return ImageFont.truetype(str(FONT_PATH), size)
    return ImageFont.load_default(size)


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    red, green, blue = background
    luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def draw_grid(image_uint8: np.ndarray, regions: Iterable[GridBox]) -> np.ndarray:
    if image_uint8.dtype != np.uint8:
        raise ValueError("draw_grid takes a uint8 rendering")
    if image_uint8.ndim == 2:
        rgb = np.repeat(image_uint8[..., np.newaxis], 3, axis=2)
    elif image_uint8.ndim == 3 and image_uint8.shape[2] >= 3:
        rgb = image_uint8[..., :3]
    else:
        raise ValueError(f"draw_grid takes (H, W) or (H, W, 3), not {image_uint8.shape}")
    canvas = Image.fromarray(np.ascontiguousarray(rgb))
    draw = ImageDraw.Draw(canvas)
    height, width = rgb.shape[:2]
    scale = max(height, width)
    line = max(1, round(scale / 400))
    font = _font(max(10, min(32, round(scale / 45))))

    for region in regions:
        x0, y0, x1, y1 = (int(v) for v in region.box)
        x0, x1 = max(0, min(x0, width - 1)), max(0, min(x1, width))
        y0, y1 = max(0, min(y0, height - 1)), max(0, min(y1, height))
        colour = PALETTE[(region.number - 1) % len(PALETTE)]
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=line)

        caption = region.caption
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        text_w, text_h = right - left, bottom - top
        pad = max(1, line)
        band_h = text_h + 2 * pad
        band_y = y0 - band_h if y0 - band_h >= 0 else min(y0, max(0, height - band_h))
        band_x = min(x0, max(0, width - text_w - 2 * pad))
        draw.rectangle([band_x, band_y, band_x + text_w + 2 * pad, band_y + band_h], fill=colour)
        draw.text(
            (band_x + pad - left, band_y + pad - top),
            caption,
            fill=text_colour(colour),
            font=font,
        )
    return np.asarray(canvas, dtype=np.uint8).copy()
