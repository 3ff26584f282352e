"""DICOM module: safe reading, decoding, display rendering and writing redacted pixels."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from imaging import dicom
from imaging.errors import ImagingError
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
    assert _elements(written) == _elements(ds)
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
