"""Technician review of a processed scan: add a missed region, remove a false one, confirm.

Every edit rebuilds the redacted outputs from the ORIGINAL pixels and the scan's region set
after the change (fill every box, redraw the grid), exactly as the pipeline fills them. So:
- an added region's crop comes from the original, is sealed like a detected one, and its box
  is filled solid; a restore (redacted + every crop) still gives the upload back exactly;
- a removed region's pixels reappear in the redacted image wherever no other region covers
  them, and nowhere else.

Removal is two steps, because it shows pixels: a technician (who may not decrypt) only asks
(`region_removal_request`: the region stays filled everywhere); a doctor approves
(`region_removal_approve`, the rebuild above) or rejects (`region_removal_reject`). So
"delete a region, look at the redacted image, add the box back" reveals nothing.

Ordering, as in processing: the new files are written under fresh names inside the
transaction that changes the regions (a failure deletes them and changes nothing); the
previous files are deleted only after commit. The scan row is locked for the whole edit, so
two reviewers editing at once are serialised, never interleaved.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.http import HttpRequest
from django.utils import timezone

from audit.models import Action
from audit.services import audit_record
from engine import errors
from engine.detection import pipeline
from engine.detection.groups import group_numbers
from engine.errors import CryptoError, EngineError, ImagingError
from engine.intake.validation import validate_upload
from engine.pixels.grid import GridBox, draw_grid
from imaging.jobs.processing import outputs_write, scan_files, scan_set_deidentified
from imaging.models import Fingerprint, Region, RegionSource, Scan, ScanStatus
from imaging.vault.keys import open_data_key, open_original
from imaging.vault.pixels import pixels_digest
from imaging.vault.storage import storage_delete

MANUAL_LABEL = "phi_text"
LABEL_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class _Rebuilt:
    """The redacted arrays and grid frames for one set of regions."""

    redacted_pixels: np.ndarray
    redacted_display: np.ndarray
    grid_display: list[np.ndarray]
    regions: list[Region]
    needs_review: bool


def _require_completed(scan: Scan) -> None:
    if scan.status != ScanStatus.COMPLETED:
        raise errors.scan_not_ready()


def _check_box(scan: Scan, box: Sequence[int], frame: int) -> tuple[int, int, int, int]:
    if not 0 <= frame < scan.frames:
        raise errors.invalid_frame(scan.frames - 1)
    x1, y1, x2, y2 = (int(v) for v in box)
    if not (0 <= x1 < x2 <= scan.width and 0 <= y1 < y2 <= scan.height):
        raise errors.box_out_of_bounds(scan.width, scan.height)
    return x1, y1, x2, y2


def _open_original(scan: Scan) -> tuple[bytes, Any]:
    """The scan's data key and its decoded upload, checked against the stored digest."""
    try:
        data_key = open_data_key(scan)
        plaintext = open_original(scan, data_key=data_key)
        image = validate_upload(
            name=scan.original_filename,
            data=plaintext,
            max_bytes=max(len(plaintext), settings.UPLOAD_MAX_BYTES),
            max_pixels=max(scan.width * scan.height * scan.frames, settings.UPLOAD_MAX_PIXELS),
        )
    except (CryptoError, ImagingError, OSError):
        raise _edit_failed() from None
    if pixels_digest(image.pixels) != scan.pixels_sha256:
        raise _edit_failed()
    return data_key, image


def _edit_failed() -> EngineError:
    return errors.review_failed()


def _boxes(regions: Sequence[Region]) -> list[pipeline.Box]:
    return [pipeline.Box(r.frame, r.label, r.confidence, r.x1, r.y1, r.x2, r.y2) for r in regions]


def _rebuild(image: Any, regions: Sequence[Region], *, needs_review: bool) -> _Rebuilt:
    """Redacted pixels, display frames and grid frames for exactly `regions`."""
    boxes = _boxes(regions)
    redacted_pixels = pipeline.fill_frames(image.pixels, boxes)
    redacted_display = pipeline.fill_frames(image.display, boxes)
    # One number per group of identical boxes, as the pipeline draws them.
    numbers = group_numbers(regions)
    grid = [
        draw_grid(
            redacted_display[f],
            [
                GridBox(numbers[r.index], r.box, r.label, r.confidence)
                for r in regions
                if r.frame == f
            ],
        )
        for f in range(redacted_display.shape[0])
    ]
    return _Rebuilt(redacted_pixels, redacted_display, grid, list(regions), needs_review)


def _metrics(scan: Scan, image: Any, rebuilt: _Rebuilt, regions: Sequence[Region]) -> dict:
    metrics = dict(scan.metrics or {})
    metrics.update(pipeline.quality_metrics(image.display, rebuilt.redacted_display))
    metrics["regions"] = len(regions)
    counts: dict[str, int] = {}
    for region in regions:
        counts[region.label] = counts.get(region.label, 0) + 1
    metrics["classes"] = counts
    metrics["region_entropy"] = [
        {"index": r.index, "pixels": r.pixel_entropy, "ciphertext": r.ciphertext_entropy}
        for r in regions
    ]
    metrics["manual_regions"] = sum(1 for r in regions if r.source == RegionSource.MANUAL)
    return metrics


def _apply(
    *, scan: Scan, image: Any, data_key: bytes, regions: list[Region], written: list[str]
) -> None:
    """Write the rebuilt files, point the scan at them, drop the old ones after commit."""
    rebuilt = _rebuild(image, regions, needs_review=scan.needs_review)
    previous = scan_files(scan)
    paths = outputs_write(
        scan=scan,
        image=image,
        frames=(
            pipeline.FrameOutput(
                index, rebuilt.redacted_pixels[index], rebuilt.redacted_display[index], grid
            )
            for index, grid in enumerate(rebuilt.grid_display)
        ),
        needs_review=rebuilt.needs_review,
        regions=len(rebuilt.regions),
        data_key=data_key,
        written=written,
    )
    prints = pipeline.fingerprint(rebuilt.redacted_display[0])
    Fingerprint.objects.update_or_create(
        scan=scan,
        defaults={
            "average_hash": prints.average_hash,
            "perceptual_hash": prints.perceptual_hash,
            "color_histogram": prints.color_histogram,
        },
    )
    scan.redacted_path = paths["redacted_path"]
    scan.redacted_pixels_path = paths["redacted_pixels_path"]
    scan.grid_path = paths["grid_path"]
    scan.frame_paths = paths["frame_paths"]
    scan.frame_digests = paths["frame_digests"]
    scan.metrics = _metrics(scan, image, rebuilt, regions)
    # An edit after confirmation re-opens the review: what was confirmed is not this.
    scan.reviewed_at = None
    scan.reviewed_by = None
    deid_fields = scan_set_deidentified(scan, paths)
    scan.save(
        update_fields=[
            *deid_fields,
            "redacted_path",
            "redacted_pixels_path",
            "grid_path",
            "frame_paths",
            "frame_digests",
            "metrics",
            "reviewed_at",
            "reviewed_by",
            "updated_at",
        ]
    )
    stale = [p for p in previous if p not in set(written)]
    transaction.on_commit(partial(storage_delete, *stale))


def _locked(scan_id: int) -> Scan:
    return Scan.objects.select_for_update().get(pk=scan_id)


def region_add(
    *,
    scan: Scan,
    box: Sequence[int],
    frame: int = 0,
    label: str = MANUAL_LABEL,
    actor: Any,
    request: HttpRequest | None = None,
) -> Region:
    """Seal the original pixels under `box` as a new manual region and redact them.

    `box` is (x1, y1, x2, y2) in original pixels, x2/y2 exclusive. Caller has checked that
    `actor` may see `scan`.
    """
    if not LABEL_PATTERN.match(label or ""):
        raise errors.invalid_label()
    written: list[str] = []
    try:
        with transaction.atomic():
            scan = _locked(scan.pk)
            _require_completed(scan)
            coords = _check_box(scan, box, frame)
            data_key, image = _open_original(scan)
            last = scan.regions.aggregate(last=Max("index"))["last"]
            index = 0 if last is None else last + 1
            sealed = pipeline.seal_region(
                pixels=image.pixels,
                box=pipeline.Box(frame, label, 1.0, *coords),
                index=index,
                data_key=data_key,
                scan_ref=str(scan.uid),
            )
            region = Region.objects.create(
                scan=scan,
                index=index,
                frame=frame,
                label=label,
                confidence=1.0,  # placed by a person: certain
                source=RegionSource.MANUAL,
                x1=coords[0],
                y1=coords[1],
                x2=coords[2],
                y2=coords[3],
                ciphertext=sealed.ciphertext,
                dtype=sealed.dtype,
                channels=sealed.channels,
                pixel_entropy=sealed.pixel_entropy,
                ciphertext_entropy=sealed.ciphertext_entropy,
            )
            regions = list(scan.regions.order_by("index"))
            _apply(scan=scan, image=image, data_key=data_key, regions=regions, written=written)
            audit_record(
                action=Action.REGIONS_EDITED,
                actor=actor,
                target=scan,
                request=request,
                details={
                    "change": "added",
                    "region": region.pk,
                    "index": index,
                    "frame": frame,
                    "box": list(coords),
                    "label": label,
                },
            )
    except BaseException:
        storage_delete(*written)
        raise
    return region


def _region_details(region: Region) -> dict[str, Any]:
    return {
        "region": region.pk,
        "index": region.index,
        "frame": region.frame,
        "box": list(region.box),
        "label": region.label,
        "source": region.source,
    }


def _check_region_opens(scan: Scan, region: Region, data_key: bytes) -> None:
    # The region must still open: a tampered one is an integrity failure to report, not
    # something to quietly delete (or to ask a doctor to delete).
    try:
        pipeline.open_region(
            ciphertext=bytes(region.ciphertext),
            data_key=data_key,
            scan_ref=str(scan.uid),
            index=region.index,
            frame=region.frame,
            box=region.box,
        )
    except CryptoError:
        raise _edit_failed() from None


def _removal_not_pending() -> EngineError:
    return errors.no_removal_pending()


def region_removal_request(
    *, region: Region, actor: Any, request: HttpRequest | None = None
) -> Region:
    """A technician asks for a false region to be removed; a doctor decides.

    Nothing is shown yet: the region stays filled in every stored image, so a role that may
    not decrypt never sees the pixels it hides (delete, look, add the box back would
    otherwise read them). Audited as region_removal_requested, flagged as a potential
    disclosure, since approving it shows those pixels to every technician."""
    with transaction.atomic():
        scan = _locked(region.scan_id)
        _require_completed(scan)
        region = Region.objects.get(pk=region.pk, scan=scan)
        if region.removal_pending:
            raise errors.removal_already_requested()
        try:
            data_key = open_data_key(scan)
        except CryptoError:
            raise _edit_failed() from None
        _check_region_opens(scan, region, data_key)
        region.removal_requested_at = timezone.now()
        region.removal_requested_by = actor
        region.save(update_fields=["removal_requested_at", "removal_requested_by"])
        audit_record(
            action=Action.REGION_REMOVAL_REQUESTED,
            actor=actor,
            target=scan,
            request=request,
            details={**_region_details(region), "potential_disclosure": True},
        )
    return region


def region_removal_reject(
    *, region: Region, actor: Any, request: HttpRequest | None = None
) -> Region:
    """A doctor keeps the region: the request is dropped, nothing else changes."""
    with transaction.atomic():
        scan = _locked(region.scan_id)
        region = Region.objects.select_related("removal_requested_by").get(pk=region.pk, scan=scan)
        if not region.removal_pending:
            raise _removal_not_pending()
        requested_by = region.removal_requested_by
        region.removal_requested_at = None
        region.removal_requested_by = None
        region.save(update_fields=["removal_requested_at", "removal_requested_by"])
        audit_record(
            action=Action.REGION_REMOVAL_REJECTED,
            actor=actor,
            target=scan,
            request=request,
            details={
                **_region_details(region),
                "requested_by": requested_by.username if requested_by else "",
            },
        )
    return region


def region_removal_approve(
    *, region: Region, actor: Any, request: HttpRequest | None = None
) -> Scan:
    """A doctor (who may decrypt it anyway) approves a requested removal: the region is
    deleted and its pixels show again wherever no other region covers them. Audited as
    region_removal_approved, a potential disclosure: technicians now see those pixels."""
    written: list[str] = []
    try:
        with transaction.atomic():
            scan = _locked(region.scan_id)
            _require_completed(scan)
            region = Region.objects.select_related("removal_requested_by").get(
                pk=region.pk, scan=scan
            )
            if not region.removal_pending:
                raise _removal_not_pending()
            data_key, image = _open_original(scan)
            _check_region_opens(scan, region, data_key)
            requested_by = region.removal_requested_by
            details = {
                **_region_details(region),
                "requested_by": requested_by.username if requested_by else "",
                "potential_disclosure": True,
            }
            region.delete()
            regions = list(scan.regions.order_by("index"))
            _apply(scan=scan, image=image, data_key=data_key, regions=regions, written=written)
            audit_record(
                action=Action.REGION_REMOVAL_APPROVED,
                actor=actor,
                target=scan,
                request=request,
                details=details,
            )
    except BaseException:
        storage_delete(*written)
        raise
    return scan


@transaction.atomic
def scan_confirm_review(*, scan: Scan, actor: Any, request: HttpRequest | None = None) -> Scan:
    """The technician confirms the regions as they are now."""
    scan = _locked(scan.pk)
    _require_completed(scan)
    scan.reviewed_at = timezone.now()
    scan.reviewed_by = actor
    scan.save(update_fields=["reviewed_at", "reviewed_by", "updated_at"])
    audit_record(
        action=Action.REGIONS_EDITED,
        actor=actor,
        target=scan,
        request=request,
        details={"change": "confirmed", "regions": scan.regions.count()},
    )
    return scan
