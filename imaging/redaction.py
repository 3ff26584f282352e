"""Solid, irreversible redaction of boxes in an image (pure numpy).

Boxes are (x0, y0, x1, y1), half-open, in pixel coordinates. Shared by the pipeline and the
`redact` command so both pad and fill the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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
