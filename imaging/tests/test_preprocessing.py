"""Preprocessing steps do what they say, and only the configured ones run."""

from __future__ import annotations

import numpy as np
import pytest

from engine.segmentation.preprocessing import (
    PreprocessConfig,
    clip_percentiles,
    denoise_nlm,
    minmax,
    n4_bias_correct,
    preprocess,
    zscore,
)


def phantom() -> tuple[np.ndarray, np.ndarray]:
    """A uniform disc (value 100) on a dark background, and its mask."""
    rows, cols = np.mgrid[:96, :96]
    mask = (rows - 48) ** 2 + (cols - 48) ** 2 < 38**2
    return np.where(mask, 100.0, 5.0).astype(np.float32), mask


def test_it_removes_most_of_a_smooth_multiplicative_bias_field() -> None:
    clean, mask = phantom()
    _, cols = np.mgrid[:96, :96]
    biased = clean * (0.6 + 0.8 * cols / 95.0)  # 0.6 .. 1.4 left to right
    corrected = n4_bias_correct(biased, mask)
    before = biased[mask].std() / biased[mask].mean()
    after = corrected[mask].std() / corrected[mask].mean()
    assert after < before / 2


def test_it_denoises_with_non_local_means() -> None:
    clean, _ = phantom()
    noisy = clean + np.random.default_rng(0).normal(0, 10, clean.shape).astype(np.float32)
    denoised = denoise_nlm(noisy)
    assert denoised.dtype == np.float32
    assert np.abs(denoised - clean).mean() < np.abs(noisy - clean).mean() / 2


def test_it_normalises_by_zscore_minmax_and_clips_percentiles() -> None:
    image = np.arange(1000, dtype=np.float32).reshape(10, 100)
    z = zscore(image)
    assert z.mean() == pytest.approx(0.0, abs=1e-5) and z.std() == pytest.approx(1.0, abs=1e-5)
    scaled = minmax(image)
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    clipped = clip_percentiles(image, 1.0, 99.0)
    assert clipped.min() == pytest.approx(9.99) and clipped.max() == pytest.approx(989.01)
    mask = image >= 500
    assert zscore(image, mask)[mask].mean() == pytest.approx(0.0, abs=1e-5)


def test_it_runs_only_the_configured_steps_and_times_them() -> None:
    clean, _ = phantom()
    nothing = preprocess(clean, PreprocessConfig(clip=None, normalise=None))
    assert nothing.timings_ms == {} and np.array_equal(nothing.image, clean)
    everything = preprocess(clean, PreprocessConfig(n4=True, denoise=True, normalise="minmax"))
    assert list(everything.timings_ms) == ["n4", "denoise", "clip", "normalise"]
    assert all(ms >= 0 for ms in everything.timings_ms.values())
    assert everything.image.min() == 0.0 and everything.image.max() == 1.0


def test_it_round_trips_and_validates_the_config() -> None:
    config = PreprocessConfig(n4=True, clip=(1.0, 99.0), normalise="minmax")
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="clip"):
        PreprocessConfig(clip=(99.0, 1.0))
    with pytest.raises(ValueError, match="normalisation"):
        PreprocessConfig(normalise="histogram")  # type: ignore[arg-type]
