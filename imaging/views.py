"""Browser pages for one scan. Thin: check the role, read the scan through the scoped
selector the detail API uses (404 for a scan the user cannot see), render. Restores,
status polling and notes are calls to the JSON APIs from static/js."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views import View

from imaging.models import Scan
from imaging.selectors import scan_get_for_user
from patients.selectors import patient_lookup
from patients.views import ClinicalPageMixin, page_context

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
        scan = scan_get_for_user(user=user, scan_id=scan_id, request=request)
        context = {
            "scan": scan,
            # Through the scoped selector too (no second audit event: the view is the scan).
            "patient": patient_lookup(user=user, patient_id=scan.patient_id),
            "regions": list(scan.regions.all()),
            "metrics": _metrics(scan),
            **page_context(),
        }
        template = (
            "imaging/scan_technician.html"
            if user.is_technician  # type: ignore[union-attr]
            else "imaging/scan_doctor.html"
        )
        return render(request, template, context)
