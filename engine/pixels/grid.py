"""The "grid" overview: the redacted image with numbered, labelled boxes over each region.

Interface (stable):

    GridBox(number, box, label, confidence=None, manual=False, leftover=False)
    draw_grid(image_uint8, regions) -> np.ndarray    # (H, W, 3) uint8, a new array
    label_layout(boxes, sizes, width, height) -> list[LabelPlacement]   # no two tags meet

`image_uint8` is one frame, (H, W) or (H, W, 3) uint8 (e.g. the redacted frame rendered, or
`DecodedImage.display[frame]` after redaction); pass only the boxes of that frame. Each box
gets a two-pixel outline and a tag "number label confidence%" ("manual" for a box a person
drew) in a filled band. Tags never overlap (`label_layout`): each goes above its box, else
inside its top, below it, or beside it; in a crowded corner where none of those is free, the
tag moves to the nearest free place and a leader line joins it to its box; where even that
fails, the tag shrinks to the number alone. Leftover detections of the verification pass
(text still found after redaction, not yet covered) are drawn dashed in red with a "?" tag.
Colours cycle through a palette chosen to read on black, white and grey; tag text is black or
white, whichever contrasts more with its band. Line width and font size scale with the image.
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


LEFTOVER_COLOUR = (230, 30, 30)


@dataclass(frozen=True)
class GridBox:
    number: int
    box: Sequence[int]
    label: str
    confidence: float | None = None
    manual: bool = False  # drawn by a person: "manual", not a confidence
    leftover: bool = False  # found by the verification pass and not covered yet

    @property
    def caption(self) -> str:
        if self.leftover:
            return "? leftover text"
        text = f"{self.number} {CAPTIONS.get(self.label, self.label)}".strip()
        if self.manual:
            text += " manual"
        elif self.confidence is not None:
            text += f" {round(self.confidence * 100)}%"
        return text

    @property
    def short_caption(self) -> str:
        return "?" if self.leftover else str(self.number)


@dataclass(frozen=True)
class LabelPlacement:
    """Where one box's tag went: `rect` (x0, y0, x1, y1), half-open; `text` is the caption
    drawn (the full one, or the number alone); `leader` when it sits away from its box."""

    rect: tuple[int, int, int, int]
    text: str
    leader: bool


def _meets(a: Sequence[int], b: Sequence[int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# The free-space search works on cells: 4 px, or coarser on big frames so the grid of cells
# stays about 256 wide (a 3072 px radiograph: 12 px cells).
_CELL_MIN = 4
_CELLS_ACROSS = 256


def _cell_size(width: int, height: int) -> int:
    return max(_CELL_MIN, -(-max(width, height) // _CELLS_ACROSS))


def _free_spot(
    taken: np.ndarray,
    w: int,
    h: int,
    anchor: tuple[int, int],
    width: int,
    height: int,
    cell: int,
) -> tuple[int, int] | None:
    """The top-left of a free w x h rectangle nearest `anchor`, searched on the cell grid
    (`taken` marks cells that hold a tag already), or None."""
    cw, ch = -(-w // cell), -(-h // cell)
    rows, cols = taken.shape
    if ch > rows or cw > cols:
        return None
    sums = np.zeros((rows + 1, cols + 1), np.int32)
    sums[1:, 1:] = taken.astype(np.int32).cumsum(0).cumsum(1)
    area = sums[ch:, cw:] - sums[:-ch, cw:] - sums[ch:, :-cw] + sums[:-ch, :-cw]
    ys, xs = np.nonzero(area == 0)
    if ys.size == 0:
        return None
    px, py = xs * cell, ys * cell
    inside = (px + w <= width) & (py + h <= height)
    if not inside.any():
        return None
    px, py = px[inside], py[inside]
    best = int(np.argmin((px - anchor[0]) ** 2 + (py - anchor[1]) ** 2))
    return int(px[best]), int(py[best])


def _beside(box: Sequence[int], w: int, h: int) -> list[tuple[int, int, int, int]]:
    """The tag rectangles next to `box`, preferred first."""
    x0, y0, x1, y1 = box
    spots = [
        (x0, y0 - h),  # above, left-aligned
        (x0, y0),  # inside the top
        (x0, y1),  # below
        (x1, y0),  # right
        (x0 - w, y0),  # left
        (x1 - w, y0 - h),  # above, right-aligned
        (x1 - w, y1),  # below, right-aligned
    ]
    return [(cx, cy, cx + w, cy + h) for cx, cy in spots]


def label_layout(
    boxes: Sequence[Sequence[int]],
    sizes: Sequence[Sequence[tuple[str, int, int]]],
    width: int,
    height: int,
) -> list[LabelPlacement | None]:
    """A place for each box's tag, no two tags meeting.

    `sizes[i]` lists the captions box i may wear, preferred first, as (text, w, h) with the
    band's padding included. Each tag tries, in order: above the box, inside its top, below
    it, to its right, to its left; first where it covers no tag and no other box, then where
    it covers no tag. Else the nearest place clear of tags and boxes (a leader line joins
    it). Each step tries the full caption, then the number alone. A box
    whose every caption finds no room gets None (the outline is still drawn)."""
    placed: list[LabelPlacement | None] = []
    rects: list[tuple[int, int, int, int]] = []
    cell = _cell_size(width, height)
    taken = np.zeros((-(-height // cell), -(-width // cell)), bool)
    clipped = [
        (
            max(0, min(int(b[0]), width - 1)),
            max(0, min(int(b[1]), height - 1)),
            max(0, min(int(b[2]), width)),
            max(0, min(int(b[3]), height)),
        )
        for b in boxes
    ]

    def fits(rect: tuple[int, int, int, int]) -> bool:
        return (
            rect[0] >= 0
            and rect[1] >= 0
            and rect[2] <= width
            and rect[3] <= height
            and not any(_meets(rect, other) for other in rects)
        )

    boxes_taken = np.zeros_like(taken)
    for bx0, by0, bx1, by1 in clipped:
        boxes_taken[by0 // cell : -(-by1 // cell), bx0 // cell : -(-bx1 // cell)] = True

    for i, box in enumerate(clipped):
        others = [b for j, b in enumerate(clipped) if j != i]
        choice = None
        # Beside the box clear of everything; else away from every tag and box (a leader
        # line); else beside the box over another box; else anywhere no tag is.
        for step in ("beside-clear", "away-clear", "beside", "away"):
            for text, w, h in sizes[i]:
                if step.startswith("beside"):
                    for rect in _beside(box, w, h):
                        if fits(rect) and not (
                            step == "beside-clear" and any(_meets(rect, b) for b in others)
                        ):
                            choice = LabelPlacement(rect, text, leader=False)
                            break
                else:
                    grid = taken | boxes_taken if step == "away-clear" else taken
                    spot = _free_spot(grid, w, h, (box[0], max(0, box[1] - h)), width, height, cell)
                    if spot is not None:
                        rect = (spot[0], spot[1], spot[0] + w, spot[1] + h)
                        if fits(rect):
                            choice = LabelPlacement(rect, text, leader=True)
                if choice is not None:
                    break
            if choice is not None:
                break
        placed.append(choice)
        if choice is not None:
            rects.append(choice.rect)
            rx0, ry0, rx1, ry1 = choice.rect
            taken[ry0 // cell : -(-ry1 // cell), rx0 // cell : -(-rx1 // cell)] = True
    return placed


def _dashed_rectangle(
    draw: ImageDraw.ImageDraw, box: Sequence[int], colour: tuple[int, int, int], line: int
) -> None:
    x0, y0, x1, y1 = box
    dash = max(3, line * 3)
    for x in range(x0, x1 + 1, dash * 2):
        end = min(x + dash, x1)
        draw.line([(x, y0), (end, y0)], fill=colour, width=line)
        draw.line([(x, y1), (end, y1)], fill=colour, width=line)
    for y in range(y0, y1 + 1, dash * 2):
        end = min(y + dash, y1)
        draw.line([(x0, y), (x0, end)], fill=colour, width=line)
        draw.line([(x1, y), (x1, end)], fill=colour, width=line)


def _nearest(rect: Sequence[int], point: tuple[float, float]) -> tuple[float, float]:
    return (
        min(max(point[0], rect[0]), rect[2] - 1),
        min(max(point[1], rect[1]), rect[3] - 1),
    )


@lru_cache(maxsize=16)
def label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The grid labels' font at `size` px (DejaVu Sans Bold, else Pillow's own)."""
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
    font = label_font(max(10, min(32, round(scale / 45))))

    regions = list(regions)
    pad = max(1, line)
    sizes = []
    for region in regions:
        options = []
        for text in dict.fromkeys((region.caption, region.short_caption)):
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            options.append((text, right - left + 2 * pad + 1, bottom - top + 2 * pad + 1))
        sizes.append(options)
    boxes = [tuple(int(v) for v in region.box) for region in regions]
    placements = label_layout(boxes, sizes, width, height)

    for region, placement in zip(regions, placements, strict=True):
        x0, y0, x1, y1 = (int(v) for v in region.box)
        x0, x1 = max(0, min(x0, width - 1)), max(0, min(x1, width))
        y0, y1 = max(0, min(y0, height - 1)), max(0, min(y1, height))
        outline = [x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)]
        if region.leftover:
            colour = LEFTOVER_COLOUR
            _dashed_rectangle(draw, outline, colour, line)
        else:
            colour = PALETTE[(region.number - 1) % len(PALETTE)]
            draw.rectangle(outline, outline=colour, width=line)
        if placement is None:
            continue
        rx0, ry0, rx1, ry1 = placement.rect
        if placement.leader:
            centre = ((rx0 + rx1) / 2, (ry0 + ry1) / 2)
            start = _nearest(placement.rect, ((x0 + x1) / 2, (y0 + y1) / 2))
            end = _nearest((x0, y0, x1, y1), centre)
            draw.line([start, end], fill=colour, width=line)
        draw.rectangle([rx0, ry0, rx1 - 1, ry1 - 1], fill=colour)
        left, top, _, _ = draw.textbbox((0, 0), placement.text, font=font)
        draw.text(
            (rx0 + pad - left, ry0 + pad - top),
            placement.text,
            fill=text_colour(colour),
            font=font,
        )
    return np.asarray(canvas, dtype=np.uint8).copy()
