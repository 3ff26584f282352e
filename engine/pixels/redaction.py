"""Solid, irreversible redaction of boxes in an image (pure numpy).

Boxes are (x0, y0, x1, y1), half-open, in pixel coordinates. Shared by the pipeline and the
`redact` command so both pad and fill the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import numpy as np

# Padding grows with the box: antialiased glyph edges and descenders reach further out of a
# tall line's box than out of a short one's.
DEFAULT_HEIGHT_RATIO = 0.25

Coords = tuple[int, int, int, int]


def pad_box(
    box: Sequence[float],
    padding: int,
    shape: tuple[int, ...],
    *,
    height_ratio: float = DEFAULT_HEIGHT_RATIO,
) -> Coords:
    """`box` grown by `padding + height_ratio * box height` on every side, clipped to `shape`.

    A box lying wholly outside the image comes back empty (x1 <= x0 or y1 <= y0).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    height, width = int(shape[0]), int(shape[1])
    grow = max(0.0, padding + height_ratio * max(0.0, y1 - y0))
    return (
        max(0, int(np.floor(x0 - grow))),
        max(0, int(np.floor(y0 - grow))),
        min(width, int(np.ceil(x1 + grow))),
        min(height, int(np.ceil(y1 + grow))),
    )


# A text line boxed short at one end is the commonest detector error on real scans: the
# last letter or two stay visible. Growing the box along its row while the strip beside it
# still holds ink closes that gap. Bounded, so texture never drags a box across an image.
LINE_MAX_GROWTH = 3.0  # at most this many box heights on each side
LINE_GAP = 0.8  # a run of ink-free columns this many box heights wide ends the line
INK_CONTRAST = 48  # grey levels from the line's background that count as ink


def _luminance(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 3:
        return cast("np.ndarray", pixels[..., :3].astype(np.float32).mean(axis=2))
    return pixels.astype(np.float32)


def complete_line(frame: np.ndarray, box: Sequence[float]) -> Coords:
    """`box` (a text line on a uint8 rendering) grown left and right over ink that continues
    the line: characters the detector boxed out. Other boxes come back unchanged (rounded)."""
    height, width = frame.shape[:2]
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    line_height = y1 - y0
    if line_height < 4 or x1 - x0 < 1.5 * line_height:
        return (x0, y0, x1, y1)  # not the shape of a line of text (a letter, a code, an icon)
    band = _luminance(frame[y0:y1])
    # The background is the box's commonest grey (ink spreads over many antialiased greys,
    # a flat background sits in one bin, even where the text covers half the box).
    inside = band[:, x0:x1].ravel()
    bins = np.minimum(inside, 255).astype(np.int64) // 16
    common = int(np.bincount(bins, minlength=16).argmax())
    background = float(np.median(inside[bins == common]))
    ink = np.asarray((np.abs(band - background) > INK_CONTRAST).any(axis=0))
    reach = int(LINE_MAX_GROWTH * line_height)
    gap = max(3, int(LINE_GAP * line_height))

    def grow(start: int, stop: int, step: int) -> int:
        last = start - step  # the box's own edge column
        for x in range(start, stop, step):
            if ink[x]:
                last = x
            elif abs(x - last) > gap:
                break
        return last

    new_x1 = grow(x1, min(width, x1 + reach), 1) + 1
    new_x0 = grow(x0 - 1, max(-1, x0 - 1 - reach), -1)
    return (min(x0, new_x0), y0, max(x1, new_x1), y1)


def fill_regions(image: np.ndarray, boxes: Iterable[Sequence[int]], value: int = 0) -> np.ndarray:
    """A copy of `image` (H, W[, C]) with every box filled with `value`; the input is untouched."""
    out = image.copy()
    height, width = out.shape[:2]
    for box in boxes:
        x0, y0, x1, y1 = (int(v) for v in box)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
        if x1 > x0 and y1 > y0:
            out[y0:y1, x0:x1] = value
    return out
