"""Checks shared by the de-identification tests: the PHI walk and dciodvfy.

The PHI walk takes, from the ORIGINAL dataset, every value that names or dates the patient
(person names, IDs, dates, addresses, institution, station, device and physician values, at
every sequence depth) and looks for each of them in every element of the de-identified
dataset, sequences included, and in its header bytes.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile
from typing import Any

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

PHI_VRS = frozenset({"PN", "DA", "DT"})
PHI_KEYWORDS = frozenset(
    {
        "PatientID",
        "OtherPatientIDs",
        "IssuerOfPatientID",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientBirthDate",
        "PatientBirthTime",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "DeviceSerialNumber",
        "AccessionNumber",
        "StudyID",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "RequestingService",
        "MedicalRecordLocator",
        "PerformedProcedureStepID",
        "ScheduledProcedureStepID",
        "RequestedProcedureID",
        "AdmissionID",
    }
)
# Kept by PS3.15 (not in Table E.1-1), whatever they hold: MR_small's institution is
# "TOSHIBA", which is also its manufacturer.
KEPT_BY_PROFILE = frozenset({"Manufacturer"})
PIXEL_DATA_TAG_LE = b"\xe0\x7f\x10\x00"


def read(data: bytes, **kw: Any) -> pydicom.FileDataset:
    return pydicom.dcmread(io.BytesIO(data), **kw)


def walk(ds: Dataset) -> list[DataElement]:
    """Every element at every sequence depth."""
    found: list[DataElement] = []
    for element in ds:
        found.append(element)
        if element.VR == "SQ":
            for item in element.value or []:
                found.extend(walk(item))
    return found


def _texts(element: DataElement) -> list[str]:
    value = element.value
    if element.VR == "SQ" or value is None or isinstance(value, bytes | bytearray):
        return []  # a sequence's values are its items' elements, walked on their own
    values = value if isinstance(value, list | tuple | pydicom.multival.MultiValue) else [value]
    return [str(v).strip() for v in values if str(v).strip()]


def phi_values(original: Dataset) -> set[str]:
    """The identifying values of `original`, at every depth (file meta excluded)."""
    found: set[str] = set()
    for element in walk(original):
        if element.tag.is_private:
            continue
        if element.VR in PHI_VRS or element.keyword in PHI_KEYWORDS:
            found.update(_texts(element))
    return found


def surviving_phi(original_bytes: bytes, deidentified_bytes: bytes) -> list[str]:
    """Original identifying values still found in the de-identified file (empty: none)."""
    original = read(original_bytes)
    out = read(deidentified_bytes)
    values = phi_values(original)
    left: list[str] = []
    for element in walk(out) + list(out.file_meta):
        if element.keyword in KEPT_BY_PROFILE:
            continue
        for text in _texts(element):
            for value in values:
                # Short values (a sex, a two-letter operator code) only as a whole value.
                hit = text == value or (len(value) >= 4 and value in text)
                if hit:
                    left.append(f"{element.keyword or element.tag}: {value!r}")
    end = deidentified_bytes.rfind(PIXEL_DATA_TAG_LE)
    header = deidentified_bytes[: end if end > 0 else len(deidentified_bytes)]
    kept = {t for e in walk(out) if e.keyword in KEPT_BY_PROFILE for t in _texts(e)}
    for value in values:
        if any(value in text for text in kept):
            continue
        if len(value) >= 4 and value.encode("latin-1", "ignore") in header:
            left.append(f"header bytes: {value!r}")
    return sorted(set(left))


def private_tags(data: bytes) -> list[str]:
    return [str(e.tag) for e in walk(read(data)) if e.tag.is_private]


def dciodvfy_available() -> bool:
    return shutil.which("dciodvfy") is not None


def dciodvfy_errors(data: bytes) -> set[str]:
    """dciodvfy's "Error" lines for `data`, with file-specific values kept."""
    with tempfile.NamedTemporaryFile(suffix=".dcm") as handle:
        handle.write(data)
        handle.flush()
        done = subprocess.run(["dciodvfy", handle.name], capture_output=True, timeout=60)
    lines = (done.stdout + done.stderr).decode("latin-1").splitlines()
    return {re.sub(r"\s+", " ", line).strip() for line in lines if line.startswith("Error")}
