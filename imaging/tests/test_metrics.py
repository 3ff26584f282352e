"""Entropy, SSIM/PSNR and fingerprints on real images."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from engine.crypto.envelope import encrypt_blob, new_data_key, pack_array, region_aad
from engine.intake.validation import validate_upload
from engine.pixels import metrics
from imaging.tests.fixtures import samples


def _decoded(name: str):
    return validate_upload(
        name=name, data=samples.dicom_bytes(name), max_bytes=10**8, max_pixels=10**8
    )


def test_it_measures_entropy_in_bits_per_byte():
    assert metrics.shannon_entropy(b"") == 0.0
    assert metrics.shannon_entropy(b"\x00" * 1000) == 0.0
    assert metrics.shannon_entropy(bytes(range(256)) * 4) == pytest.approx(8.0)
    assert metrics.shannon_entropy(b"ab" * 50) == pytest.approx(1.0)
    assert metrics.shannon_entropy(os.urandom(65536)) > 7.99


def test_it_shows_ciphertext_has_more_entropy_than_the_region():
    # A region with burned-in text from a real ultrasound, then its ciphertext.
    region = samples.real_rgb()[:60, :120]
    plain = metrics.shannon_entropy(region)
    blob = encrypt_blob(
        new_data_key(),
        pack_array(region),
        aad=region_aad(scan_ref="s", index=0, frame=0, box=(0, 0, 120, 60)),
    )
    cipher = metrics.shannon_entropy(blob)
    assert plain < 7.0
    assert cipher > 7.8
    assert metrics.shannon_entropy(region) == metrics.shannon_entropy(region.tobytes())


def test_it_reports_identical_images_as_ssim_one_and_psnr_none():
    pixels = _decoded("CT_small.dcm").pixels[0]
    assert metrics.ssim(pixels, pixels.copy()) == pytest.approx(1.0)
    assert metrics.psnr(pixels, pixels.copy()) is None


def test_it_computes_psnr_from_the_data_range():
    image = samples.real_rgb()[..., 0].copy()
    changed = image.copy()
    changed[0, 0] = 255 if image[0, 0] < 128 else 0
    error = (int(changed[0, 0]) - int(image[0, 0])) ** 2 / image.size
    expected = 10 * math.log10(255**2 / error)
    assert metrics.psnr(image, changed) == pytest.approx(expected)


def test_it_uses_the_value_span_for_16_bit_images():
    pixels = _decoded("CT_small.dcm").pixels[0]
    redacted = pixels.copy()
    redacted[10:30, 10:60] = pixels.min()
    span = float(pixels.max()) - float(pixels.min())
    mse = np.mean((pixels.astype(float) - redacted.astype(float)) ** 2)
    assert metrics.psnr(pixels, redacted) == pytest.approx(10 * math.log10(span**2 / mse))
    score = metrics.ssim(pixels, redacted)
    assert 0.0 < score < 1.0


def test_it_compares_colour_and_multi_frame_images():
    rgb = _decoded("US1_UNCR.dcm").pixels[0]
    redacted = rgb.copy()
    redacted[0:40, 0:200] = 255
    small = rgb.copy()
    small[0:5, 0:5] = 255
    assert metrics.ssim(rgb, redacted) < metrics.ssim(rgb, small) < 1.0
    assert metrics.psnr(rgb, redacted) < metrics.psnr(rgb, small)

    frames = _decoded("emri_small.dcm").pixels
    redacted_frames = frames.copy()
    redacted_frames[3, 0:10, 0:30] = 0
    assert metrics.ssim(frames, redacted_frames, frames=True) < 1.0
    assert metrics.psnr(frames, redacted_frames, frames=True) is not None


def test_it_refuses_images_that_differ_in_shape_or_type():
    image = samples.real_rgb()
    with pytest.raises(ValueError):
        metrics.ssim(image, image[:10])
    with pytest.raises(ValueError):
        metrics.psnr(image, image.astype(np.uint16))


def test_it_handles_images_too_small_for_a_window():
    tiny = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    assert metrics.ssim(tiny, tiny.copy()) == 1.0
    assert metrics.ssim(tiny, tiny[::-1].copy()) == 0.0


def test_it_fingerprints_with_hashes_and_a_colour_histogram():
    display = _decoded("US1_UNCR.dcm").display[0]
    prints = metrics.fingerprints(display)
    assert len(prints.average_hash) == 16 and int(prints.average_hash, 16) >= 0
    assert len(prints.perceptual_hash) == 16
    assert len(prints.histogram) == 48
    for channel in range(3):
        assert sum(prints.histogram[channel * 16 : (channel + 1) * 16]) == pytest.approx(1.0)
    assert metrics.fingerprints(display.copy()) == prints


def test_it_tells_near_duplicates_from_other_images_by_hamming_distance():
    us = _decoded("US1_UNCR.dcm").display[0]
    redacted = us.copy()
    redacted[0:20, 0:120] = 0
    other = _decoded("OBXXXX1A.dcm").display[0]
    near = metrics.hamming(metrics.perceptual_hash(us), metrics.perceptual_hash(redacted))
    far = metrics.hamming(metrics.perceptual_hash(us), metrics.perceptual_hash(other))
    assert near < far
    assert metrics.hamming("ff", "00") == 8
    assert metrics.hamming("a5", "a5") == 0
    with pytest.raises(ValueError):
        metrics.hamming("ff", "fff")


def test_it_gives_grey_images_three_equal_histograms():
    grey = _decoded("MR_small.dcm").display[0][..., 0]
    histogram = metrics.colour_histogram(grey)
    assert histogram[:16] == histogram[16:32] == histogram[32:]
    with pytest.raises(ValueError):
        metrics.average_hash(grey.astype(np.uint16))


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((600, 520), np.uint8), ((512, 700, 3), np.uint8), ((520, 530), np.uint16)],
)
def test_it_computes_ssim_only_where_changed_yet_equal_to_whole_image_ssim(shape, dtype):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = np.random.default_rng(7)
    top = 255 if dtype == np.uint8 else 4095
    original = rng.integers(0, top, size=shape).astype(dtype)
    redacted = original.copy()
    # Boxes inside, touching every edge, overlapping, and two a few pixels apart.
    for y0, y1, x0, x1 in [
        (0, 20, 0, 200),
        (shape[0] - 9, shape[0], 100, 130),
        (200, 260, shape[1] - 5, shape[1]),
        (300, 340, 50, 90),
        (330, 360, 80, 150),
        (400, 420, 200, 260),
        (424, 440, 200, 260),
    ]:
        redacted[y0:y1, x0:x1] = 0
    data_range = 255.0 if dtype == np.uint8 else float(original.max()) - float(original.min())
    expected = structural_similarity(
        original.astype(np.float64),
        redacted.astype(np.float64),
        data_range=data_range,
        win_size=7,
        channel_axis=2 if len(shape) == 3 else None,
    )
    assert metrics.ssim(original, redacted) == pytest.approx(expected, abs=1e-12)
    assert metrics.ssim(original, original.copy()) == 1.0
    expected_psnr = peak_signal_noise_ratio(
        original.astype(np.float64), redacted.astype(np.float64), data_range=data_range
    )
    assert metrics.psnr(original, redacted) == pytest.approx(expected_psnr, abs=1e-9)
    frames_o, frames_r = np.stack([original, original]), np.stack([original, redacted])
    expected_frames = peak_signal_noise_ratio(
        frames_o.astype(np.float64), frames_r.astype(np.float64), data_range=data_range
    )
    assert metrics.psnr(frames_o, frames_r, frames=True) == pytest.approx(expected_frames, abs=1e-9)


def test_it_counts_the_colour_histogram_like_numpy_histogram():
    rgb = samples.real_rgb()
    values = metrics.colour_histogram(rgb)
    for channel in range(3):
        counts, _edges = np.histogram(rgb[..., channel], bins=16, range=(0, 256))
        assert values[channel * 16 : channel * 16 + 16] == pytest.approx(
            (counts / counts.sum()).tolist()
        )


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((600, 520), np.uint8),
        ((512, 700, 3), np.uint8),
        ((520, 530), np.uint16),
        ((90, 80), np.uint8),
    ],
)
def test_the_score_within_the_boxes_equals_the_whole_image_ssim_and_squared_error(shape, dtype):
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(11)
    top = 255 if dtype == np.uint8 else 4095
    original = rng.integers(0, top, size=shape).astype(dtype)
    redacted = original.copy()
    height, width = shape[:2]
    # Inside, on every edge, overlapping, a few pixels apart, and one box whose pixels
    # happen not to change (already the fill value).
    boxes = [
        (0, 0, 200, 20),
        (100, height - 9, 130, height),
        (width - 5, 200, width, 260),
        (50, 300, 90, 340),
        (80, 330, 150, 360),
        (200, 400, 260, 420),
        (200, 424, 260, 440),
        (300, 100, 340, 120),
    ]
    original[100:120, 300:340] = 0
    for x0, y0, x1, y1 in boxes:
        redacted[y0:y1, x0:x1] = 0
    data_range = 255.0 if dtype == np.uint8 else float(original.max()) - float(original.min())
    expected = structural_similarity(
        original.astype(np.float64),
        redacted.astype(np.float64),
        data_range=data_range,
        win_size=7,
        channel_axis=2 if len(shape) == 3 else None,
    )
    squared = float(np.square(original.astype(np.float64) - redacted.astype(np.float64)).sum())
    score = metrics.score_within(original, redacted, boxes)
    assert score.ssim == pytest.approx(expected, abs=1e-12)
    assert score.squared_error == squared
    assert score.ssim == pytest.approx(metrics.ssim(original, redacted), abs=1e-12)
    assert metrics.score_within(original, original.copy(), boxes) == metrics.ChangeScore(1.0, 0.0)
    assert metrics.score_within(original, original.copy(), []) == metrics.ChangeScore(1.0, 0.0)


def test_merged_rects_grow_clip_and_merge_overlapping_rectangles():
    rects = [(0, 0, 10, 10), (9, 0, 20, 5), (30, 30, 35, 35), (60, 60, 70, 70)]
    assert metrics.merged_rects(rects, 1, 40, 55) == [(0, 0, 21, 11), (29, 29, 36, 36)]
    # Touching is not overlapping: both stay, and no pixel is in two.
    assert metrics.merged_rects([(0, 0, 5, 5), (5, 0, 9, 5)], 0, 10, 10) == [
        (0, 0, 5, 5),
        (5, 0, 9, 5),
    ]
