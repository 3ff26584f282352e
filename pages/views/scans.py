"""Browser pages for one scan. Thin: check the role, read the scan through the scoped
selector the detail API uses (404 for a scan the user cannot see), render. Restores,
status polling and notes are calls to the JSON APIs from static/js."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views import View

from engine.errors import CryptoError, EngineError
from imaging.models import Scan, ScanFormat, ScanStatus
from imaging.selectors.panels import scan_panels
from imaging.selectors.scans import scan_get_for_user
from pages.views.patients import ClinicalPageMixin, page_context, patient_not_visible
from patients.selectors import patient_lookup

# Stage timings in the order the pipeline runs them, with the names people read.
TIMING_LABELS = (
    ("load_ms", "Load"),
    ("decode_ms", "Decode"),
    ("detect_ms", "Detection"),
    ("encrypt_ms", "Encryption"),
    ("redact_ms", "Redaction"),
    ("grid_ms", "Grid image"),
    ("fingerprint_ms", "Fingerprint"),
    ("metrics_ms", "Metrics"),
    ("verify_ms", "Verification"),
    ("store_ms", "Storage"),
    ("total_ms", "Total"),
)


# Detector classes as people say them.
REGION_KINDS = {
    "phi_text": "Patient text",
    "tech_text": "Technical text",
    "barcode": "Barcode",
    # engine.dicom.ultrasound: ink outside an ultrasound's data regions that no detection covered.
    "annotation": "Scanner annotation",
}


def _regions(scan: Scan) -> list[Any]:
    """One row per group of identical boxes (a cine's overlay: "frames 1-100"), shown as
    its first region with the group's number and frames."""
    from engine.detection.groups import region_groups

    rows = []
    for group in region_groups(list(scan.regions.all())):
        region = group.first
        region.kind = REGION_KINDS.get(region.label, region.label.replace("_", " "))
        region.number = group.number
        region.frames_label = group.frames_label
        region.region_count = len(group.regions)
        rows.append(region)
    return rows


def _window_choices(scan: Scan) -> list[tuple[str, str]]:
    """The window presets this DICOM image takes, as (value, label) for the viewer's menu.

    Empty for JPEG/PNG, for unfinished scans, and when the stored header cannot be read (the
    viewer then simply offers no windows; the image itself still shows)."""
    if scan.format != ScanFormat.DICOM or scan.status != ScanStatus.COMPLETED:
        return []
    from imaging.vault import redacted as viewing

    try:
        info = viewing.scan_display_info(scan, viewing.scan_header(scan))
    except (CryptoError, OSError, ValueError, EngineError):
        return []
    if not info["windowable"]:
        return []
    special = {"file": "As stored in the file", "auto": "Auto (full range)"}
    choices = []
    for preset in info["window_presets"]:
        name = preset["name"]
        if name in special:
            choices.append((name, special[name]))
        else:
            label = f"{name.capitalize()} (W {preset['width']:g} / L {preset['centre']:g})"
            choices.append((name, label))
    # The default first, so the menu shows what the image opened with.
    default = info.get("default_window")
    choices.sort(key=lambda choice: choice[0] != default)
    return choices


def _metrics(scan: Scan) -> dict[str, Any]:
    """The scan's stored metrics, shaped for the panel (the detail API returns the same)."""
    metrics = scan.metrics or {}
    timings = metrics.get("timings") or {}
    entropy = {row["index"]: row for row in metrics.get("region_entropy") or []}
    return {
        "ssim": metrics.get("ssim"),
        "psnr": metrics.get("psnr"),
        "residual_detections": metrics.get("residual_detections"),
        "duplicate_distance": metrics.get("duplicate_distance"),
        "timings": [(label, timings[key]) for key, label in TIMING_LABELS if key in timings],
        "has_entropy": bool(entropy),
    }


class ScanPageView(ClinicalPageMixin, View):
    """Technicians: the grid image, regions and flags. Doctors: the viewer with restore."""

    def get(self, request: HttpRequest, scan_id: int) -> HttpResponse:
        user = request.user
        try:
            scan = scan_get_for_user(user=user, scan_id=scan_id, request=request)
        except Http404:
            return patient_not_visible(request)
        context = {
            "scan": scan,
            # Through the scoped selector too (no second audit event: the view is the scan).
            "patient": patient_lookup(user=user, patient_id=scan.patient_id),
            "regions": _regions(scan),
            "metrics": _metrics(scan),
            "can_review": user.is_technician,  # type: ignore[union-attr]
            "window_choices": _window_choices(scan),
            "restore_reason_required": settings.MEDIMG_RESTORE_REASON_REQUIRED,
            # Cards other apps add (the gateway's send status): imaging.selectors.panels.
            "panels": scan_panels(scan=scan, user=user),
            **page_context(),
        }
        template = (
            "imaging/scan_technician.html"
            if user.is_technician  # type: ignore[union-attr]
            else "imaging/scan_doctor.html"
        )
        return render(request, template, context)
