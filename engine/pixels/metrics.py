"""Numbers that show redaction and encryption did their job.

Interface (stable):

    shannon_entropy(data) -> float           # bits per byte, 0..8, of bytes or an array's bytes
    ssim(original, redacted) -> float        # -1..1; 1.0 for identical images
    score_within(original, redacted, rects) -> ChangeScore(ssim, squared_error)
                                             # one frame changed only inside rects
    psnr(original, redacted) -> float | None # dB; None when identical (PSNR is infinite)
    average_hash(image) -> str               # 64-bit imagehash, 16 hex chars
    perceptual_hash(image) -> str            # 64-bit pHash, 16 hex chars
    colour_histogram(image, bins=16) -> list[float]   # 3 x bins; each channel sums to 1
    fingerprints(image) -> Fingerprints(average_hash, perceptual_hash, histogram)
    hamming(hex_a, hex_b) -> int             # differing bits between two hashes

Images for SSIM/PSNR are one frame, (H, W) or (H, W, C), or frames first (F, H, W[, C]) when
`frames=True` is passed (then the mean over frames is reported). Both images must have the
same shape and dtype. The data range is 255 for uint8 and the original's own value span for
anything else (a 12-bit CT in uint16 spans ~4096, not 65535, and using 65535 would flatter
the score). Fingerprint functions take a uint8 rendering, (H, W) or (H, W, 3), e.g.
`DecodedImage.display[frame]`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import cv2
import imagehash
import numpy as np
from PIL import Image
from skimage.metrics import mean_squared_error, structural_similarity


def shannon_entropy(data: bytes | np.ndarray) -> float:
    """Entropy in bits per byte: ~8 for good ciphertext, lower for image pixels."""
    raw = np.ascontiguousarray(data).tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if not raw:
        return 0.0
    counts = np.bincount(np.frombuffer(raw, dtype=np.uint8), minlength=256)
    probabilities = counts[counts > 0] / len(raw)
    return float(-(probabilities * np.log2(probabilities)).sum())


def _data_range(original: np.ndarray) -> float:
    if original.dtype == np.uint8:
        return 255.0
    span = float(original.max()) - float(original.min())
    return span if span > 0 else 1.0


def _check_pair(original: np.ndarray, redacted: np.ndarray) -> None:
    if original.shape != redacted.shape or original.dtype != redacted.dtype:
        raise ValueError(
            f"images differ: {original.shape} {original.dtype} vs {redacted.shape} {redacted.dtype}"
        )


SSIM_WINDOW = 7
# Below this many pixels the whole-image computation is cheap enough to do directly.
SSIM_DIRECT_PIXELS = 256 * 256


def _ssim_map(original: np.ndarray, redacted: np.ndarray, data_range: float, win: int) -> Any:
    _mean, smap = structural_similarity(
        original.astype(np.float64),
        redacted.astype(np.float64),
        data_range=data_range,
        win_size=win,
        channel_axis=2 if original.ndim == 3 else None,
        full=True,
    )
    return smap


def _ssim_frame(original: np.ndarray, redacted: np.ndarray, data_range: float) -> float:
    """scikit-image's mean SSIM, computed only where the images differ.

    A window with no changed pixel compares a patch with itself, and its SSIM is exactly 1
    (numerator and denominator are the same floating-point products). So the SSIM map is 1
    everywhere except within half a window of a change; those areas are computed by
    scikit-image on crops with a half-window margin, which gives the same values as the whole
    image would (the margin holds every neighbour, and at the image edge the crop edge is the
    image edge, so the reflection is the same). Redaction changes a few percent of an image, so
    this is many times faster than the whole-image SSIM and equal to it.
    """
    height, width = original.shape[:2]
    side = min(height, width)
    if side < 3:
        # Too small for a structural window: fall back to equality.
        return 1.0 if np.array_equal(original, redacted) else 0.0
    win = min(SSIM_WINDOW, side if side % 2 else side - 1)
    half = (win - 1) // 2
    if height * width <= SSIM_DIRECT_PIXELS or win < SSIM_WINDOW:
        smap = _ssim_map(original, redacted, data_range, win)
        return float(smap[half : height - half, half : width - half].mean())

    changed = _changed(original, redacted)
    if not changed.any():
        return 1.0
    # Every pixel whose window holds a change, grouped into rectangles.
    touched = cv2.dilate(changed.astype(np.uint8), np.ones((win, win), np.uint8))
    count, _labels, stats, _centroids = cv2.connectedComponentsWithStats(touched, connectivity=8)
    # Mean over the interior (scikit-image drops a half window at each edge): every interior
    # value is 1 except where a crop computed it; overlapping crops agree, so count each once.
    channels = original.shape[2] if original.ndim == 3 else 1
    interior = (height - 2 * half) * (width - 2 * half) * channels
    deficit = 0.0
    done = np.zeros((height, width), bool)
    for x, y, w, h, _area in stats[1:count]:
        top, left = max(0, y - half), max(0, x - half)
        bottom, right = min(height, y + h + half), min(width, x + w + half)
        crop = _ssim_map(
            original[top:bottom, left:right], redacted[top:bottom, left:right], data_range, win
        )
        # This component's rectangle, clipped to the interior.
        y0, y1 = max(y, half), min(y + h, height - half)
        x0, x1 = max(x, half), min(x + w, width - half)
        if y1 <= y0 or x1 <= x0:
            continue
        values = crop[y0 - top : y1 - top, x0 - left : x1 - left]
        fresh = ~done[y0:y1, x0:x1]
        deficit += float((1.0 - values)[fresh].sum())
        done[y0:y1, x0:x1] = True
    return cast("float", 1.0 - deficit / interior)


def merged_rects(
    rects: Sequence[Sequence[int]], grow: int, height: int, width: int
) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) rectangles, half-open, each grown by `grow` on every side and clipped
    to the image, then merged (a pair that overlaps becomes its bounding rectangle) until no
    two overlap: together they cover every grown rectangle, and no pixel twice."""
    out: list[tuple[int, int, int, int]] = []
    for rect in rects:
        x0, y0, x1, y1 = (int(v) for v in rect)
        x0, y0 = max(0, x0 - grow), max(0, y0 - grow)
        x1, y1 = min(width, x1 + grow), min(height, y1 + grow)
        if x1 > x0 and y1 > y0:
            out.append((x0, y0, x1, y1))
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    out[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(out, key=lambda r: (r[1], r[0]))


@dataclass(frozen=True)
class ChangeScore:
    """One frame's share of the quality metrics: its SSIM (as `ssim`) and its summed squared
    error (PSNR is taken over the sum of every frame's)."""

    ssim: float
    squared_error: float


def score_within(
    original: np.ndarray,
    redacted: np.ndarray,
    rects: Sequence[Sequence[int]],
    *,
    data_range: float | None = None,
) -> ChangeScore:
    """SSIM and squared error of one frame pair that differ only inside `rects` (x0, y0, x1,
    y1): the caller's promise (the redaction's boxes), which is not checked, so no whole-frame
    comparison is made. Equal to `ssim` and to the whole frame's squared error when it holds.

    Every pixel whose window holds a change lies in a rectangle grown by half a window; those
    areas, merged so none overlap (`merged_rects`), are scored on crops with another half
    window of margin, exactly as `_ssim_frame` scores its changed areas; the rest is 1."""
    _check_pair(original, redacted)
    data_range = _data_range(original) if data_range is None else data_range
    height, width = original.shape[:2]
    side = min(height, width)
    win = min(SSIM_WINDOW, side if side % 2 else side - 1) if side >= 3 else 0
    if height * width <= SSIM_DIRECT_PIXELS or win < SSIM_WINDOW:
        diff = original.astype(np.float64) - redacted.astype(np.float64)
        return ChangeScore(
            _ssim_frame(original, redacted, data_range), float(np.square(diff).sum())
        )
    half = (win - 1) // 2
    channels = original.shape[2] if original.ndim == 3 else 1
    interior = (height - 2 * half) * (width - 2 * half) * channels
    deficit = squared = 0.0
    for x0, y0, x1, y1 in merged_rects(rects, half, height, width):
        diff = original[y0:y1, x0:x1].astype(np.float64) - redacted[y0:y1, x0:x1].astype(np.float64)
        error = float(np.square(diff).sum())
        if error == 0.0:
            continue  # Nothing changed here: every window in it scores exactly 1.
        squared += error
        top, left = max(0, y0 - half), max(0, x0 - half)
        bottom, right = min(height, y1 + half), min(width, x1 + half)
        crop = _ssim_map(
            original[top:bottom, left:right], redacted[top:bottom, left:right], data_range, win
        )
        # The area clipped to the interior (scikit-image drops a half window at each edge).
        iy0, iy1 = max(y0, half), min(y1, height - half)
        ix0, ix1 = max(x0, half), min(x1, width - half)
        if iy1 > iy0 and ix1 > ix0:
            values = crop[iy0 - top : iy1 - top, ix0 - left : ix1 - left]
            deficit += float((1.0 - values).sum())
    return ChangeScore(cast("float", 1.0 - deficit / interior), squared)


def _changed(original: np.ndarray, redacted: np.ndarray) -> np.ndarray:
    """(H, W) bool: where any channel differs."""
    if original.ndim == 2:
        return cast("np.ndarray", original != redacted)
    # An OR over channel planes: `.any(axis=2)` over 3 channels is 20x slower.
    changed = original[..., 0] != redacted[..., 0]
    for channel in range(1, original.shape[2]):
        changed |= original[..., channel] != redacted[..., channel]
    return cast("np.ndarray", changed)


def ssim(original: np.ndarray, redacted: np.ndarray, *, frames: bool = False) -> float:
    # A lazily decoded cine (validation.FrameStack) is read whole here: callers that must stay
    # within one frame's memory score frame by frame instead.
    original, redacted = np.asarray(original), np.asarray(redacted)
    _check_pair(original, redacted)
    data_range = _data_range(original)
    if frames:
        scores = [_ssim_frame(o, r, data_range) for o, r in zip(original, redacted, strict=True)]
        return float(np.mean(scores))
    return _ssim_frame(original, redacted, data_range)


def psnr(original: np.ndarray, redacted: np.ndarray, *, frames: bool = False) -> float | None:
    """PSNR in dB; None when the images are identical (no redaction: infinite PSNR).

    scikit-image's definition (MSE over every element of all frames, the data range as for
    SSIM), with the squared error summed only over the rectangle that holds every change:
    the rest contributes zero, and a redaction changes a few percent of an image.
    """
    original, redacted = np.asarray(original), np.asarray(redacted)
    _check_pair(original, redacted)
    changed = _changed(original, redacted) if not frames else None
    if frames:
        changed = np.zeros(original.shape[1:3], bool)
        for o, r in zip(original, redacted, strict=True):
            changed |= _changed(o, r)
    assert changed is not None
    rows, cols = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
    if rows.size == 0:
        return None
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    crop_o = original[:, box[0], box[1]] if frames else original[box]
    crop_r = redacted[:, box[0], box[1]] if frames else redacted[box]
    mse = mean_squared_error(crop_o, crop_r) * (crop_o.size / original.size)
    value = 10.0 * math.log10(_data_range(original) ** 2 / mse)
    return float(value) if math.isfinite(value) else None


def _to_pil(image: np.ndarray) -> Image.Image:
    if image.dtype != np.uint8:
        raise ValueError("fingerprints take a uint8 rendering")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3:
        image = image[..., :3]
    return Image.fromarray(np.ascontiguousarray(image))


def average_hash(image: np.ndarray) -> str:
    return str(imagehash.average_hash(_to_pil(image)))


def perceptual_hash(image: np.ndarray) -> str:
    return str(imagehash.phash(_to_pil(image)))


def colour_histogram(image: np.ndarray, bins: int = 16) -> list[float]:
    """R, G and B histograms of `bins` each, concatenated; each channel sums to 1."""
    rgb = np.asarray(_to_pil(image).convert("RGB"))
    result: list[float] = []
    for channel in range(3):
        # np.histogram's equal bins over 0..256, as an integer division (many times faster).
        values = rgb[..., channel].ravel().astype(np.uint32) * bins // 256
        counts = np.bincount(values, minlength=bins)
        total = counts.sum()
        result.extend((counts / total).tolist() if total else [0.0] * bins)
    return result


@dataclass(frozen=True)
class Fingerprints:
    average_hash: str
    perceptual_hash: str
    histogram: list[float]


def fingerprints(image: np.ndarray) -> Fingerprints:
    return Fingerprints(
        average_hash=average_hash(image),
        perceptual_hash=perceptual_hash(image),
        histogram=colour_histogram(image),
    )


def hamming(hex_a: str, hex_b: str) -> int:
    """Differing bits between two hex hashes of the same length."""
    if len(hex_a) != len(hex_b):
        raise ValueError("hashes of different lengths")
    return (int(hex_a, 16) ^ int(hex_b, 16)).bit_count()
