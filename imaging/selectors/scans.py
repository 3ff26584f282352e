"""Reads for scans. Every query for patient data starts from `Scan.objects.visible_to(user)`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models import Count, Prefetch, QuerySet
from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from audit.models import Action
from audit.services import audit_record
from engine import errors
from engine.pixels.metrics import hamming
from engine.pixels.restoration import encode_image
from imaging.models import Fingerprint, LeftoverDetection, Region, Scan, ScanFormat, ScanStatus
from imaging.vault import derivatives
from imaging.vault.redacted import redacted_render, scan_header, scan_window
from patients.models import Patient
from patients.selectors import patient_lookup

# Region columns a summary needs: never the ciphertext, which can be large.
REGION_SUMMARY_FIELDS = (
    "id",
    "scan_id",
    "index",
    "frame",
    "label",
    "confidence",
    "x1",
    "y1",
    "x2",
    "y2",
    "dtype",
    "channels",
    "pixel_entropy",
    "ciphertext_entropy",
    "removal_requested_at",
    "removal_requested_by",
)


def scan_list_for_patient(*, user: Any, patient: Patient) -> QuerySet[Scan]:
    """The patient's scans, newest first, with region counts in the same query."""
    return (
        Scan.objects.visible_to(user)
        .filter(patient=patient)
        .select_related("uploaded_by")
        .annotate(region_count=Count("regions"))
        .defer("wrapped_key")
        .order_by("-created_at", "-id")
    )


def patient_scan_list(
    *, user: Any, patient_id: str, request: HttpRequest | None = None
) -> QuerySet[Scan]:
    """A patient's scans (`scan_list_for_patient`), for a patient `user` may see, or Http404.
    Audited as a view of the patient: the list names the patient's files."""
    patient = patient_lookup(user=user, patient_id=patient_id)
    audit_record(
        action=Action.PATIENT_VIEWED,
        actor=user,
        target=patient,
        request=request,
        details={"part": "images"},
    )
    return scan_list_for_patient(user=user, patient=patient)


def scan_get_for_user(*, user: Any, scan_id: int, request: HttpRequest | None = None) -> Scan:
    """One scan with its region summaries (no ciphertext loaded); 404 when not visible.

    Audited as scan_viewed: the detail names the patient's image and what was found in it."""
    queryset = (
        Scan.objects.visible_to(user)
        .select_related("uploaded_by")
        .prefetch_related(
            Prefetch(
                "regions",
                queryset=Region.objects.only(*REGION_SUMMARY_FIELDS).order_by("index"),
            )
        )
    )
    scan = get_object_or_404(queryset, pk=scan_id)
    audit_record(
        action=Action.SCAN_VIEWED,
        actor=user,
        target=scan,
        request=request,
        details={"view": "detail"},
    )
    return scan


def scans_by_ids(*, ids: list[int]) -> list[Scan]:
    """Fresh copies of scans just written (their processing may have run in-process)."""
    found = Scan.objects.select_related("uploaded_by").in_bulk(ids)
    return [found[i] for i in ids if i in found]


def scan_for_restore(*, user: Any, scan_id: int) -> Scan:
    """The scan with its regions' ciphertexts, ready to decrypt; 404 when not visible."""
    queryset = Scan.objects.visible_to(user).prefetch_related(
        Prefetch("regions", queryset=Region.objects.order_by("index"))
    )
    return get_object_or_404(queryset, pk=scan_id)


def scan_status_for_user(*, user: Any, scan_id: int) -> Scan:
    return get_object_or_404(
        Scan.objects.visible_to(user).only(
            "id", "status", "failure_reason", "needs_review", "possible_duplicate", "updated_at"
        ),
        pk=scan_id,
    )


def region_list_for_scan(*, scan: Scan) -> QuerySet[Region]:
    return Region.objects.filter(scan=scan).only(*REGION_SUMMARY_FIELDS).order_by("index")


def region_get_for_user(*, user: Any, region_id: int) -> Region:
    return get_object_or_404(Region.objects.visible_to(user).select_related("scan"), pk=region_id)


def leftover_get_for_user(*, user: Any, leftover_id: int) -> LeftoverDetection:
    """A leftover detection of a scan `user` may see; 404 otherwise."""
    return get_object_or_404(
        LeftoverDetection.objects.filter(scan__in=Scan.objects.visible_to(user)), pk=leftover_id
    )


def leftover_list_for_scan(*, scan: Scan) -> list[LeftoverDetection]:
    return list(scan.leftovers.select_related("dismissed_by").order_by("frame", "id"))


def scan_display_png(
    *,
    user: Any,
    scan_id: int,
    kind: str,
    frame: int,
    request: HttpRequest | None = None,
    window: Any = None,
) -> tuple[Scan, bytes]:
    """The stored redacted or grid PNG of one frame (regions filled). Audited as scan_viewed.

    With a `window` (an `imaging.vault.redacted.WindowRequest`, DICOM only), the redacted frame is
    rendered again from the redacted pixels with that window."""
    if window is not None and not window.empty:
        scan = get_object_or_404(Scan.objects.visible_to(user), pk=scan_id)
        return scan, _scan_windowed_png(
            scan=scan, frame=frame, window=window, user=user, request=request
        )
    scan = get_object_or_404(
        Scan.objects.visible_to(user).only("id", "status", *derivatives.FIELDS), pk=scan_id
    )
    if scan.status != ScanStatus.COMPLETED:
        raise errors.scan_not_ready()
    paths = (scan.frame_paths or {}).get(kind) or []
    if not 0 <= frame < len(paths):
        raise errors.invalid_frame(max(len(paths) - 1, 0))
    content = derivatives.frame_read_audited(
        scan, kind, frame, actor=user, request=request, details={"view": kind, "frame": frame}
    )
    audit_record(
        action=Action.SCAN_VIEWED,
        actor=user,
        target=scan,
        request=request,
        details={"view": kind, "frame": frame},
    )
    return scan, content


def _scan_windowed_png(
    *, scan: Scan, frame: int, window: Any, user: Any, request: HttpRequest | None
) -> bytes:
    if scan.format != ScanFormat.DICOM:
        raise errors.invalid_window("Windows apply to DICOM images only.")
    if scan.status != ScanStatus.COMPLETED:
        raise errors.scan_not_ready()
    if not 0 <= frame < scan.frames:
        raise errors.invalid_frame(scan.frames - 1)
    header = scan_header(scan)
    choice = scan_window(scan, header, window)
    image = redacted_render(scan, frame, choice, header=header)
    audit_record(
        action=Action.SCAN_VIEWED,
        actor=user,
        target=scan,
        request=request,
        details={
            "view": "redacted",
            "frame": frame,
            "window": {"name": window.window, "wc": window.centre, "ww": window.width},
        },
    )
    return encode_image(image, "png")


@dataclass(frozen=True)
class Similar:
    scan: Scan
    distance: int


def scan_similar(
    *, user: Any, scan: Scan, limit: int = 10, request: HttpRequest | None = None
) -> list[Similar]:
    """Visible scans nearest to `scan` by perceptual hash (Hamming distance).

    Only scans `user` may see are candidates. Audited as a view of `scan` that names every
    scan listed: the answer carries other patients' ids and file names."""
    own = Fingerprint.objects.filter(scan=scan).values_list("perceptual_hash", flat=True).first()
    distances: list[tuple[int, int]] = []
    if own is not None:
        candidates = (
            Fingerprint.objects.filter(scan__in=Scan.objects.visible_to(user))
            .exclude(scan=scan)
            .values_list("scan_id", "perceptual_hash")
        )
        distances = sorted(
            ((int(hamming(own, other)), scan_id) for scan_id, other in candidates.iterator()),
        )[:limit]
    by_id = (
        Scan.objects.visible_to(user)
        .select_related("uploaded_by")
        .in_bulk([scan_id for _, scan_id in distances])
    )
    similar = [Similar(scan=by_id[sid], distance=d) for d, sid in distances if sid in by_id]
    audit_record(
        action=Action.SCAN_VIEWED,
        actor=user,
        target=scan,
        request=request,
        details={"view": "similar", "listed": [item.scan.pk for item in similar]},
    )
    return similar


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def processing_stats(*, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    """Aggregates only (no patient data): counts, timings, regions per image, classes."""
    scans = Scan.objects.all()
    if since is not None:
        scans = scans.filter(created_at__gte=since)
    if until is not None:
        scans = scans.filter(created_at__lt=until)
    by_status = {s.value: 0 for s in ScanStatus}
    for row in scans.values("status").annotate(n=Count("id")):
        by_status[row["status"]] = row["n"]
    completed = scans.filter(status=ScanStatus.COMPLETED)
    timings = list(completed.values_list("total_ms", "detection_ms", "encryption_ms").order_by())
    regions_per_image = list(
        completed.annotate(n=Count("regions")).values_list("n", flat=True).order_by()
    )
    classes = Counter(
        dict(
            Region.objects.filter(scan__in=completed)
            .values_list("label")
            .annotate(n=Count("id"))
            .values_list("label", "n")
            .order_by()
        )
    )
    failures = Counter(
        dict(
            scans.filter(status=ScanStatus.FAILED)
            .values_list("failure_reason")
            .annotate(n=Count("id"))
            .values_list("failure_reason", "n")
            .order_by()
        )
    )

    def column(i: int) -> list[float]:
        return [float(value) for row in timings if (value := row[i]) is not None]

    return {
        "since": since,
        "until": until,
        "total": sum(by_status.values()),
        "by_status": by_status,
        "failure_reasons": dict(failures),
        "needs_review": scans.filter(needs_review=True).count(),
        "possible_duplicates": scans.filter(possible_duplicate=True).count(),
        "total_ms": {"median": _percentile(column(0), 50), "p95": _percentile(column(0), 95)},
        "detection_ms": {"median": _percentile(column(1), 50), "p95": _percentile(column(1), 95)},
        "encryption_ms": {
            "median": _percentile(column(2), 50),
            "p95": _percentile(column(2), 95),
        },
        "regions_per_image": {
            "mean": float(np.mean(regions_per_image)) if regions_per_image else None,
            "median": _percentile([float(n) for n in regions_per_image], 50),
            "max": max(regions_per_image) if regions_per_image else None,
        },
        "classes": dict(classes),
        "duplicate_max_distance": settings.IMAGING_DUPLICATE_MAX_DISTANCE,
    }
