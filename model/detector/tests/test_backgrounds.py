"""Real images with burned-in text are the test set: they must never become backgrounds."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest

from model.detector.backgrounds import (
    BACKGROUND_SOURCES,
    PACKAGE_DATA_DIRS,
    dicom_frames_as_uint8,
    is_excluded_from_training,
    package_dir,
    package_file,
)
from model.detector.testset import load_ground_truth

# Ultrasound and secondary-capture files checked by eye to carry no text at all.
TEXT_FREE_US_OR_SC = {"color-pl.dcm", "color-px.dcm"}


def all_package_dicoms() -> list[Path]:
    files = []
    for module, sub in PACKAGE_DATA_DIRS.values():
        files += sorted((package_dir(module) / sub).rglob("*.dcm"))
    return files


def test_it_excludes_every_real_test_image() -> None:
    for image in load_ground_truth():
        assert is_excluded_from_training(package_file(image.package, image.file)), image.key


def test_it_excludes_compressed_and_multiframe_variants() -> None:
    for name in (
        "US1_J2KR.dcm",
        "OBXXXX1A_rle_2frame.dcm",
        "gdcm-US-ALOKA-16_big.dcm",
        "examples_palette.dcm",
        "GREYSCALE_IMAGE.dcm",
        "ultrasound-multiframe.dcm",
    ):
        assert is_excluded_from_training(name)


def test_no_background_source_is_a_test_image() -> None:
    for source in BACKGROUND_SOURCES:
        assert not is_excluded_from_training(source.name), source.name


def test_it_refuses_to_load_a_test_image_as_background() -> None:
    with pytest.raises(ValueError, match="reserved for testing"):
        dicom_frames_as_uint8(package_file("pydicom-data", "US1_UNCR.dcm"))


def test_no_us_or_sc_image_with_possible_text_is_a_background() -> None:
    """Any US/SC/OT file, or one flagged BurnedInAnnotation YES, is excluded unless known clean."""
    background_names = {Path(s.name).name for s in BACKGROUND_SOURCES}
    for path in all_package_dicoms():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:  # unreadable test files are not backgrounds either
                continue
        risky = ds.get("Modality", "") in ("US", "SC", "OT") or (
            str(ds.get("BurnedInAnnotation", "")).upper() == "YES"
        )
        if risky and path.name in background_names:
            assert path.name in TEXT_FREE_US_OR_SC, path.name
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            assert is_excluded_from_training(path), path.name
