"""A scan's plain display files (redacted and grid PNG frames), bound to the scan on every read.

These files hold nothing secret (regions are filled), so they are stored as plain PNGs that
the viewer, thumbnails, exports and segmentation overlays use as they are. Unbound, a file
copied over one of them from another scan (or another frame) would be shown, exported or
segmented as this scan's image: another patient's picture under this patient's name. So
each file gets `crypto.derivative_digest` (HMAC-SHA256 keyed from the scan's data key, over
scan, kind, frame and the file's bytes) when it is written, kept on the scan row
(`Scan.frame_digests`, the shape of `Scan.frame_paths`), and every read checks it:

    frame_digests(data_key, *, scan_ref, frames) -> {"redacted": [...], "grid": [...]}
    frame_read(scan, kind, frame, *, data_key=None) -> bytes    # CryptoError on a mismatch
    frame_read_audited(scan, kind, frame, *, actor, request, details) -> bytes   # 500 + audit
    scan_frame_digests_backfill(*, scan_id) -> bool     # legacy scans: bind the files as they are

Deferred frames: a cine's later frames whose display is their redacted pixels as stored
(8-bit RGB or grey, `engine.pixels.rendering.plain_display`) get no PNGs when processed: their
paths and digests are "" (the lists keep one entry per frame). The first read draws the PNG
from the sealed redacted pixels (`engine.crypto.sealed_frames.unseal_frame`, that frame's
chunk only, authenticated) and, for the grid, the frame's regions numbered as processing
numbers them; it is stored beside the run's other files and its path and digest written into
the row, so every later read is the same checked file read as any other. The bytes are those
processing would have written (test_cine).

A mismatch is a `CryptoError`, which callers answer like any other tampered file (500
`restore_failed`, audited as a failure). Scans processed before digests existed have no
`frame_digests` at all: their frames are read unchecked until they are reprocessed or edited,
or until `manage.py frame_digests` binds the files as they are then (run it once, right after
the upgrade: it trusts what it finds).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import transaction
from django.db.models import Min
from django.http import HttpRequest

from audit.models import Action, Outcome
from audit.services import audit_record
from engine import errors
from engine.crypto import envelope as crypto
from engine.crypto.sealed_frames import unseal_frame
from engine.detection.pipeline import region_group_key
from engine.errors import CryptoError
from engine.pixels.grid import GridBox, draw_grid
from engine.pixels.rendering import plain_display
from engine.pixels.restoration import encode_image
from imaging.models import Region, Scan, ScanStatus
from imaging.vault.keys import open_data_key
from imaging.vault.storage import storage_delete, storage_open, storage_read, storage_write

logger = logging.getLogger(__name__)

KINDS = ("redacted", "grid")
# What frame_read needs of a scan row (for querysets that use .only()).
FIELDS = ("uid", "wrapped_key", "frame_paths", "frame_digests", "redacted_pixels_path")


def frame_digests(
    data_key: bytes, *, scan_ref: str, frames: Mapping[str, Sequence[bytes]]
) -> dict[str, list[str]]:
    """The digests to store beside `frames` ({"redacted": [png, ...], "grid": [...]})."""
    return {
        kind: [
            crypto.derivative_digest(data_key, data, scan_ref=scan_ref, kind=kind, frame=i)
            for i, data in enumerate(files)
        ]
        for kind, files in frames.items()
    }


def frame_read(scan: Any, kind: str, frame: int, *, data_key: bytes | None = None) -> bytes:
    """The stored `kind` PNG of `frame`, checked against the scan's digest for it.

    The caller has checked that `frame` is in range. CryptoError when the file is not the
    one written for this scan, kind and frame (or the scan's key does not open)."""
    path = ((scan.frame_paths or {}).get(kind) or [])[frame]
    if not path:
        return _frame_deferred(scan, kind, frame, data_key=data_key)
    data = storage_read(path)
    digests = scan.frame_digests or {}
    if not digests:
        return data  # Processed before digests were kept: nothing to check against.
    expected = digests.get(kind) or []
    if not 0 <= frame < len(expected):
        raise CryptoError()
    scan_ref = str(scan.uid)
    if data_key is None:
        data_key = open_data_key(scan)
    crypto.derivative_check(
        data_key, data, expected[frame], scan_ref=scan_ref, kind=kind, frame=frame
    )
    return data


def frame_grid_boxes(scan_id: int, frame: int) -> list[GridBox]:
    """The grid's boxes of `frame`: its regions in index order, each numbered as processing
    numbers them (one number per label and box, in order of first appearance in the scan).
    One row per group is read for the numbers, not every region of the cine."""
    regions = Region.objects.filter(scan_id=scan_id)
    groups = (
        regions.values("label", "x1", "y1", "x2", "y2")
        .annotate(first=Min("index"))
        .order_by("first")
        .values_list("label", "x1", "y1", "x2", "y2")
    )
    numbers = {
        region_group_key(label, coords): number
        for number, (label, *coords) in enumerate(groups, start=1)
    }
    rows = (
        regions.filter(frame=frame)
        .order_by("index")
        .values_list("label", "confidence", "x1", "y1", "x2", "y2")
    )
    return [
        GridBox(numbers[region_group_key(label, coords)], tuple(coords), label, confidence)
        for label, confidence, *coords in rows
    ]


def _frame_deferred(scan: Any, kind: str, frame: int, *, data_key: bytes | None) -> bytes:
    """Draw, store and bind the PNG of a deferred frame (see the module docstring)."""
    scan_ref = str(scan.uid)
    if data_key is None:
        data_key = open_data_key(scan)
    source = scan.redacted_pixels_path
    with storage_open(source) as handle:
        pixels = unseal_frame(
            handle, data_key, aad=crypto.redacted_pixels_aad(scan_ref=scan_ref), index=frame
        )
    display = plain_display(pixels)
    if display is None:  # Processing defers only frames shown as stored.
        raise CryptoError()
    image = draw_grid(display, frame_grid_boxes(scan.pk, frame)) if kind == "grid" else display
    data = encode_image(image, "png")
    digest = crypto.derivative_digest(data_key, data, scan_ref=scan_ref, kind=kind, frame=frame)
    path = storage_write(f"{source.rsplit('/', 1)[0]}/{kind}-{frame:04d}.png", data)
    with transaction.atomic():
        row = (
            Scan.objects.select_for_update()
            .only("id", "redacted_pixels_path", "frame_paths", "frame_digests")
            .get(pk=scan.pk)
        )
        paths, digests = dict(row.frame_paths or {}), dict(row.frame_digests or {})
        names, sums = list(paths.get(kind) or []), list(digests.get(kind) or [])
        # Kept only where the row still waits for this file: a reprocessed scan (another
        # run's pixels) or a concurrent request that stored it first keeps what it has.
        keep = (
            row.redacted_pixels_path == source
            and frame < min(len(names), len(sums))
            and not names[frame]
        )
        if keep:
            names[frame], sums[frame] = path, digest
            paths[kind], digests[kind] = names, sums
            row.frame_paths, row.frame_digests = paths, digests
            row.save(update_fields=["frame_paths", "frame_digests"])
    if not keep:
        storage_delete(path)
    return data


def frame_read_audited(
    scan: Any,
    kind: str,
    frame: int,
    *,
    actor: Any,
    request: HttpRequest | None,
    details: dict[str, Any],
) -> bytes:
    """`frame_read` for a user's view: a file that fails its check (or is gone) is audited as
    a failed scan_viewed and answered 500 `restore_failed`, as a tampered restore is."""
    try:
        return frame_read(scan, kind, frame)
    except (CryptoError, OSError):
        logger.exception("integrity failure on the %s frame %s of scan %s", kind, frame, scan.pk)
        audit_record(
            action=Action.SCAN_VIEWED,
            actor=actor,
            target=scan,
            outcome=Outcome.FAILURE,
            request=request,
            details={**details, "error": "restore_failed"},
        )
        raise errors.restore_failed(
            "The stored image failed its integrity check. The event has been logged."
        ) from None


def scan_frame_digests_backfill(*, scan_id: int) -> bool:
    """Bind a legacy scan's stored frames (no digests yet) as they are now; False when there
    is nothing to do (already bound, not completed, no frames). OSError or CryptoError when a
    file is missing or the scan's key does not open."""
    with transaction.atomic():
        scan = Scan.objects.select_for_update().get(pk=scan_id)
        paths = scan.frame_paths or {}
        if scan.frame_digests or scan.status != ScanStatus.COMPLETED or not paths:
            return False
        scan_ref = str(scan.uid)
        data_key = open_data_key(scan)
        files = {kind: [storage_read(path) for path in names] for kind, names in paths.items()}
        scan.frame_digests = frame_digests(data_key, scan_ref=scan_ref, frames=files)
        scan.save(update_fields=["frame_digests", "updated_at"])
    return True
