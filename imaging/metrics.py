"""Numbers that show redaction and encryption did their job.

Interface (stable):

    shannon_entropy(data) -> float           # bits per byte, 0..8, of bytes or an array's bytes
    ssim(original, redacted) -> float        # -1..1; 1.0 for identical images
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
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


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


def _ssim_frame(original: np.ndarray, redacted: np.ndarray, data_range: float) -> float:
    colour = original.ndim == 3
    height, width = original.shape[:2]
    side = min(height, width)
    if side < 3:
        # Too small for a structural window: fall back to equality.
        return 1.0 if np.array_equal(original, redacted) else 0.0
    win_size = min(7, side if side % 2 else side - 1)
    return float(
        structural_similarity(
            original.astype(np.float64),
            redacted.astype(np.float64),
            data_range=data_range,
            win_size=win_size,
            channel_axis=2 if colour else None,
        )
    )


def ssim(original: np.ndarray, redacted: np.ndarray, *, frames: bool = False) -> float:
    _check_pair(original, redacted)
    data_range = _data_range(original)
    if frames:
        scores = [_ssim_frame(o, r, data_range) for o, r in zip(original, redacted, strict=True)]
        return float(np.mean(scores))
    return _ssim_frame(original, redacted, data_range)


def psnr(original: np.ndarray, redacted: np.ndarray, *, frames: bool = False) -> float | None:
    """PSNR in dB; None when the images are identical (no redaction: infinite PSNR)."""
    _check_pair(original, redacted)
    if np.array_equal(original, redacted):
        return None
    value = peak_signal_noise_ratio(
        original.astype(np.float64), redacted.astype(np.float64), data_range=_data_range(original)
    )
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
        counts, _edges = np.histogram(rgb[..., channel], bins=bins, range=(0, 256))
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
