"""The DIR/images, DIR/masks, DIR/classes.json convention for PNG, NIfTI and DICOM."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from model.segmentation.dataset import (
    SEG_SOP_CLASS,
    DatasetError,
    case_names,
    iter_cases,
    load_case,
)


def write_classes(root: Path, classes: dict[int, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    (root / "classes.json").write_text(json.dumps({str(k): v for k, v in classes.items()}))


def test_it_loads_png_cases_with_class_indices_and_spacing(tmp_path: Path) -> None:
    write_classes(tmp_path, {0: "background", 1: "organ", 2: "lesion"})
    image = (np.arange(12 * 10).reshape(12, 10) % 256).astype(np.uint8)
    mask = np.zeros((12, 10), np.uint8)
    mask[2:5, 3:6] = 1
    mask[8, 8] = 2
    for case in ("b", "a"):
        Image.fromarray(image).save(tmp_path / "images" / f"{case}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / f"{case}.png")
    (tmp_path / "spacing.json").write_text(json.dumps({"*": [0.5, 0.7], "b": [2, 3]}))
    assert case_names(tmp_path) == ["a", "b"]
    a, b = list(iter_cases(tmp_path))
    assert a.image.dtype == np.float32 and np.array_equal(a.image, image)
    assert np.array_equal(a.mask, mask)
    assert a.spacing == (0.5, 0.7) and b.spacing == (2.0, 3.0)


def test_it_loads_nifti_volumes_as_slices_with_header_spacing(tmp_path: Path) -> None:
    write_classes(tmp_path, {0: "background", 1: "grey"})
    volume = np.random.default_rng(0).random((8, 9, 3)).astype(np.float32)  # (X, Y, Z)
    labels = (volume > 0.5).astype(np.uint8)
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "images" / "vol.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "masks" / "vol.nii.gz")
    flat = np.random.default_rng(1).random((8, 9, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(flat, affine), tmp_path / "images" / "flat.nii.gz")
    nib.save(
        nib.Nifti1Image((flat > 0.5).astype(np.uint8), affine), tmp_path / "masks" / "flat.nii.gz"
    )
    vol = load_case(tmp_path, "vol")
    assert vol.image.shape == (3, 8, 9)
    assert vol.spacing == pytest.approx((2.5, 0.8, 0.9))
    assert np.allclose(vol.image[1], volume[:, :, 1])
    assert np.array_equal(vol.mask[2], labels[:, :, 2])
    flat_case = load_case(tmp_path, "flat")
    assert flat_case.image.shape == (8, 9) and flat_case.spacing == pytest.approx((0.8, 0.9))


def write_dicom(path: Path, pixels: np.ndarray, **attributes: object) -> None:
    """A minimal DICOM file; 1-bit pixels are packed as DICOM SEG stores them."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.pixels import pack_bits
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = attributes.pop("SOPClassUID", SecondaryCaptureImageStorage)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelRepresentation = 0
    bits = int(attributes.pop("BitsAllocated", 16))
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = pack_bits(pixels) if bits == 1 else pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_it_reads_a_dicom_mask_of_class_indices_with_pixel_spacing(tmp_path: Path) -> None:
    write_classes(tmp_path, {0: "background", 1: "lesion"})
    image = np.arange(20, dtype=np.uint16).reshape(4, 5) * 100
    mask = np.zeros((4, 5), np.uint16)
    mask[1:3, 1:3] = 1
    write_dicom(tmp_path / "images" / "ct.dcm", image, PixelSpacing=[0.25, 0.5])
    write_dicom(tmp_path / "masks" / "ct.dcm", mask, PixelSpacing=[0.25, 0.5])
    case = load_case(tmp_path, "ct")
    assert case.spacing == (0.25, 0.5)
    assert np.array_equal(case.image, image) and np.array_equal(case.mask, mask)


def test_it_reads_a_dicom_seg_mapping_segments_to_classes_by_label(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset

    write_classes(tmp_path, {0: "background", 1: "organ", 2: "lesion"})
    image = np.arange(20, dtype=np.uint16).reshape(4, 5)
    write_dicom(tmp_path / "images" / "mr.dcm", image, PixelSpacing=[0.5, 0.5])
    frames = np.zeros((2, 4, 5), np.uint8)
    frames[0, 0, 0:2] = 1  # segment 1, labelled "lesion" -> class 2
    frames[1, 2:4, 3:5] = 1  # segment 2, labelled "Organ" -> class 1

    def segment(number: int, label: str) -> Dataset:
        item = Dataset()
        item.SegmentNumber = number
        item.SegmentLabel = label
        return item

    def frame(number: int) -> Dataset:
        identification = Dataset()
        identification.ReferencedSegmentNumber = number
        item = Dataset()
        item.SegmentIdentificationSequence = [identification]
        return item

    write_dicom(
        tmp_path / "masks" / "mr.dcm",
        frames,
        SOPClassUID=SEG_SOP_CLASS,
        Modality="SEG",
        BitsAllocated=1,
        SegmentationType="BINARY",
        SegmentSequence=[segment(1, "lesion"), segment(2, "Organ")],
        PerFrameFunctionalGroupsSequence=[frame(1), frame(2)],
    )
    case = load_case(tmp_path, "mr")
    expected = np.zeros((4, 5), np.uint8)
    expected[0, 0:2] = 2
    expected[2:4, 3:5] = 1
    assert np.array_equal(case.mask, expected)


def test_it_refuses_a_case_without_its_mask(tmp_path: Path) -> None:
    write_classes(tmp_path, {0: "background", 1: "organ"})
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "images" / "lonely.png")
    with pytest.raises(DatasetError, match="lonely"):
        case_names(tmp_path)


def test_it_refuses_mask_values_not_in_classes_json(tmp_path: Path) -> None:
    write_classes(tmp_path, {0: "background", 1: "organ"})
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "images" / "x.png")
    Image.fromarray(np.full((4, 4), 7, np.uint8)).save(tmp_path / "masks" / "x.png")
    with pytest.raises(DatasetError, match=r"\[7\]"):
        load_case(tmp_path, "x")


def test_it_refuses_an_image_and_mask_of_different_shapes(tmp_path: Path) -> None:
    write_classes(tmp_path, {0: "background", 1: "organ"})
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "images" / "x.png")
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "masks" / "x.png")
    with pytest.raises(DatasetError, match="shape|mask"):
        load_case(tmp_path, "x")


def test_it_needs_classes_json_naming_background(tmp_path: Path) -> None:
    write_classes(tmp_path, {1: "organ"})
    with pytest.raises(DatasetError, match="class 0"):
        list(iter_cases(tmp_path))
