"""Upload validation: real images accepted and decoded, every bad input refused by code."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image, ImageOps

from engine.dicom import io as dicom
from engine.errors import ImagingError
from engine.intake.validation import DecodedImage, orient, sniff_kind, validate_upload
from imaging.tests.fixtures import samples

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 60_000_000


def _validate(data: bytes, name: str = "upload", **limits: int) -> DecodedImage:
    return validate_upload(
        name=name,
        data=data,
        max_bytes=limits.get("max_bytes", MAX_BYTES),
        max_pixels=limits.get("max_pixels", MAX_PIXELS),
        max_dicom_bytes=limits.get("max_dicom_bytes"),
        max_decoded_bytes=limits.get("max_decoded_bytes"),
    )


def _refused(data: bytes, **limits: int) -> ImagingError:
    with pytest.raises(ImagingError) as caught:
        _validate(data, **limits)
    return caught.value


def _decode_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- JPEG and PNG ---------------------------------------------------------------------------


def test_it_accepts_a_png_and_stores_a_metadata_free_lossless_copy():
    rgb = samples.real_rgb()
    upload = samples.png_with_metadata(rgb)
    assert b"DOE^JANE" in upload

    image = _validate(upload)

    assert image.kind == "png"
    assert image.photometric == "RGB"
    assert image.pixels.shape == (1, 120, 160, 3) and image.pixels.dtype == np.uint8
    assert np.array_equal(image.pixels[0], rgb)
    assert np.array_equal(image.display[0], rgb)
    assert (image.frames, image.height, image.width, image.channels) == (1, 120, 160, 3)
    clean = _decode_png(image.clean_bytes)
    assert np.array_equal(np.asarray(clean), rgb)
    assert b"DOE^JANE" not in image.clean_bytes and b"Dr. Who" not in image.clean_bytes
    for chunk in (b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"iCCP", b"tIME"):
        assert chunk not in image.clean_bytes
    assert not clean.info.get("exif")


def test_it_accepts_a_jpeg_and_keeps_its_decoded_pixels_exactly():
    upload = samples.jpeg_bytes(samples.real_rgb(), exif=samples.exif_with_orientation(1))
    expected = np.asarray(Image.open(io.BytesIO(upload)).convert("RGB"))

    image = _validate(upload)

    assert image.kind == "jpeg"
    assert np.array_equal(image.pixels[0], expected)
    assert image.clean_bytes.startswith(b"\x89PNG")
    assert np.array_equal(np.asarray(_decode_png(image.clean_bytes)), expected)
    assert b"DOE^JANE" not in image.clean_bytes


def test_it_applies_exif_orientation_before_stripping_it():
    rgb = samples.real_rgb(40, 60)
    upload = samples.jpeg_bytes(rgb, exif=samples.exif_with_orientation(6))  # rotate 90 CW
    image = _validate(upload)
    assert image.pixels.shape == (1, 60, 40, 3)


def test_it_keeps_grey_and_16_bit_png_exactly():
    grey16 = samples.real_grey16()
    image = _validate(samples.png_bytes(grey16))
    assert image.photometric == "MONOCHROME2"
    assert image.pixels.dtype == np.uint16
    assert np.array_equal(image.pixels[0], grey16)
    clean = np.asarray(_decode_png(image.clean_bytes))
    assert clean.dtype == np.uint16 and np.array_equal(clean, grey16)
    assert image.display.shape == (1, 128, 128, 3) and image.display.dtype == np.uint8
    assert image.display.max() == 255 and image.display.min() == 0

    grey8 = samples.real_rgb()[..., 0]
    image8 = _validate(samples.png_bytes(grey8))
    assert image8.pixels.dtype == np.uint8 and np.array_equal(image8.pixels[0], grey8)


def test_it_keeps_16_bit_colour_png_exactly():
    rgb16 = samples.real_rgb().astype(np.uint16) * 257 + np.uint16(5)
    upload = cv2.imencode(".png", cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))[1].tobytes()
    assert upload[24] == 16  # IHDR bit depth

    image = _validate(upload)

    assert image.photometric == "RGB" and image.pixels.dtype == np.uint16
    assert np.array_equal(image.pixels[0], rgb16)
    assert image.display.dtype == np.uint8 and image.display.shape == (1, 120, 160, 3)
    assert np.array_equal(_validate(image.clean_bytes).pixels, image.pixels)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_it_orients_arrays_as_pillow_does(orientation):
    rgb = samples.real_rgb(30, 50)
    upload = samples.jpeg_bytes(rgb, exif=samples.exif_with_orientation(orientation))
    opened = Image.open(io.BytesIO(upload))
    expected = np.asarray(ImageOps.exif_transpose(opened))
    assert np.array_equal(orient(np.asarray(opened), orientation), expected)
    assert np.array_equal(_validate(upload).pixels[0], expected)


def test_it_decodes_palette_png_to_rgb_or_rgba():
    rgb = samples.real_rgb()
    palette = Image.fromarray(rgb).quantize(colors=32)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    image = _validate(buffer.getvalue())
    assert image.photometric == "RGB"
    assert np.array_equal(image.pixels[0], np.asarray(palette.convert("RGB")))

    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", transparency=0)
    transparent = _validate(buffer.getvalue())
    assert transparent.photometric == "RGBA"
    assert transparent.pixels.shape[-1] == 4
    assert np.array_equal(np.asarray(_decode_png(transparent.clean_bytes)), transparent.pixels[0])
    assert transparent.display.shape[-1] == 3


def test_it_types_by_content_not_by_extension():
    upload = samples.png_bytes(samples.real_rgb())
    assert _validate(upload, name="scan.dcm").kind == "png"
    assert _validate(samples.dicom_bytes("MR_small.dcm"), name="photo.jpg").kind == "dicom"


def test_it_accepts_a_little_zero_padding_after_jpeg_eoi():
    upload = samples.jpeg_bytes(samples.real_rgb()) + b"\x00" * 16
    assert _validate(upload).kind == "jpeg"


# --- DICOM ----------------------------------------------------------------------------------


def _dataset(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def test_it_accepts_a_16_bit_ct_and_keeps_its_stored_values():
    data = samples.dicom_bytes("CT_small.dcm")
    image = _validate(data)
    assert image.kind == "dicom"
    assert image.photometric == "MONOCHROME2"
    assert image.pixels.dtype == np.int16 and image.pixels.shape == (1, 128, 128)
    assert np.array_equal(image.pixels[0], _dataset(data).pixel_array)
    assert image.clean_bytes == data
    assert image.display.shape == (1, 128, 128, 3) and image.display.dtype == np.uint8


def test_it_accepts_an_mr_and_a_multi_frame_mr():
    assert _validate(samples.dicom_bytes("MR_small.dcm")).pixels.shape == (1, 64, 64)
    multi = _validate(samples.dicom_bytes("emri_small.dcm"))
    assert multi.pixels.shape == (10, 64, 64) and multi.pixels.dtype == np.uint16
    assert multi.display.shape == (10, 64, 64, 3)
    # Frames are rendered one by one, not all alike.
    assert not np.array_equal(multi.display[0], multi.display[5])


@pytest.mark.parametrize(
    ("compressed", "reference"),
    [
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
        ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
        ("emri_small_RLE.dcm", "emri_small.dcm"),
        ("MR_small_RLE.dcm", "MR_small.dcm"),
    ],
)
def test_it_decodes_lossless_compressed_dicom_to_the_same_pixels(compressed, reference):
    decoded = _validate(samples.dicom_bytes(compressed)).pixels
    assert np.array_equal(decoded, _validate(samples.dicom_bytes(reference)).pixels)


def test_it_decodes_lossy_jpeg_2000_and_jpeg_ls():
    j2k = _validate(samples.dicom_bytes("JPEG2000.dcm"))
    assert j2k.pixels.shape == (1, 1024, 256)
    near = _validate(samples.dicom_bytes("JPEGLSNearLossless_16.dcm"))
    assert near.pixels.shape == (1, 10, 50) or near.pixels.shape == (1, 50, 10)


def test_it_keeps_palette_indices_and_renders_the_palette():
    data = samples.dicom_bytes("OBXXXX1A.dcm")
    image = _validate(data)
    assert image.photometric == "PALETTE COLOR"
    assert image.pixels.shape == (1, 600, 800) and image.pixels.dtype == np.uint8
    rgb = pydicom.pixels.apply_color_lut(_dataset(data).pixel_array, _dataset(data))
    assert np.array_equal(image.display[0], (rgb.astype(np.uint32) >> 8).astype(np.uint8))


def test_it_converts_ybr_to_rgb():
    ybr = _validate(samples.dicom_bytes("SC_ybr_full_uncompressed.dcm"))
    rgb = _validate(samples.dicom_bytes("SC_rgb.dcm"))
    assert ybr.photometric == "RGB"
    # The same picture stored as YBR_FULL and as RGB: equal up to conversion rounding.
    difference = np.abs(ybr.pixels.astype(int) - rgb.pixels.astype(int))
    assert difference.max() <= 8 and difference.mean() < 1
    jpeg = _validate(samples.dicom_bytes("SC_rgb_jpeg_dcmtk.dcm"))
    assert jpeg.photometric == "RGB" and jpeg.pixels.shape == (1, 100, 100, 3)
    assert np.abs(jpeg.pixels.astype(int) - rgb.pixels.astype(int)).mean() < 10


def test_it_accepts_rgb_and_real_burned_in_ultrasounds():
    rgb = _validate(samples.dicom_bytes("US1_UNCR.dcm"))
    assert rgb.photometric == "RGB" and rgb.pixels.shape == (1, 480, 640, 3)
    assert np.array_equal(rgb.display[0], rgb.pixels[0])
    grey = _validate(samples.deid_bytes("ultrasounds/GREYSCALE_IMAGE.dcm"))
    assert grey.pixels.shape == (1, 768, 1024)
    ct = _validate(samples.deid_bytes("humans/ctbrain1.dcm"))
    assert ct.photometric == "RGB"  # YBR_FULL_422 baseline JPEG


def test_it_accepts_a_real_monochrome1_radiograph_and_inverts_it_for_display():
    image = _validate(samples.dicom_bytes("RG3_J2KI.dcm"))
    assert image.photometric == "MONOCHROME1"
    assert image.pixels.dtype == np.uint16
    # MONOCHROME1: high stored values are dark on display.
    bright = image.pixels[0] >= np.percentile(image.pixels[0], 99)
    dark = image.pixels[0] <= np.percentile(image.pixels[0], 1)
    assert image.display[0][bright].mean() < image.display[0][dark].mean()


# --- The bad-input corpus -------------------------------------------------------------------


def test_it_refuses_an_empty_file():
    assert _refused(b"").code == "empty_file"


def test_it_refuses_a_file_over_the_size_limit_with_413():
    error = _refused(samples.png_bytes(samples.real_rgb()), max_bytes=1024)
    assert error.code == "file_too_large"
    assert error.status_code == 413


@pytest.mark.parametrize(
    "data",
    [
        b"GIF89a" + b"\x00" * 64,
        b"%PDF-1.7\n",
        b"<html><body>hi</body></html>",
        b"II*\x00" + b"\x00" * 200,  # TIFF
        b"\x00" * 300,  # 128 zero bytes, then no DICM
    ],
)
def test_it_refuses_other_formats(data):
    assert _refused(data).code == "unsupported_format"


def test_it_refuses_a_wrong_extension_on_a_non_image():
    with pytest.raises(ImagingError) as caught:
        _validate(b"MZ\x90\x00" + b"\x00" * 400, name="scan.png")
    assert caught.value.code == "unsupported_format"


def test_it_refuses_truncated_png_jpeg_and_dicom():
    png = samples.png_bytes(samples.real_rgb())
    jpeg = samples.jpeg_bytes(samples.real_rgb())
    ct = samples.dicom_bytes("CT_small.dcm")
    for data in (png[: len(png) // 2], png[:-1], png[:20]):
        assert _refused(data).code == "corrupt_image"
    for data in (jpeg[: len(jpeg) // 2], jpeg[:-2], jpeg[:10]):
        assert _refused(data).code == "corrupt_image"
    for cut in (140, 300, 1000, len(ct) // 2, len(ct) - 1):
        assert _refused(ct[:cut]).code == "corrupt_image", cut


def test_it_refuses_damaged_png_data():
    png = bytearray(samples.png_bytes(samples.real_rgb()))
    idat = png.find(b"IDAT")
    png[idat + 20] ^= 0xFF  # Breaks the chunk CRC and the zlib stream.
    assert _refused(bytes(png)).code == "corrupt_image"


def test_it_refuses_a_png_followed_by_html():
    data = samples.png_bytes(samples.real_rgb()) + b"<html><script>alert(1)</script></html>"
    assert _refused(data).code == "unsupported_format"


def test_it_refuses_a_jpeg_with_a_zip_appended():
    data = samples.jpeg_bytes(samples.real_rgb()) + samples.zip_bytes()
    assert _refused(data).code == "unsupported_format"


@pytest.mark.parametrize("preamble", [samples.ELF_PREAMBLE, samples.MZ_PREAMBLE, b"#!/bin/sh\n"])
def test_it_refuses_a_dicom_whose_preamble_is_an_executable(preamble):
    data = samples.with_preamble(samples.dicom_bytes("CT_small.dcm"), preamble)
    assert _refused(data).code == "unsupported_format"


def test_it_refuses_a_dicom_with_an_archive_appended():
    data = samples.dicom_bytes("CT_small.dcm") + samples.zip_bytes()
    assert _refused(data).code == "unsupported_format"
    html = samples.dicom_bytes("JPEG2000.dcm") + b"<html><script>alert(1)</script></html>"
    assert _refused(html).code in {"unsupported_format", "corrupt_image"}


def test_it_accepts_a_dicom_with_a_harmless_preamble():
    data = samples.with_preamble(samples.dicom_bytes("CT_small.dcm"), b"II*\x00 vendor text")
    assert _validate(data).kind == "dicom"


def test_it_refuses_a_png_pixel_bomb_from_its_header():
    # 30000 x 30000 declared over a few bytes of IDAT: refused before any decoding.
    assert _refused(samples.png_declaring(30000, 30000)).code == "too_many_pixels"


def test_it_treats_the_decompression_bomb_warning_as_an_error():
    # Under our limit (set very high) but over Pillow's: Pillow's warning refuses it.
    bomb = samples.png_declaring(10000, 10000)
    assert _refused(bomb, max_pixels=10**12).code == "too_many_pixels"


def test_it_refuses_a_jpeg_pixel_bomb():
    assert _refused(samples.jpeg_declaring(30000, 30000)).code == "too_many_pixels"


def test_it_refuses_too_many_pixels_for_each_format_by_the_limit():
    assert _refused(samples.png_bytes(samples.real_rgb()), max_pixels=1000).code == (
        "too_many_pixels"
    )
    assert _refused(samples.jpeg_bytes(samples.real_rgb()), max_pixels=1000).code == (
        "too_many_pixels"
    )
    # The limit is per frame (issue 13): 10 frames of 64 x 64 are 4096 pixels a frame.
    multi = samples.dicom_bytes("emri_small.dcm")
    refusal = _refused(multi, max_pixels=4095)
    assert refusal.code == "too_many_pixels"
    assert "64 x 64" in refusal.message and "4,095 pixels a frame" in refusal.message
    assert _validate(multi, max_pixels=4096).frames == 10


def test_it_accepts_a_long_cine_whose_frames_are_each_under_the_pixel_limit():
    # 40960 pixels in all, over a limit of 30000 that the old whole-file count refused.
    assert _validate(samples.dicom_bytes("emri_small.dcm"), max_pixels=30000).frames == 10


def test_it_refuses_a_dicom_whose_decoded_frames_exceed_the_decoded_size_limit():
    multi = samples.dicom_bytes("emri_small.dcm")  # 10 x 64 x 64 x 2 bytes = 81920
    refusal = _refused(multi, max_decoded_bytes=81919)
    assert refusal.code == "decoded_too_large" and refusal.status_code == 413
    assert "10 frames of 64 x 64" in refusal.message and "limit" in refusal.message
    assert _validate(multi, max_decoded_bytes=81920).frames == 10


def test_it_limits_size_by_kind_and_names_the_limit():
    ct = samples.dicom_bytes("CT_small.dcm")
    png = samples.png_bytes(samples.real_rgb())
    # DICOM has its own limit: over the JPEG/PNG one and under its own is accepted.
    assert _validate(ct, max_bytes=1024, max_dicom_bytes=len(ct)).kind == "dicom"
    refusal = _refused(ct, max_bytes=10**9, max_dicom_bytes=len(ct) - 1)
    assert refusal.code == "file_too_large" and refusal.status_code == 413
    assert "limit for DICOM" in refusal.message
    refusal = _refused(png, max_bytes=1024, max_dicom_bytes=10**9)
    assert refusal.code == "file_too_large"
    assert "over the 1 KB limit for JPEG/PNG" in refusal.message


def test_it_refuses_a_dicom_without_an_image_with_its_own_code():
    refusal = _refused(samples.dicom_bytes("rtplan.dcm"))
    assert refusal.code == "no_pixel_data"
    assert "RT Plan Storage" in refusal.message


def test_it_names_a_dicom_data_set_without_its_part_10_header():
    refusal = _refused(samples.dicom_bytes("ExplVR_LitEndNoMeta.dcm"))
    assert refusal.code == "unsupported_format" and "Part 10 header" in refusal.message


def test_it_refuses_an_animated_png():
    frames = [Image.fromarray(samples.real_rgb(20, 20)), Image.fromarray(samples.real_rgb(20, 20))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    assert _refused(buffer.getvalue()).code == "unsupported_format"


def test_it_sniffs_by_magic():
    assert sniff_kind(samples.png_bytes(samples.real_rgb(4, 4))) == "png"
    assert sniff_kind(samples.jpeg_bytes(samples.real_rgb(4, 4))) == "jpeg"
    assert sniff_kind(samples.dicom_bytes("MR_small.dcm")) == "dicom"
    assert sniff_kind(b"\x00" * 200) is None
    assert dicom.has_dicom_magic(samples.dicom_bytes("MR_small.dcm"))


def test_it_gives_each_error_its_status_and_refuses_unknown_codes():
    assert ImagingError("file_too_large").status_code == 413
    for code in ("empty_file", "unsupported_format", "corrupt_image", "too_many_pixels"):
        error = ImagingError(code)
        assert error.status_code == 400 and error.code == code and error.message
    assert ImagingError("corrupt_image", "custom").message == "custom"
    with pytest.raises(ValueError):
        ImagingError("no_such_code")


# --- Optional elements that are present but empty (issue 13 item 7) --------------------------


def _ct_with(**changes: object) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(samples.dicom_bytes("CT_small.dcm")))
    for keyword, value in changes.items():
        if value is None:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def test_it_treats_an_empty_modality_lut_item_as_absent_with_a_note():
    # LEADTOOLS writes an empty Modality LUT Sequence item; rendering raised a TypeError.
    data = _ct_with(ModalityLUTSequence=pydicom.Sequence([pydicom.Dataset()]))

    image = _validate(data)

    assert any("ModalityLUTSequence" in note for note in image.notes)
    assert np.array_equal(image.display, _validate(_ct_with()).display)


def test_it_treats_an_empty_rescale_as_absent_with_a_note():
    data = _ct_with(RescaleSlope="")

    image = _validate(data)

    assert any(note.startswith("RescaleSlope") for note in image.notes)
    assert any(note.startswith("RescaleIntercept") for note in image.notes)
    without = _validate(_ct_with(RescaleSlope=None, RescaleIntercept=None))
    assert np.array_equal(image.display, without.display)
    assert np.array_equal(image.pixels, without.pixels)


def test_a_well_formed_file_has_no_notes():
    assert _validate(samples.dicom_bytes("CT_small.dcm")).notes == ()


def _count_frame_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = dicom.decode_frame

    def spy(ds: object, index: int) -> np.ndarray:
        calls.append(index)
        return real(ds, index)

    monkeypatch.setattr(dicom, "decode_frame", spy)
    return calls


@pytest.mark.parametrize("name", ["emri_small.dcm"])
def test_frames_checked_as_read_are_decoded_once_and_equal_the_checked_ones(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = samples.dicom_bytes(name)
    calls = _count_frame_decodes(monkeypatch)
    checked = validate_upload(name="x", data=data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    # Full validation decodes every frame once (the first frame is not decoded twice).
    assert sorted(calls) == list(range(checked.frames))
    calls.clear()
    later = validate_upload(
        name="x", data=data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, check_frames=False
    )
    assert calls == [0]  # The header and the first frame only; the rest as read.
    read = [(later.pixels[i], later.display[i]) for i in range(later.frames)]
    # Reading each frame's pixels, then its rendering, decodes each frame once.
    assert sorted(calls) == list(range(checked.frames))
    for index, (pixels, display) in enumerate(read):
        np.testing.assert_array_equal(pixels, checked.pixels[index])
        np.testing.assert_array_equal(display, checked.display[index])
