"""The QIDO-RS index: the de-identified instance's UIDs and query attributes per scan.

    instance_index(*, scan_id) -> DicomInstance | None    # (re)built from the redacted header
    instances_index_missing(scans) -> None                 # scans completed before the gateway

Only the de-identified header (imaging.vault.redacted.scan_header, what the export serves)
is read: the UIDs are the remapped ones and every attribute kept here is as it leaves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pydicom.dataset import Dataset

from gateway.models import DicomInstance
from imaging.models import Scan, ScanFormat, ScanStatus
from imaging.vault.redacted import scan_header

logger = logging.getLogger(__name__)

STUDY_KEYWORDS = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDescription",
)
SERIES_KEYWORDS = (
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
)
INSTANCE_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)


def dataset_json(dataset: Dataset, keywords: Iterable[str]) -> dict[str, Any]:
    subset = Dataset()
    for keyword in keywords:
        if keyword in dataset:
            subset[keyword] = dataset[keyword]
    return subset.to_json_dict()


def instance_index(*, scan_id: int) -> DicomInstance | None:
    scan = Scan.objects.filter(
        pk=scan_id, format=ScanFormat.DICOM, status=ScanStatus.COMPLETED
    ).first()
    if scan is None or not scan.redacted_path:
        return None
    header = scan_header(scan)
    meta = getattr(header, "file_meta", None)
    instance_number = header.get("InstanceNumber")
    defaults = {
        "study_uid": str(header.get("StudyInstanceUID", "")),
        "series_uid": str(header.get("SeriesInstanceUID", "")),
        "sop_instance_uid": str(header.get("SOPInstanceUID", "")),
        "sop_class_uid": str(header.get("SOPClassUID", "")),
        "transfer_syntax_uid": str(getattr(meta, "TransferSyntaxUID", "") or ""),
        "modality": str(header.get("Modality", ""))[:16],
        "study_date": str(header.get("StudyDate", ""))[:8],
        "instance_number": int(instance_number) if instance_number not in (None, "") else None,
        "study_json": dataset_json(header, STUDY_KEYWORDS),
        "series_json": dataset_json(header, SERIES_KEYWORDS),
        "instance_json": dataset_json(header, INSTANCE_KEYWORDS),
    }
    instance, _ = DicomInstance.objects.update_or_create(scan=scan, defaults=defaults)
    return instance


def instances_index_missing(scans: Iterable[Scan]) -> None:
    for scan in scans:
        try:
            instance_index(scan_id=scan.pk)
        except Exception:  # noqa: BLE001 - one unreadable scan must not hide the others
            logger.exception("indexing scan %s for DICOMweb failed", scan.pk)
