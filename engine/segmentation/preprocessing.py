"""Image preprocessing for segmentation, each step switched on or off by a model's config.

Interface (stable):

    PreprocessConfig(n4=False, denoise=False, clip=(0.5, 99.5) | None, normalise="zscore")
    PreprocessConfig.from_dict(d) / .to_dict()
    preprocess(image, config, mask=None) -> Preprocessed(image, timings_ms)
    n4_bias_correct(image, mask=None, *, shrink=2, iterations=(50, 50, 30)) -> float32 array
    denoise_nlm(image, *, patch_size=5, patch_distance=6, h_factor=0.8) -> float32 array
    clip_percentiles(image, low, high, mask=None) -> float32 array
    zscore(image, mask=None) -> float32 array
    minmax(image, mask=None) -> float32 array in 0..1

Images are 2D (H, W) or 3D (Z, H, W) arrays of any numeric dtype; every step returns float32
of the same shape. Order is fixed: N4 (multiplicative field, needs the raw positive
intensities), then denoising (works on the physical signal), then clipping and normalisation
(which only rescale). `mask` (bool, same shape) restricts the statistics to the foreground
when one is known; without it the whole image counts. Timings are wall milliseconds per step,
so a model's config can be judged on what it costs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import numpy as np

Normalise = Literal["zscore", "minmax"] | None


@dataclass(frozen=True)
class PreprocessConfig:
    n4: bool = False
    denoise: bool = False
    clip: tuple[float, float] | None = (0.5, 99.5)
    normalise: Normalise = "zscore"

    def __post_init__(self) -> None:
        if self.clip is not None:
            low, high = self.clip
            if not 0.0 <= low < high <= 100.0:
                raise ValueError(
                    f"clip percentiles must satisfy 0 <= low < high <= 100: {self.clip}"
                )
        if self.normalise not in ("zscore", "minmax", None):
            raise ValueError(f"unknown normalisation {self.normalise!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        clip = data.get("clip", (0.5, 99.5))
        return cls(
            n4=bool(data.get("n4", False)),
            denoise=bool(data.get("denoise", False)),
            clip=None if clip is None else (float(clip[0]), float(clip[1])),
            normalise=data.get("normalise", "zscore"),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["clip"] = None if self.clip is None else list(self.clip)
        return data


@dataclass
class Preprocessed:
    image: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)


def _values(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        return image.ravel()
    values = image[mask.astype(bool)]
    return values if values.size else image.ravel()


def n4_bias_correct(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    shrink: int = 2,
    iterations: tuple[int, ...] = (50, 50, 30),
) -> np.ndarray:
    """N4ITK bias-field correction (Tustison et al., 2010) through SimpleITK.

    The field is fitted on an image shrunk by `shrink` for speed, then the full-resolution log
    field is divided out, as SimpleITK's own example does. Without a mask, Otsu's threshold
    picks the foreground (the background has no bias to estimate).
    """
    import SimpleITK as sitk

    data = np.asarray(image, dtype=np.float32)
    # N4 models a multiplicative field on positive intensities.
    offset = float(data.min())
    positive = data - offset + 1.0
    sitk_image = sitk.GetImageFromArray(positive)
    if mask is None:
        sitk_mask = sitk.OtsuThreshold(sitk_image, 0, 1, 200)
    else:
        sitk_mask = sitk.GetImageFromArray(mask.astype(np.uint8))
    shrink_factors = [shrink] * data.ndim
    small = sitk.Shrink(sitk_image, shrink_factors)
    small_mask = sitk.Shrink(sitk_mask, shrink_factors)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(iterations))
    corrector.Execute(small, small_mask)
    log_field = corrector.GetLogBiasFieldAsImage(sitk_image)
    field = np.exp(sitk.GetArrayFromImage(log_field)).astype(np.float32)
    return cast("np.ndarray", positive / field + offset - 1.0)


def denoise_nlm(
    image: np.ndarray, *, patch_size: int = 5, patch_distance: int = 6, h_factor: float = 0.8
) -> np.ndarray:
    """Non-local means (Buades et al., 2005), strength from the estimated noise sigma."""
    from skimage.restoration import denoise_nl_means, estimate_sigma

    data = np.asarray(image, dtype=np.float32)
    sigma = float(np.mean(estimate_sigma(data)))
    if sigma == 0.0:
        return data.copy()
    out = denoise_nl_means(
        data,
        patch_size=patch_size,
        patch_distance=patch_distance,
        h=h_factor * sigma,
        sigma=sigma,
        fast_mode=True,
    )
    return np.asarray(out, dtype=np.float32)


def clip_percentiles(
    image: np.ndarray, low: float, high: float, mask: np.ndarray | None = None
) -> np.ndarray:
    data = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(_values(data, mask), [low, high])
    return np.clip(data, lo, hi)


def zscore(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    data = np.asarray(image, dtype=np.float32)
    values = _values(data, mask)
    std = float(values.std())
    return (data - float(values.mean())) / (std if std > 0 else 1.0)


def minmax(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    data = np.asarray(image, dtype=np.float32)
    values = _values(data, mask)
    lo, hi = float(values.min()), float(values.max())
    return cast("np.ndarray", np.clip((data - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0))


def preprocess(
    image: np.ndarray, config: PreprocessConfig, mask: np.ndarray | None = None
) -> Preprocessed:
    out = Preprocessed(np.asarray(image, dtype=np.float32))

    def step(name: str, fn: Any) -> None:
        start = time.perf_counter()
        out.image = fn(out.image)
        out.timings_ms[name] = (time.perf_counter() - start) * 1000.0

    if config.n4:
        step("n4", lambda x: n4_bias_correct(x, mask))
    if config.denoise:
        step("denoise", denoise_nlm)
    if config.clip is not None:
        low, high = config.clip
        step("clip", lambda x: clip_percentiles(x, low, high, mask))
    if config.normalise == "zscore":
        step("normalise", lambda x: zscore(x, mask))
    elif config.normalise == "minmax":
        step("normalise", lambda x: minmax(x, mask))
    return out
