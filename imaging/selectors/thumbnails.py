"""Small PNG thumbnails of redacted images, cached (Redis in production) by version.

    scan_thumbnail(user=..., scan_id=..., size=256, request=...) -> Thumbnail

A thumbnail is rendered from the stored redacted frame 0 (regions already filled, never the
original) and cached under a key that names the scan's current redacted image: its stored
path and `updated_at`. Every write of a redacted image (processing, a re-run, a review that
adds or removes a region) saves the scan's `updated_at` with it, so the key changes and the
old entry is never served again; it expires after THUMBNAIL_CACHE_SECONDS. The key doubles as
the HTTP ETag, so a browser that has the thumbnail gets a 304 without a body.

Only redacted pixels are cached. Viewing thumbnails is a routine view: audited as "viewed
thumbnails of patient X" once per user and patient per AUDIT_ROUTINE_VIEW_MINUTES
(audit_record_routine), not once per image, so a patient page with twenty images writes one row.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from PIL import Image

from audit.models import Action
from audit.services import audit_record_routine
from engine import errors
from imaging.models import Scan, ScanStatus
from imaging.vault import derivatives

SIZES = (128, 256, 512)
DEFAULT_SIZE = 256
KEY_PREFIX = "thumb:v1"


@dataclass(frozen=True)
class Thumbnail:
    scan_id: int
    content: bytes
    etag: str
    cached: bool


def thumbnail_version(scan: Scan, size: int) -> str:
    """A name for the scan's current redacted frame 0 at `size`; changes when it changes."""
    paths = (scan.frame_paths or {}).get("redacted") or [""]
    stamp = scan.updated_at.isoformat() if scan.updated_at else ""
    digest = hashlib.sha256(f"{scan.pk}|{paths[0]}|{stamp}|{size}".encode()).hexdigest()
    return digest[:32]


def cache_key(scan_id: int, version: str) -> str:
    return f"{KEY_PREFIX}:{scan_id}:{version}"


def render_thumbnail(png: bytes, size: int) -> bytes:
    """`png` scaled to fit a size x size square (never enlarged), as PNG."""
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        thumb = image.copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    thumb.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def scan_thumbnail(
    *,
    user: Any,
    scan_id: int,
    size: int = DEFAULT_SIZE,
    if_none_match: str | None = None,
    request: HttpRequest | None = None,
) -> Thumbnail:
    """The redacted thumbnail of a scan `user` may see (404 otherwise; 409 before processing).

    With `if_none_match` equal to the current version, nothing is read or rendered and the
    content is empty (the caller answers 304)."""
    if size not in SIZES:
        raise errors.invalid_size(SIZES)
    scan = get_object_or_404(
        Scan.objects.visible_to(user).only(
            "id", "patient_id", "status", "updated_at", *derivatives.FIELDS
        ),
        pk=scan_id,
    )
    paths = (scan.frame_paths or {}).get("redacted") or []
    if scan.status != ScanStatus.COMPLETED or not paths:
        raise errors.scan_not_ready()
    version = thumbnail_version(scan, size)
    audit_record_routine(
        action=Action.SCAN_VIEWED,
        actor=user,
        target_type="patient",
        target_id=scan.patient_id,
        kind="thumbnails",
        request=request,
        details={"view": "thumbnails"},
    )
    if if_none_match and if_none_match.strip('"') == version:
        return Thumbnail(scan.pk, b"", version, cached=True)
    key = cache_key(scan.pk, version)
    content = cache.get(key)
    if content is not None:
        return Thumbnail(scan.pk, content, version, cached=True)
    frame = derivatives.frame_read_audited(
        scan, "redacted", 0, actor=user, request=request, details={"view": "thumbnail"}
    )
    content = render_thumbnail(frame, size)
    cache.set(key, content, timeout=settings.IMAGING_THUMBNAIL_CACHE_SECONDS)
    return Thumbnail(scan.pk, content, version, cached=False)
