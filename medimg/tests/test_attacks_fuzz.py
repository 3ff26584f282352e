"""Time-boxed fuzzing (Hypothesis) of the upload validator and the DICOM reader: random bytes
and mutations (flipped bytes, truncations, insertions, overwritten headers) of real PNG, JPEG
and DICOM files. Each input is either accepted as an image or refused with an ImagingError;
any other exception is a crash. The suite runs a smoke budget; `make fuzz` runs the long one
(MEDIMG_FUZZ=1, FUZZ_EXAMPLES examples per target)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from engine.dicom.io import decode_pixels, read_dataset
from engine.errors import ImagingError
from engine.intake.validation import DecodedImage, validate_upload
from imaging.tests import factories

# The long runs are for `make fuzz` (MEDIMG_FUZZ=1), not for every `make test`.
LONG = pytest.mark.skipif(not os.environ.get("MEDIMG_FUZZ"), reason="long run: make fuzz")
SMOKE_EXAMPLES = 300
LONG_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5000"))
MAX_BYTES = 2 * 1024 * 1024
MAX_PIXELS = 4_000_000

_PIXELS = factories.text_image(48, 32, seed=1)
SEEDS = {
    "png": factories.png_bytes(_PIXELS),
    "jpeg": factories.jpeg_bytes(_PIXELS),
    "dicom": open(get_testdata_file("CT_small.dcm"), "rb").read(),  # noqa: SIM115
}


@st.composite
def mutated(draw: Any, kinds: tuple[str, ...] = tuple(SEEDS)) -> bytes:
    """A real file of one kind with one to four random edits."""
    data = bytearray(SEEDS[draw(st.sampled_from(kinds))])
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite", "header"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if edit == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif edit == "truncate":
            del data[at:]
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif edit == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at : at + len(chunk)] = chunk
        else:  # The first bytes, where the format, sizes and offsets are.
            spot = draw(st.integers(0, min(len(data), 400)))
            data[spot : spot + 4] = draw(st.binary(min_size=4, max_size=4))
    return bytes(data)


def _validate(data: bytes) -> None:
    try:
        image = validate_upload(
            name="fuzz.bin", data=data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS
        )
    except ImagingError:
        return
    assert isinstance(image, DecodedImage)


def _read_dicom(data: bytes) -> None:
    try:
        dataset = read_dataset(data)
        pixels = decode_pixels(dataset)
    except ImagingError:
        return
    assert isinstance(pixels, np.ndarray)


_SETTINGS = {
    "deadline": None,
    "database": None,
    "derandomize": False,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


def test_it_accepts_the_unmutated_seeds() -> None:
    # The seeds must be valid, or every mutation would only test the first refusal.
    for data in SEEDS.values():
        assert isinstance(
            validate_upload(name="seed", data=data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS),
            DecodedImage,
        )


@settings(max_examples=SMOKE_EXAMPLES, **_SETTINGS)
@given(st.one_of(mutated(), st.binary(max_size=2048)))
def test_it_never_crashes_the_upload_validator(data: bytes) -> None:
    _validate(data)


@settings(max_examples=SMOKE_EXAMPLES, **_SETTINGS)
@given(mutated(("dicom",)))
def test_it_never_crashes_the_dicom_reader(data: bytes) -> None:
    _read_dicom(data)


@LONG
@settings(max_examples=LONG_EXAMPLES, **_SETTINGS)
@given(st.one_of(mutated(), st.binary(max_size=4096)))
def test_it_never_crashes_the_upload_validator_long(data: bytes) -> None:
    _validate(data)


@LONG
@settings(max_examples=LONG_EXAMPLES, **_SETTINGS)
@given(mutated(("dicom",)))
def test_it_never_crashes_the_dicom_reader_long(data: bytes) -> None:
    _read_dicom(data)


def test_it_refuses_a_dicom_naming_an_unknown_transfer_syntax() -> None:
    # The first crash the fuzzer found: pydicom raised ValueError past the reader's guard.
    data = SEEDS["dicom"].replace(b"1.2.840.10008.1.2.1\0", b"1.2.840.10008.9.9.9\0", 1)
    assert data != SEEDS["dicom"]

    with pytest.raises(ImagingError) as refused:
        read_dataset(data)

    assert refused.value.code == "unsupported_format"
