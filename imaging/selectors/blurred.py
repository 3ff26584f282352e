"""The blurred teaching copy of a scan's frame (engine.pixels.blur), rendered on request.

Built from the stored redacted frame (checked against its digest) and the regions' boxes on
that frame: nothing of the original is read, so it is as safe to hand out as the redacted
image, and it cannot be restored. Offered only once the scan needs no review (a leftover
detection not resolved may still show text). Audited as scan_viewed (view "blurred").
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from PIL import Image

from audit.models import Action
from audit.services import audit_record
from engine import errors
from engine.pixels.blur import blur_regions
from engine.pixels.restoration import encode_image
from imaging.models import Scan, ScanStatus
from imaging.vault import derivatives


def scan_blurred_png(
    *,
    user: Any,
    scan_id: int,
    frame: int,
    download: bool = False,
    request: HttpRequest | None = None,
) -> tuple[Scan, bytes]:
    """One frame of the blurred copy as PNG. 404 for a scan `user` cannot see; 409
    scan_not_ready, 409 needs_review; 400 invalid_frame."""
    scan = get_object_or_404(
        Scan.objects.visible_to(user).only("id", "status", "needs_review", *derivatives.FIELDS),
        pk=scan_id,
    )
    if scan.status != ScanStatus.COMPLETED:
        raise errors.scan_not_ready()
    if scan.needs_review:
        raise errors.needs_review()
    paths = (scan.frame_paths or {}).get("redacted") or []
    if not 0 <= frame < len(paths):
        raise errors.invalid_frame(max(len(paths) - 1, 0))
    details = {"view": "blurred", "frame": frame, "download": download}
    content = derivatives.frame_read_audited(
        scan, "redacted", frame, actor=user, request=request, details=details
    )
    with Image.open(io.BytesIO(content)) as image:
        redacted = np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
    boxes = [r.box for r in scan.regions.filter(frame=frame).only("x1", "y1", "x2", "y2")]
    blurred = blur_regions(redacted, boxes)
    audit_record(
        action=Action.SCAN_VIEWED, actor=user, target=scan, request=request, details=details
    )
    return scan, encode_image(blurred, "png")
