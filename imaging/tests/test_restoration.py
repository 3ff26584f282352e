"""Restore: paste is the exact inverse of crop; CLAHE keeps type; downloads encode losslessly."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from engine.crypto.envelope import (
    decrypt_blob,
    encrypt_blob,
    new_data_key,
    pack_array,
    region_aad,
    unpack_array,
)
from engine.intake.validation import validate_upload
from engine.pixels.restoration import (
    MEDIA_TYPES,
    apply_clahe,
    crop_region,
    encode_image,
    paste_regions,
)
from imaging.tests.fixtures import samples


def _decoded(data: bytes):
    return validate_upload(name="x", data=data, max_bytes=10**8, max_pixels=10**8)


@pytest.mark.parametrize(
    "data",
    [
        samples.dicom_bytes("CT_small.dcm"),
        samples.dicom_bytes("emri_small.dcm"),
        samples.dicom_bytes("US1_UNCR.dcm"),
        samples.dicom_bytes("OBXXXX1A.dcm"),
        samples.png_bytes(samples.real_grey16()),
    ],
)
def test_it_restores_the_pixel_exact_original_through_encryption(data):
    original = _decoded(data).pixels
    frames = original.shape[0]
    boxes = [(frames - 1, (0, 0, 30, 12)), (0, (5, 40, 60, 55)), (frames // 2, (20, 20, 21, 21))]
    key = new_data_key()
    blobs = []
    redacted = original.copy()
    for index, (frame, box) in enumerate(boxes):
        crop = crop_region(original, frame, box)
        aad = region_aad(scan_ref="scan", index=index, frame=frame, box=box)
        blobs.append((frame, box, encrypt_blob(key, pack_array(crop), aad=aad)))
        x0, y0, x1, y1 = box
        redacted[frame, y0:y1, x0:x1] = 0

    regions = [
        (
            frame,
            box,
            unpack_array(
                decrypt_blob(
                    key, blob, aad=region_aad(scan_ref="scan", index=i, frame=frame, box=box)
                )
            ),
        )
        for i, (frame, box, blob) in enumerate(blobs)
    ]
    restored = paste_regions(redacted, regions)

    assert restored.dtype == original.dtype
    assert np.array_equal(restored, original)
    assert not np.array_equal(redacted, original)  # The paste did something.


def test_it_does_not_change_the_redacted_input():
    original = samples.real_rgb()[np.newaxis]
    redacted = original.copy()
    redacted[0, :10, :10] = 0
    before = redacted.copy()
    paste_regions(redacted, [(0, (0, 0, 10, 10), crop_region(original, 0, (0, 0, 10, 10)))])
    assert np.array_equal(redacted, before)


def test_it_refuses_regions_that_do_not_fit():
    image = samples.real_rgb()[np.newaxis]
    crop = crop_region(image, 0, (0, 0, 10, 10))
    with pytest.raises(ValueError):
        paste_regions(image, [(0, (0, 0, 11, 10), crop)])
    with pytest.raises(ValueError):
        paste_regions(image, [(0, (0, 0, 10, 10), crop.astype(np.uint16))])
    with pytest.raises(ValueError):
        paste_regions(image, [(1, (0, 0, 10, 10), crop)])
    with pytest.raises(ValueError):
        crop_region(image, 0, (150, 0, 170, 10))  # Past the right edge of 160.
    with pytest.raises(ValueError):
        crop_region(image, 0, (10, 10, 10, 20))  # Empty.


def _low_contrast(image: np.ndarray, top: int) -> np.ndarray:
    scaled = image.astype(np.float64) / image.max() * (top * 0.2) + top * 0.4
    return scaled.astype(image.dtype)


def test_it_enhances_grey_8_and_16_bit_frames_keeping_the_type():
    grey8 = _low_contrast(samples.real_rgb()[..., 1], 255)
    out8 = apply_clahe(grey8)
    assert out8.dtype == np.uint8 and out8.shape == grey8.shape
    assert out8.std() > grey8.std()

    grey16 = _low_contrast(samples.real_grey16(), 65535)
    out16 = apply_clahe(grey16)
    assert out16.dtype == np.uint16 and out16.shape == grey16.shape
    assert out16.std() > grey16.std()


def test_it_enhances_colour_on_lightness_and_keeps_alpha():
    rgb = _low_contrast(samples.real_rgb(), 255)
    out = apply_clahe(rgb)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert out.std() > rgb.std()

    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 77, np.uint8)])
    out_rgba = apply_clahe(rgba)
    assert out_rgba.shape == rgba.shape and (out_rgba[..., 3] == 77).all()

    rgb16 = rgb.astype(np.uint16) * 257
    out16 = apply_clahe(rgb16)
    assert out16.dtype == np.uint16 and out16.std() > rgb16.std()

    with pytest.raises(ValueError):
        apply_clahe(rgb.astype(np.float32))


@pytest.mark.parametrize(
    "array",
    [
        samples.real_rgb(),
        samples.real_rgb()[..., 0],
        np.dstack([samples.real_rgb(), np.full((120, 160), 200, np.uint8)]),
        samples.real_grey16(),
    ],
)
def test_it_encodes_png_losslessly(array):
    data = encode_image(array, "png")
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    assert decoded.dtype == array.dtype
    assert np.array_equal(decoded, array)


def test_it_encodes_16_bit_colour_png_losslessly():
    rgb16 = samples.real_rgb().astype(np.uint16) * 257 + 3
    data = encode_image(rgb16, "png")
    decoded = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB
    )
    assert decoded.dtype == np.uint16 and np.array_equal(decoded, rgb16)


def test_it_encodes_jpeg_and_stretches_16_bit():
    jpeg = encode_image(samples.real_rgb(), "jpeg")
    assert jpeg.startswith(b"\xff\xd8\xff")
    assert Image.open(io.BytesIO(jpeg)).size == (160, 120)
    grey16 = encode_image(samples.real_grey16(), "jpeg")
    opened = Image.open(io.BytesIO(grey16))
    assert opened.mode == "L" and opened.size == (128, 128)
    assert set(MEDIA_TYPES) == {"png", "jpeg"}


def test_it_refuses_pixels_without_a_lossless_png_form():
    ct = _decoded(samples.dicom_bytes("CT_small.dcm")).pixels[0]
    with pytest.raises(ValueError):
        encode_image(ct, "png")  # int16
    with pytest.raises(ValueError):
        encode_image(samples.real_rgb(), "gif")
    with pytest.raises(ValueError):
        encode_image(samples.real_rgb()[np.newaxis], "png")
