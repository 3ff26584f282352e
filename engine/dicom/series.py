"""Write a volume as a DICOM MR series: one single-frame file per slice, with the geometry a
scanner writes (Image Position and Orientation (Patient), Pixel Spacing, Slice Thickness and
Spacing Between Slices) so that the app's series segmentation can place and measure it.

    mr_series(volume, spacing_mm, *, patient=..., study_date=...) -> list[bytes]

`volume` is (slices, rows, columns) uint16; slice k lies at z = k * slice spacing, rows run
towards the patient's posterior and columns towards the patient's left (an axial stack as
scanners write it, Image Orientation (Patient) 1\\0\\0\\0\\1\\0 in LPS).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


@dataclass(frozen=True)
class SeriesPatient:
    name: str = "PHANTOM^BRAIN"
    patient_id: str = "PHANTOM-0001"
    age: str = ""  # Patient's Age, e.g. "045Y"; "" to leave it out
    sex: str = ""  # "F", "M", "O" or ""
    birth_date: str = ""  # YYYYMMDD or ""


def mr_series(
    volume: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    patient: SeriesPatient | None = None,
    study_date: str = "20260101",
    description: str = "T1 axial",
) -> list[bytes]:
    """One Part 10 file (Explicit VR Little Endian) per slice of `volume`."""
    data = np.asarray(volume)
    if data.ndim != 3 or data.dtype != np.uint16:
        raise ValueError("mr_series needs a (slices, rows, columns) uint16 volume")
    slice_mm, row_mm, column_mm = (float(s) for s in spacing_mm)
    who = patient or SeriesPatient()
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    files = []
    for k in range(data.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName = who.name
        ds.PatientID = who.patient_id
        if who.age:
            ds.PatientAge = who.age
        if who.sex:
            ds.PatientSex = who.sex
        if who.birth_date:
            ds.PatientBirthDate = who.birth_date
        ds.StudyDate = ds.SeriesDate = study_date
        ds.Modality = "MR"
        ds.SeriesDescription = description
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = frame_of_reference
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, round(k * slice_mm, 4)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [row_mm, column_mm]
        ds.SliceThickness = slice_mm
        ds.SpacingBetweenSlices = slice_mm
        ds.Rows, ds.Columns = int(data.shape[1]), int(data.shape[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = np.ascontiguousarray(data[k]).tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append(buffer.getvalue())
    return files
