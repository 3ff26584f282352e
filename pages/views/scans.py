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
    # imaging.models.ScannerRule: a box the admin set for every image of this scanner model.
    "scanner_rule": "Scanner rule",
    # engine.detection.pipeline: text the second opinion read that shows a header value.
    "header_match": "Header value seen",
}


# More groups than this and the region table shows the first ones with a "show all" button.
REGION_ROWS_SHOWN = 12


def _regions(scan: Scan) -> list[Any]:
    """One row per group of identical boxes (a cine's overlay: "frames 1-100"), shown as
    its first region with the group's number, frames and the state of its removal (every
    action on the page acts on the whole group)."""
    from engine.detection.groups import region_groups

    rows: list[Any] = []
    regions = list(scan.regions.select_related("removal_requested_by"))
    for group in region_groups(regions):
        region = group.first
        region.kind = REGION_KINDS.get(region.label, region.label.replace("_", " "))
        region.number = group.number
        region.frames_label = group.frames_label
        region.region_count = len(group.regions)
        region.group_confidence = group.confidence
        pending = [r for r in group.regions if r.removal_pending]
        region.group_pending = bool(pending)
        if pending and not region.removal_pending:
            # The row speaks for the group: show a pending member's request.
            region.removal_requested_by = pending[0].removal_requested_by
            region.removal_requested_at = pending[0].removal_requested_at
            region.action_id = pending[0].pk
        else:
            region.action_id = region.pk
        region.more = len(rows) >= REGION_ROWS_SHOWN
        rows.append(region)
    return rows


def _leftovers(scan: Scan) -> list[Any]:
    """The verification pass's leftover detections for the review panel, one row per label
    and box (the same text on every frame of a cine is one row, "frames 1-27"), shown as the
    group's first open detection (else its first) with the group's state: open while any
    member is, else dismissed if any member was dismissed, else covered."""
    from engine.detection.groups import frames_label
    from imaging.services.review import leftover_covered

    regions = list(scan.regions.all())
    groups: dict[tuple[str, int, int, int, int], list[Any]] = {}
    for stored in scan.leftovers.select_related("dismissed_by").order_by("frame", "id"):
        leftover: Any = stored  # gains the row's state
        if leftover.dismissed:
            leftover.state = "dismissed"
        elif leftover_covered(leftover, regions):
            leftover.state = "covered"
        else:
            leftover.state = "open"
        groups.setdefault((leftover.label, *leftover.box), []).append(leftover)
    rows = []
    for members in groups.values():
        states = {m.state for m in members}
        state = next(s for s in ("open", "dismissed", "covered") if s in states)
        row = next(m for m in members if m.state == state)
        row.state = state
        row.kind = REGION_KINDS.get(row.label, row.label.replace("_", " "))
        row.group_frames = ",".join(str(m.frame) for m in members if m.state == "open")
        row.frames_label = frames_label(m.frame for m in members)
        row.frame_count = len(members)
        rows.append(row)
    return rows


def _series_size(scan: Scan) -> int:
    """How many images "whole series as one volume" would segment (1: not offered)."""
    from imaging.jobs.segmentation import series_members

    if scan.format != ScanFormat.DICOM or scan.frames != 1 or not scan.series_uid:
        return 1
    return len(series_members(scan))


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
            "leftovers": _leftovers(scan),
            "region_rows_shown": REGION_ROWS_SHOWN,
            "series_size": _series_size(scan),
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
