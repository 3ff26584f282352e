"""Writes for quality control: (re)compute a scan's QC statistics from its stored redacted
pixels. Processing computes them for every new scan; this fills in older scans."""

from __future__ import annotations

from typing import Any

from engine.pixels.qc import image_statistics
from imaging.models import Scan, ScanFormat, ScanStatus
from imaging.vault.redacted import scan_header, scan_redacted_pixels


def scan_qc_refresh(*, scan: Scan) -> dict[str, Any]:
    """Compute and store `scan.qc` from the redacted pixels (and the DICOM header).
    CryptoError or OSError if the stored files cannot be read."""
    header = scan_header(scan) if scan.format == ScanFormat.DICOM else None
    scan.qc = image_statistics(scan_redacted_pixels(scan), ds=header)
    scan.save(update_fields=["qc", "updated_at"])
    return scan.qc


def scans_missing_qc(*, everything: bool = False) -> Any:
    """Completed scans without statistics (or every completed scan)."""
    scans = Scan.objects.filter(status=ScanStatus.COMPLETED).order_by("id")
    return scans if everything else scans.filter(qc={})
