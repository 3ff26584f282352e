"""Ultrasound regions (Sequence of Ultrasound Regions, 0018,6011): where the image data is,
and what a pixel measures there.

    ultrasound_regions(ds) -> list[UltrasoundRegion]
    annotation_boxes(frame, regions, covered) -> list[(x0, y0, x1, y1)]

A scanner lists the rectangles that hold image data (a B-mode sector, a Doppler strip) and
their physical scale. Everything outside them is the scanner's own drawing: patient name,
date, hospital, settings, logos. So, as the deid project's `keepcoordinates` rule does, ink
(bright pixels) outside every data region that no detection already covers is annotation:
the pipeline seals and fills it as a region labelled "annotation" (restorable like any
region, listed for the technician's review like any region). Calipers measure in the
region's physical units: PhysicalDeltaX/Y per pixel in PhysicalUnitsX/YDirection (3 = cm,
see PS3.3 C.8.5.5.1.15).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

# PS3.3 C.8.5.5.1.15, Physical Units X/Y Direction.
PHYSICAL_UNITS = {
    0: "none",
    1: "percent",
    2: "dB",
    3: "cm",
    4: "seconds",
    5: "hertz",
    6: "dB/seconds",
    7: "cm/sec",
    8: "cm2",
    9: "cm2/sec",
    10: "cm3",
    11: "cm3/sec",
    12: "degrees",
}
INK_LEVEL = 160  # brightest channel at or above this: drawn text, lines, marks
MIN_INK_PIXELS = 12  # a smaller speck is noise, not writing
ANNOTATION_LABEL = "annotation"


@dataclass(frozen=True)
class UltrasoundRegion:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1, half-open
    spatial_format: int | None
    data_type: int | None
    units_x: str | None
    units_y: str | None
    delta_x: float | None  # physical units per pixel
    delta_y: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "box": list(self.box),
            "spatial_format": self.spatial_format,
            "data_type": self.data_type,
            "units_x": self.units_x,
            "units_y": self.units_y,
            "delta_x": self.delta_x,
            "delta_y": self.delta_y,
        }


def _int(value: Any) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        number = None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None
    return number if number is not None and np.isfinite(number) else None


def ultrasound_regions(ds: Any) -> list[UltrasoundRegion]:
    """The data regions a header lists, clipped to the image; [] when it lists none (or
    only unreadable ones)."""
    rows, columns = _int(ds.get("Rows")) or 0, _int(ds.get("Columns")) or 0
    regions = []
    for item in ds.get("SequenceOfUltrasoundRegions") or []:
        corners = [
            _int(item.get(name))
            for name in (
                "RegionLocationMinX0",
                "RegionLocationMinY0",
                "RegionLocationMaxX1",
                "RegionLocationMaxY1",
            )
        ]
        if any(c is None for c in corners):
            continue
        x0, y0, x1, y1 = (int(c) for c in corners)  # type: ignore[arg-type]
        # Max corners are inclusive in the standard; boxes here are half-open.
        box = (max(0, x0), max(0, y0), min(columns, x1 + 1), min(rows, y1 + 1))
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        units_x, units_y = (
            _int(item.get("PhysicalUnitsXDirection")),
            _int(item.get("PhysicalUnitsYDirection")),
        )
        regions.append(
            UltrasoundRegion(
                box=box,
                spatial_format=_int(item.get("RegionSpatialFormat")),
                data_type=_int(item.get("RegionDataType")),
                units_x=None if units_x is None else PHYSICAL_UNITS.get(units_x, str(units_x)),
                units_y=None if units_y is None else PHYSICAL_UNITS.get(units_y, str(units_y)),
                delta_x=_float(item.get("PhysicalDeltaX")),
                delta_y=_float(item.get("PhysicalDeltaY")),
            )
        )
    return regions


def annotation_boxes(
    frame: np.ndarray,
    regions: Sequence[Sequence[int]],
    covered: Sequence[Sequence[int]],
) -> list[tuple[int, int, int, int]]:
    """Boxes around ink in `frame` (H, W[, 3] uint8) outside every data region and every
    covered box: one box per line of marks (letters joined across their gaps)."""
    if not regions:
        return []
    bright = frame if frame.ndim == 2 else frame[..., :3].max(axis=2)
    ink = (bright >= INK_LEVEL).astype(np.uint8)
    for x0, y0, x1, y1 in (*regions, *covered):
        ink[int(y0) : int(y1), int(x0) : int(x1)] = 0
    if int(ink.sum()) < MIN_INK_PIXELS:
        return []
    # Join the letters of a line (gaps narrower than a few pixels), not separate lines.
    joined = cv2.dilate(ink, np.ones((3, 9), np.uint8))
    count, _labels, stats, _centroids = cv2.connectedComponentsWithStats(joined, connectivity=8)
    height, width = ink.shape
    boxes = []
    for x, y, w, h, _area in stats[1:count]:
        rows, cols = np.nonzero(ink[y : y + h, x : x + w])
        if rows.size < MIN_INK_PIXELS:
            continue
        # The ink's own extent (not the joined blob's), one pixel wider all round.
        left, top = int(x + cols.min()), int(y + rows.min())
        right, bottom = int(x + cols.max()) + 1, int(y + rows.max()) + 1
        boxes.append(
            (max(0, left - 1), max(0, top - 1), min(width, right + 1), min(height, bottom + 1))
        )
    return boxes
