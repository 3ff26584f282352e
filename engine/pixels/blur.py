"""The blurred teaching copy: each region of a redacted frame painted over with a heavy blur
of its surroundings, so it reads as a soft patch instead of a black box.

    blur_regions(redacted_uint8, boxes) -> np.ndarray     # same shape and dtype, a new array

Irreversible and non-restorable by construction: it reads only the REDACTED frame, and every
pixel inside a box is first replaced by the mean of a ring around the box (outside every box),
then blurred and pixelated. No original pixel of a region goes in, so no deblurring brings one
back (a blur of the original text, however strong, could be sharpened again; this cannot).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

RING = 6  # pixels of surroundings averaged for a box's base colour
BLOCK = 8  # pixelation block inside the boxes


def _clip(box: Sequence[int], width: int, height: int) -> tuple[int, int, int, int] | None:
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(width, x1), min(height, y1)
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def blur_regions(redacted: np.ndarray, boxes: Sequence[Sequence[int]]) -> np.ndarray:
    """`redacted` (H, W) or (H, W, C) uint8 with every box painted over by a blur of what
    surrounds it. Outside the boxes the frame is returned unchanged."""
    if redacted.dtype != np.uint8 or redacted.ndim not in (2, 3):
        raise ValueError("blur_regions takes one uint8 frame, (H, W) or (H, W, C)")
    height, width = redacted.shape[:2]
    clipped = [c for c in (_clip(b, width, height) for b in boxes) if c is not None]
    out = redacted.copy()
    if not clipped:
        return out
    inside = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in clipped:
        inside[y0:y1, x0:x1] = True
    work = out.astype(np.float32)
    # 1. Each box becomes the mean colour of a ring around it (pixels outside every box).
    for x0, y0, x1, y1 in clipped:
        ry0, ry1 = max(0, y0 - RING), min(height, y1 + RING)
        rx0, rx1 = max(0, x0 - RING), min(width, x1 + RING)
        ring = ~inside[ry0:ry1, rx0:rx1]
        patch = work[ry0:ry1, rx0:rx1]
        base = patch[ring].mean(axis=0) if ring.any() else work[~inside].mean(axis=0)
        work[y0:y1, x0:x1] = base if (~inside).any() else 0
    # 2. A heavy blur of that, kept only inside the boxes, computed on a crop around each
    # box (three radii of margin: what a Gaussian of that radius can reach).
    flat = np.clip(work, 0, 255).astype(np.uint8)
    for x0, y0, x1, y1 in clipped:
        radius = max(4.0, min(x1 - x0, y1 - y0) / 3)
        margin = int(3 * radius) + 1
        cy0, cy1 = max(0, y0 - margin), min(height, y1 + margin)
        cx0, cx1 = max(0, x0 - margin), min(width, x1 + margin)
        crop = Image.fromarray(np.ascontiguousarray(flat[cy0:cy1, cx0:cx1]))
        blurred = np.asarray(crop.filter(ImageFilter.GaussianBlur(radius)))
        inner = blurred[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]
        # 3. Pixelated in blocks, so no edge inside reads as a stroke.
        for by in range(0, y1 - y0, BLOCK):
            for bx in range(0, x1 - x0, BLOCK):
                block = inner[by : by + BLOCK, bx : bx + BLOCK]
                out[y0 + by : y0 + by + block.shape[0], x0 + bx : x0 + bx + block.shape[1]] = (
                    block.reshape(-1, *block.shape[2:]).mean(axis=0)
                )
    return out
