"""Reads for the viewer: a scan's frames and windows, a patient's studies and series.

Every query starts from `Scan.objects.visible_to(user)`; a scan or patient the user may not
see is a 404.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from audit.models import Action
from audit.services import audit_record
from engine import errors
from imaging.models import Scan, ScanFormat, ScanStatus
from imaging.vault.redacted import scan_display_info, scan_header
from patients.models import Patient

# What a study listing shows of each scan: never keys, paths or ciphertext.
STUDY_SCAN_FIELDS = (
    "id",
    "patient_id",
    "study_uid",
    "series_uid",
    "instance_number",
    "modality",
    "scanner",
    "original_filename",
    "format",
    "frames",
    "width",
    "height",
    "status",
    "created_at",
)


def scan_frames_info(
    *, user: Any, scan_id: int, request: HttpRequest | None = None
) -> dict[str, Any]:
    """Frames and windows the viewer may ask for (imaging.vault.redacted.scan_display_info).

    Audited as scan_viewed (view "frames"): a DICOM's header is read to answer."""
    scan = get_object_or_404(Scan.objects.visible_to(user), pk=scan_id)
    if scan.status != ScanStatus.COMPLETED:
        raise errors.scan_not_ready()
    header = scan_header(scan) if scan.format == ScanFormat.DICOM else None
    audit_record(
        action=Action.SCAN_VIEWED,
        actor=user,
        target=scan,
        request=request,
        details={"view": "frames"},
    )
    return scan_display_info(scan, header)


def _instance_key(scan: Scan) -> tuple[int, int, float, int]:
    # Instance number first (missing ones last), then upload order.
    number = scan.instance_number
    return (number is None, number or 0, scan.created_at.timestamp(), scan.pk)


def patient_studies(*, user: Any, patient: Patient) -> list[dict[str, Any]]:
    """The patient's scans as studies -> series -> scans.

    Studies and series by their (de-identified) UIDs, in order of first upload; scans by
    instance number. Scans without a study UID (JPEG/PNG, or DICOM not yet de-identified)
    form one study with study_uid null, one series per scan."""
    scans = list(
        Scan.objects.visible_to(user)
        .filter(patient=patient)
        .only(*STUDY_SCAN_FIELDS)
        .order_by("created_at", "id")
    )
    studies: dict[str | None, dict[str | None, list[Scan]]] = {}
    for scan in scans:
        study = scan.study_uid or None
        series = scan.series_uid or None if study is not None else f"scan-{scan.pk}"
        studies.setdefault(study, {}).setdefault(series, []).append(scan)
    result = []
    for study_uid, series_map in studies.items():
        series_list = []
        for series_uid, members in series_map.items():
            members.sort(key=_instance_key)
            series_list.append(
                {
                    "series_uid": series_uid if study_uid is not None else None,
                    "modality": next((m.modality for m in members if m.modality), ""),
                    "scanner": next((m.scanner for m in members if m.scanner), ""),
                    "scan_count": len(members),
                    "scans": members,
                }
            )
        result.append(
            {
                "study_uid": study_uid,
                "modalities": sorted({s["modality"] for s in series_list if s["modality"]}),
                "series_count": len(series_list),
                "series": series_list,
            }
        )
    # Ungrouped uploads last.
    result.sort(key=lambda s: s["study_uid"] is None)
    return result
