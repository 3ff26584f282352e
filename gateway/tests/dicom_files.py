"""A study with identifying header values and burned-in text, as a modality would send it."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid

from imaging.tests import factories

# Every identifying value the files carry; none may leave de-identified.
PHI = {
    "PatientName": "GATEWAYTEST^ROSALIND",
    "PatientID": "GW-7731-K",
    "PatientBirthDate": "19610314",
    "InstitutionName": "Saint Elsewhere Hospital",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "AccessionNumber": "ACC99887766",
    "StudyID": "STUDY4242",
    "OperatorsName": "TECH^TAMSIN",
}


@dataclass
class Study:
    files: list[Path]
    study_uid: str
    series_uid: str
    sop_uids: list[str]


def study_files(folder: Path, count: int = 2, *, patient_id: str | None = None) -> Study:
    """`count` single-frame 16-bit instances of one series, each with burned-in text."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    files, sops = [], []
    for n in range(count):
        data, _ = factories.dicom16_text(frames=1)
        ds = dcmread(io.BytesIO(data))
        for keyword, value in PHI.items():
            setattr(ds, keyword, value)
        if patient_id is not None:
            ds.PatientID = patient_id
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyDate, ds.StudyTime = "20260314", "101500"
        ds.SeriesNumber, ds.InstanceNumber = 1, n + 1
        ds.Modality = "OT"
        path = folder / f"im{n + 1:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        sops.append(str(ds.SOPInstanceUID))
    return Study(files, str(study_uid), str(series_uid), sops)
