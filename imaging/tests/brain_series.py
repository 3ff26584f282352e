"""A small real brain MR series for tests: axial slices of the MNI152 (ICBM 2009c) T1 template
that `nilearn` ships, written as single-frame DICOM MR files with scanner geometry.

    mni_series(slices=12, step_mm=6, pixel_mm=2) -> (files, truth)

Rows run to the patient's posterior, columns to the patient's left, slices upwards (Image
Orientation (Patient) 1\\0\\0\\0\\1\\0, Image Position (Patient) per slice, LPS), so the
expected NIfTI affine is known: `truth["affine"]` (RAS), `truth["volume"]` (slices, rows,
columns) the stored values, as uploaded.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TEMPLATE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def template_path() -> Path:
    try:
        import nilearn
    except ImportError:  # pragma: no cover - nilearn is in requirements.txt
        pytest.skip("needs nilearn (its MNI152 template)")
    path = Path(nilearn.__file__).parent / "datasets" / "data" / TEMPLATE
    if not path.exists():
        pytest.skip(f"needs nilearn's MNI152 template at {path}")
    return path


def mni_series(
    slices: int = 12, step_mm: int = 6, pixel_mm: int = 2, first_z_mm: float = -30.0
) -> tuple[list[bytes], dict[str, Any]]:
    import nibabel
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    image = nibabel.load(str(template_path()))
    data = np.asarray(image.dataobj, dtype=np.float32)  # (x: to the right, y: anterior, z: up)
    affine = image.affine
    assert np.allclose(affine[:3, :3], np.eye(3)), affine  # 1 mm, RAS, as nilearn ships it
    # Block means in plane (partial volume, like a 2 mm acquisition).
    nx, ny = (data.shape[0] // pixel_mm) * pixel_mm, (data.shape[1] // pixel_mm) * pixel_mm
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    files, stack = [], []
    for k in range(slices):
        z_mm = first_z_mm + k * step_mm
        z = int(round(z_mm - affine[2, 3]))
        plane = data[:nx, :ny, z].reshape(nx // pixel_mm, pixel_mm, ny // pixel_mm, pixel_mm)
        plane = plane.mean(axis=(1, 3))  # (x, y)
        # Rows = posterior (y decreasing), columns = patient's left (x decreasing).
        pixels = np.round(plane[::-1, ::-1].T * 8).astype(np.uint16)
        stack.append(pixels)
        # The first row and column: the voxel at the highest x and y (right, anterior).
        x0 = affine[0, 3] + (nx - pixel_mm / 2 - 0.5)
        y0 = affine[1, 3] + (ny - pixel_mm / 2 - 0.5)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality = "MR"
        ds.PatientName = "MNI^TEMPLATE"
        ds.PatientID = "MNI152"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = frame
        ds.SeriesDescription = "T1 axial (MNI152)"
        ds.InstanceNumber = k + 1
        # LPS: x_lps = -x_ras, y_lps = -y_ras.
        ds.ImagePositionPatient = [float(-x0), float(-y0), float(z_mm)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [float(pixel_mm), float(pixel_mm)]
        ds.SliceThickness = float(step_mm)
        # A window as a scanner writes one, with the brightest tissue below white (the test
        # detector, imaging.tests.factories.bright_text_detector, takes white for text).
        ds.WindowCenter, ds.WindowWidth = 1100, 2600
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels.tobytes()
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        files.append(buffer.getvalue())
    lps = np.eye(4)
    lps[:3, 0] = [pixel_mm, 0, 0]
    lps[:3, 1] = [0, pixel_mm, 0]
    lps[:3, 2] = [0, 0, step_mm]
    lps[:3, 3] = pydicom.dcmread(io.BytesIO(files[0])).ImagePositionPatient
    truth = {"volume": np.stack(stack), "affine": np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps}
    return files, truth
