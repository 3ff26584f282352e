"""YBR_FULL to RGB, bit for bit pydicom's conversion, by table look-up.

    ybr_full_to_rgb(ybr) -> np.ndarray | None   # (H, W, 3) uint8 -> RGB, None: use pydicom's

"The decoded pixels" of a YBR DICOM are what pydicom's `convert_color_space` gives (PS3.3
C.7.6.3.1.2 in float32, rounded half up, clipped; `engine.dicom.io`), and every stored pixel
digest was computed on them, so a faster conversion must give the same bytes. It does, by
construction and by check: the first call runs pydicom's own conversion once over all 2^24
(Y, Cb, Cr) triplets and reduces the result to one offset per (Cb, Cr) and channel, since
each channel is min(255, max(0, Y + offset)) for every Y (the arithmetic adds Y, an integer,
to a product that does not depend on it). The pairs for which rounding breaks that rule (a
product that lands within float32 error of .5; on this project's machine one pair of the
65,536, for G) keep their whole 256-entry column. The tables are then checked against the
full conversion, every triplet: if anything differs (another BLAS rounding differently, say)
the look-up is never used and callers keep pydicom's conversion. The conversion is then two
small-table look-ups and an add per channel instead of a float32 matrix product over the
frame: 1024x768 in about 4 ms instead of about 45 ms (docs/benchmarks.md).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

_LOCK = threading.Lock()
_TABLES: list[_Tables | None] = []


@dataclass(frozen=True)
class _Tables:
    """Channel c of (Y, Cb, Cr) is clip(Y + offset), offset = add - subtract (one is 0)."""

    red: tuple[np.ndarray, np.ndarray]  # (add, subtract), 256 uint8 each, by Cr
    blue: tuple[np.ndarray, np.ndarray]  # by Cb
    green: np.ndarray  # 65536 little-endian uint16 by cb<<8|cr: add | subtract << 8
    exceptions: dict[int, np.ndarray]  # cb<<8|cr -> (256, 3) uint8 RGB for every Y


def _split(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.clip(offsets, 0, 255).astype(np.uint8),
        np.clip(-offsets.astype(np.int32), 0, 255).astype(np.uint8),
    )


def _tables_from(offsets: np.ndarray, exceptions: dict[int, np.ndarray]) -> _Tables | None:
    """From (3, 65536) offsets by cb<<8|cr; None when R does not depend on Cr alone or B on
    Cb alone (then these tables cannot hold the conversion)."""
    red, blue = offsets[0].reshape(256, 256), offsets[2].reshape(256, 256)
    if not ((red == red[0]).all() and (blue == blue[:, :1]).all()):
        return None
    add, subtract = _split(offsets[1])
    green = (add.astype("<u2") | (subtract.astype("<u2") << 8)).astype("<u2")
    return _Tables(
        red=_split(red[0].copy()),
        blue=_split(blue[:, 0].copy()),
        green=green,
        exceptions=exceptions,
    )


def _pydicom_convert(ybr: np.ndarray) -> np.ndarray:
    from pydicom.pixels.processing import convert_color_space

    # As rows of 256 pixels: pydicom's float32 matrix product is fast on frame-like shapes
    # and many times slower on one very long row per Y.
    rows = ybr.reshape(-1, 256, 3) if ybr.size % 768 == 0 else ybr
    return np.asarray(convert_color_space(rows, "YBR_FULL", "RGB")).reshape(ybr.shape)


def _triplets(y0: int, count: int, pairs: np.ndarray) -> np.ndarray:
    """(count, len(pairs), 3) uint8: Y from y0 on, by every (Cb, Cr) pair of `pairs`."""
    block = np.empty((count, len(pairs), 3), dtype=np.uint8)
    block[..., 0] = np.arange(y0, y0 + count, dtype=np.uint8)[:, None]
    block[..., 1], block[..., 2] = (pairs >> 8).astype(np.uint8), (pairs & 0xFF).astype(np.uint8)
    return block


def _build() -> _Tables | None:
    """The tables, checked against pydicom's conversion of every triplet; None if they do not
    reproduce it exactly. About 1.5 s of CPU, once per process."""
    cb = np.arange(256, dtype=np.float64)[:, None] - 128.0
    cr = np.arange(256, dtype=np.float64)[None, :] - 128.0
    # First guesses from the standard's equations in float64; the check below corrects the
    # few pairs where pydicom's float32 rounding lands on the other side of .5.
    guesses = (
        1.402 * cr + 0 * cb,
        -(0.114 * 1.772 / 0.587) * cb - (0.299 * 1.402 / 0.587) * cr,
        1.772 * cb + 0 * cr,
    )
    offsets = np.stack([np.floor(g + 0.5).reshape(-1) for g in guesses]).astype(np.int16)
    tables = _tables_from(offsets, {})
    if tables is None:
        return None
    pairs = np.arange(65536, dtype=np.uint32)
    wrong: set[int] = set()
    step = 16
    for y0 in range(0, 256, step):
        block = _triplets(y0, step, pairs)
        differs = (_convert(tables, block) != _pydicom_convert(block)).any(axis=(0, 2))
        wrong.update(int(p) for p in np.flatnonzero(differs))
    if len(wrong) > 4096:  # Not the conversion these guesses are for.
        return None
    if wrong:
        fix = np.array(sorted(wrong), dtype=np.uint32)
        columns = _pydicom_convert(_triplets(0, 256, fix))  # (256 Y, pairs, 3)
        y = np.arange(256, dtype=np.int16)[:, None]
        exceptions: dict[int, np.ndarray] = {}
        for j, p in enumerate(fix.tolist()):
            for c in range(3):
                values = columns[:, j, c].astype(np.int16)
                inside = (values > 0) & (values < 255)
                shifts = set((values - y[:, 0])[inside].tolist())
                if len(shifts) == 1:
                    offsets[c, p] = shifts.pop()
                elif not shifts:
                    offsets[c, p] = -256 if values[0] == 0 else 256
                else:
                    exceptions[p] = columns[:, j, :].copy()
        tables = _tables_from(offsets, exceptions)
        if tables is None or not np.array_equal(_convert(tables, _triplets(0, 256, fix)), columns):
            return None
    return tables


def _convert(tables: _Tables, ybr: np.ndarray) -> np.ndarray:
    """Each channel is min(255, max(0, Y + offset)): added and subtracted as two saturating
    uint8 steps (OpenCV), the offsets of R (by Cr) and B (by Cb) through 256-entry tables,
    those of G (by both) gathered from the 65,536-entry one."""
    import cv2

    y, cb, cr = cv2.split(np.ascontiguousarray(ybr).reshape(-1, ybr.shape[-2], 3))
    r = cv2.subtract(cv2.add(y, cv2.LUT(cr, tables.red[0])), cv2.LUT(cr, tables.red[1]))
    b = cv2.subtract(cv2.add(y, cv2.LUT(cb, tables.blue[0])), cv2.LUT(cb, tables.blue[1]))
    pair = np.left_shift(cb, 8, dtype=np.uint16)
    np.bitwise_or(pair, cr, out=pair)
    both = tables.green[pair].view(np.uint8).reshape(*pair.shape, 2)
    g = cv2.subtract(cv2.add(y, np.ascontiguousarray(both[..., 0])), both[..., 1].copy())
    out = cv2.merge((r, g, b))
    for p, column in tables.exceptions.items():
        where = pair == p
        if where.any():
            out[where] = column[y[where]]
    return np.asarray(out).reshape(ybr.shape)


def _tables() -> _Tables | None:
    with _LOCK:
        if not _TABLES:
            _TABLES.append(_build())
        return _TABLES[0]


def ybr_full_to_rgb(ybr: np.ndarray) -> np.ndarray | None:
    """`ybr` (..., 3) uint8 YBR_FULL as RGB, equal to pydicom's conversion byte for byte;
    None when the tables did not pass their check (the caller converts with pydicom)."""
    if ybr.dtype != np.uint8 or ybr.ndim < 2 or ybr.shape[-1] != 3 or not ybr.size:
        return None
    tables = _tables()
    if tables is None:
        return None
    return _convert(tables, ybr)
