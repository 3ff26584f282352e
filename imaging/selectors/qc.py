"""Reads for quality control: outlying scans by their stored statistics, and K-means
intensity clusters of one slice of a scan's redacted pixels.

Outliers are computed over every completed scan's `qc` statistics (numbers, no patient data)
so a scanner drifting shows up whoever uploaded its scans. Who sees what: doctors get each
outlier's scan and patient id (through `Scan.objects.visible_to`, to open the scan); admins
get the statistics only, no patient id and no link.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.core.cache import cache
from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from audit.models import Action
from audit.services import audit_record
from engine import errors
from engine.pixels import qc, rendering
from engine.pixels.redaction import fill_regions
from engine.pixels.restoration import encode_image
from imaging.models import Scan, ScanFormat, ScanStatus
from imaging.vault.redacted import scan_header, scan_redacted_pixels

CLUSTER_CACHE_SECONDS = 600


def _group_of(scan_row: Mapping[str, Any]) -> tuple[str, str]:
    stats = scan_row["qc"] or {}
    modality = scan_row["modality"] or stats.get("modality") or str(scan_row["format"]).upper()
    scanner = scan_row["scanner"] or stats.get("scanner") or ""
    return modality, scanner


def qc_outliers(
    *, user: Any, threshold: float = qc.OUTLIER_THRESHOLD, min_group: int = qc.MIN_GROUP
) -> dict[str, Any]:
    """{"outliers": [...], "groups": [{"modality", "scanner", "scans"}], "threshold",
    "metrics", "min_group"}; see engine.pixels.qc.outliers for an outlier's shape (plus
    "patient" for users who may see the scan)."""
    rows: list[dict[str, Any]] = []
    for row in (
        Scan.objects.filter(status=ScanStatus.COMPLETED)
        .exclude(qc={})
        .values("id", "modality", "scanner", "format", "qc")
        .order_by("id")
    ):
        if "error" in (row["qc"] or {}):
            continue
        modality, scanner = _group_of(row)
        rows.append({"id": row["id"], "modality": modality, "scanner": scanner, "qc": row["qc"]})
    found = qc.outliers(rows, threshold=threshold, min_group=min_group)
    visible = dict(
        Scan.objects.visible_to(user)
        .filter(pk__in=[o["id"] for o in found])
        .values_list("id", "patient_id")
    )
    for outlier in found:
        outlier["patient"] = visible.get(outlier["id"])
        if outlier["id"] not in visible:
            outlier["id"] = None  # Not the caller's to open: the statistics alone.
    groups: dict[tuple[str, str], int] = {}
    for entry in rows:
        key = (entry["modality"], entry["scanner"])
        groups[key] = groups.get(key, 0) + 1
    return {
        "threshold": threshold,
        "min_group": min_group,
        "metrics": list(qc.OUTLIER_METRICS),
        "groups": [
            {"modality": m, "scanner": s, "scans": n} for (m, s), n in sorted(groups.items())
        ],
        "outliers": found,
    }


@dataclass(frozen=True)
class ClusterResult:
    scan: Scan
    frame: int
    k: int
    png: bytes
    silhouette: float | None
    sample_size: int
    centres: list[float]
    sizes: list[int]
    intensity: str


def _frame_intensities(scan: Scan, pixels: np.ndarray, frame: int) -> tuple[np.ndarray, str]:
    one = pixels[frame]
    if scan.format == ScanFormat.DICOM:
        header = scan_header(scan)
        if rendering.is_greyscale(header) and one.ndim == 2:
            return rendering.modality_values(header, one, index=frame), "modality"
        display = rendering.render_frame_uint8(header, one, index=frame, overlays=False)
        return qc.luminance(display), "luminance"
    if one.ndim == 2:
        return one.astype(np.float64), "grey"
    return qc.luminance(one), "luminance"


def scan_clusters(
    *, user: Any, scan_id: int, frame: int, k: int, request: HttpRequest | None = None
) -> ClusterResult:
    """K-means (k clusters) of one frame of the REDACTED pixels, the redacted regions left
    out of the fit and shown grey. Cached per scan, run, frame and k. Audited as scan_viewed."""
    scan = get_object_or_404(Scan.objects.visible_to(user), pk=scan_id)
    if scan.status != ScanStatus.COMPLETED:
        raise errors.scan_not_ready()
    if not 0 <= frame < scan.frames:
        raise errors.invalid_frame(scan.frames - 1)
    if not 2 <= k <= qc.MAX_K:
        raise errors.invalid_k(qc.MAX_K)
    run = scan.redacted_pixels_path
    key = f"medimg:qc-clusters:v1:{scan.pk}:{run}:{frame}:{k}"
    cached = cache.get(key)
    if cached is None:
        pixels = scan_redacted_pixels(scan)
        values, intensity = _frame_intensities(scan, pixels, frame)
        boxes = [r.box for r in scan.regions.filter(frame=frame).only("x1", "y1", "x2", "y2")]
        mask = fill_regions(np.ones(values.shape, dtype=np.uint8), boxes).astype(bool)
        result = qc.kmeans_clusters(values, k=k, mask=mask)
        cached = {
            "png": encode_image(qc.cluster_image(result.labels), "png"),
            "silhouette": result.silhouette,
            "sample_size": result.sample_size,
            "centres": result.centres,
            "sizes": result.sizes,
            "intensity": intensity,
        }
        cache.set(key, cached, CLUSTER_CACHE_SECONDS)
    audit_record(
        action=Action.SCAN_VIEWED,
        actor=user,
        target=scan,
        request=request,
        details={"view": "clusters", "frame": frame, "k": k},
    )
    return ClusterResult(scan=scan, frame=frame, k=k, **cached)
