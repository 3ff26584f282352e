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
from engine.detection.pipeline import region_group_key
from engine.errors import CryptoError, EngineError, ImagingError
from engine.intake.validation import validate_upload
from engine.pixels.grid import GridBox, draw_grid
from imaging.jobs.processing import outputs_write, scan_files, scan_set_deidentified
from imaging.models import (
    Fingerprint,
    LeftoverDetection,
    Region,
    RegionSource,
    Scan,
    ScanFormat,
    ScanStatus,
)
from imaging.vault.keys import open_data_key, open_original
from imaging.vault.pixels import pixels_digest
from imaging.vault.storage import storage_delete

MANUAL_LABEL = "phi_text"
DISMISS_REASON_MIN = 5
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


def _rebuild(
    image: Any,
    regions: Sequence[Region],
    *,
    needs_review: bool,
    leftovers: Sequence[LeftoverDetection] = (),
) -> _Rebuilt:
    """Redacted pixels, display frames and grid frames for exactly `regions`; the leftover
    detections no region covers are drawn dashed on the grid."""
    boxes = _boxes(regions)
    redacted_pixels = pipeline.fill_frames(image.pixels, boxes)
    redacted_display = pipeline.fill_frames(image.display, boxes)
    # One number per group of identical boxes, as the pipeline draws them.
    numbers = group_numbers(regions)
    open_leftovers = [x for x in leftovers if not leftover_covered(x, regions)]
    grid = [
        draw_grid(
            redacted_display[f],
            [
                GridBox(
                    numbers[r.index],
                    r.box,
                    r.label,
                    r.confidence,
                    manual=r.source == RegionSource.MANUAL,
                )
                for r in regions
                if r.frame == f
            ]
            + [
                GridBox(0, x.box, x.label, x.confidence, leftover=True)
                for x in open_leftovers
                if x.frame == f
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
    rebuilt = _rebuild(
        image, regions, needs_review=scan.needs_review, leftovers=list(scan.leftovers.all())
    )
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
    frames: Sequence[int] | None = None,
) -> Region:
    """Seal the original pixels under `box` as a new manual region and redact them; with
    `frames`, one region per listed frame (a cine's overlay), all in one rebuild. Returns the
    first region added.

    `box` is (x1, y1, x2, y2) in original pixels, x2/y2 exclusive. Caller has checked that
    `actor` may see `scan`. Audited as regions_edited (change added), one event per region.
    """
    if not LABEL_PATTERN.match(label or ""):
        raise errors.invalid_label()
    on = sorted(set(frames)) if frames else [frame]
    written: list[str] = []
    try:
        with transaction.atomic():
            scan = _locked(scan.pk)
            _require_completed(scan)
            coords = [_check_box(scan, box, f) for f in on][0]
            data_key, image = _open_original(scan)
            last = scan.regions.aggregate(last=Max("index"))["last"]
            added = []
            for offset, f in enumerate(on):
                index = (0 if last is None else last + 1) + offset
                sealed = pipeline.seal_region(
                    pixels=image.pixels,
                    box=pipeline.Box(f, label, 1.0, *coords),
                    index=index,
                    data_key=data_key,
                    scan_ref=str(scan.uid),
                )
                added.append(
                    Region.objects.create(
                        scan=scan,
                        index=index,
                        frame=f,
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
                )
            regions = list(scan.regions.order_by("index"))
            _apply(scan=scan, image=image, data_key=data_key, regions=regions, written=written)
            for region in added:
                audit_record(
                    action=Action.REGIONS_EDITED,
                    actor=actor,
                    target=scan,
                    request=request,
                    details={
                        "change": "added",
                        "region": region.pk,
                        "index": region.index,
                        "frame": region.frame,
                        "box": list(coords),
                        "label": label,
                    },
                )
    except BaseException:
        storage_delete(*written)
        raise
    return added[0]


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


def _group(scan: Scan, region: Region, *, group: bool) -> list[Region]:
    """`region`, or with `group` every region of the scan with its label and box (the same
    overlay on every frame of a cine: one row on the page, one action)."""
    if not group:
        return [region]
    key = region_group_key(region.label, region.box)
    return [
        r
        for r in scan.regions.select_related("removal_requested_by").order_by("index")
        if region_group_key(r.label, r.box) == key
    ]


def region_removal_request(
    *, region: Region, actor: Any, request: HttpRequest | None = None, group: bool = False
) -> Region:
    """A technician asks for a false region to be removed; a doctor decides.

    Nothing is shown yet: the region stays filled in every stored image, so a role that may
    not decrypt never sees the pixels it hides (delete, look, add the box back would
    otherwise read them). Audited as region_removal_requested, flagged as a potential
    disclosure, since approving it shows those pixels to every technician. With `group`,
    every region of its group not already asked for (one audit event per region). Until the
    technician confirms the review the request can be withdrawn (`region_removal_withdraw`)."""
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
        now = timezone.now()
        for member in _group(scan, region, group=group):
            if member.removal_pending:
                continue
            _check_region_opens(scan, member, data_key)
            member.removal_requested_at = now
            member.removal_requested_by = actor
            member.save(update_fields=["removal_requested_at", "removal_requested_by"])
            audit_record(
                action=Action.REGION_REMOVAL_REQUESTED,
                actor=actor,
                target=scan,
                request=request,
                details={**_region_details(member), "potential_disclosure": True},
            )
            if member.pk == region.pk:
                region = member
        if scan.reviewed_at is not None:
            # A new request re-opens the review: it may be undone until confirmed again.
            scan.reviewed_at = None
            scan.reviewed_by = None
            scan.save(update_fields=["reviewed_at", "reviewed_by", "updated_at"])
    return region


def _drop_requests(
    scan: Scan,
    region: Region,
    *,
    group: bool,
    action: Action,
    actor: Any,
    request: HttpRequest | None,
    change: dict[str, Any],
) -> Region:
    """Drop the pending removal request of `region` (with `group`, of every region of its
    group): the regions stay filled as they always were. One audit event per region."""
    for member in _group(scan, region, group=group):
        if not member.removal_pending:
            continue
        requested_by = member.removal_requested_by
        member.removal_requested_at = None
        member.removal_requested_by = None
        member.save(update_fields=["removal_requested_at", "removal_requested_by"])
        audit_record(
            action=action,
            actor=actor,
            target=scan,
            request=request,
            details={
                **_region_details(member),
                **change,
                "requested_by": requested_by.username if requested_by else "",
            },
        )
        if member.pk == region.pk:
            region = member
    return region


def region_removal_withdraw(
    *, region: Region, actor: Any, request: HttpRequest | None = None, group: bool = False
) -> Region:
    """Undo a removal request before the review is confirmed: the region simply stays (it
    was never unfilled). After confirmation the request is the doctor's to decide (409
    review_confirmed). With `group`, every pending region of its group. Audited as
    regions_edited (change removal_withdrawn), one event per region."""
    with transaction.atomic():
        scan = _locked(region.scan_id)
        _require_completed(scan)
        region = Region.objects.get(pk=region.pk, scan=scan)
        if not region.removal_pending:
            raise _removal_not_pending()
        if scan.reviewed_at is not None:
            raise errors.review_confirmed()
        return _drop_requests(
            scan, region, group=group, action=Action.REGIONS_EDITED, actor=actor,
            request=request, change={"change": "removal_withdrawn"},
        )  # fmt: skip


def region_removal_reject(
    *, region: Region, actor: Any, request: HttpRequest | None = None, group: bool = False
) -> Region:
    """A doctor keeps the region (with `group`, every pending region of its group): the
    request is dropped, nothing else changes."""
    with transaction.atomic():
        scan = _locked(region.scan_id)
        region = Region.objects.select_related("removal_requested_by").get(pk=region.pk, scan=scan)
        if not region.removal_pending:
            raise _removal_not_pending()
        return _drop_requests(
            scan, region, group=group, action=Action.REGION_REMOVAL_REJECTED, actor=actor,
            request=request, change={},
        )  # fmt: skip


def region_removal_approve(
    *, region: Region, actor: Any, request: HttpRequest | None = None, group: bool = False
) -> Scan:
    """A doctor (who may decrypt it anyway) approves a requested removal: the region (with
    `group`, every pending region of its group) is deleted and its pixels show again wherever
    no other region covers them; one rebuild. Audited as region_removal_approved per region,
    a potential disclosure: technicians now see those pixels."""
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
            removed = [m for m in _group(scan, region, group=group) if m.removal_pending]
            events = []
            for member in removed:
                _check_region_opens(scan, member, data_key)
                requested_by = member.removal_requested_by
                events.append(
                    {
                        **_region_details(member),
                        "requested_by": requested_by.username if requested_by else "",
                        "potential_disclosure": True,
                    }
                )
            Region.objects.filter(pk__in=[m.pk for m in removed]).delete()
            regions = list(scan.regions.order_by("index"))
            _apply(scan=scan, image=image, data_key=data_key, regions=regions, written=written)
            for details in events:
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


def leftover_covered(leftover: LeftoverDetection, regions: Sequence[Region]) -> bool:
    """Whether a region on the leftover's frame covers its whole box."""
    return any(
        r.frame == leftover.frame
        and r.x1 <= leftover.x1
        and r.y1 <= leftover.y1
        and r.x2 >= leftover.x2
        and r.y2 >= leftover.y2
        for r in regions
    )


def leftovers_unresolved(scan: Scan) -> list[LeftoverDetection]:
    """The scan's leftover detections neither dismissed nor covered by a region."""
    pending = list(scan.leftovers.filter(dismissed_at__isnull=True))
    if not pending:
        return []
    regions = list(scan.regions.all())
    return [leftover for leftover in pending if not leftover_covered(leftover, regions)]


def leftover_dismiss(
    *,
    leftover: LeftoverDetection,
    reason: str,
    actor: Any,
    request: HttpRequest | None = None,
    group: bool = False,
) -> LeftoverDetection:
    """A technician judges a leftover detection not to be identifying text, and says why;
    with `group`, every open one with its label and box (the same text on each frame of a
    cine). Audited as regions_edited (change leftover_dismissed, with the reason), one event
    per detection."""
    reason = " ".join((reason or "").split())
    if len(reason) < DISMISS_REASON_MIN:
        raise errors.dismiss_reason_required(DISMISS_REASON_MIN)
    with transaction.atomic():
        scan = _locked(leftover.scan_id)
        _require_completed(scan)
        leftover = LeftoverDetection.objects.get(pk=leftover.pk, scan=scan)
        regions = list(scan.regions.all())
        if leftover.dismissed or leftover_covered(leftover, regions):
            raise errors.leftover_resolved()
        members = [leftover]
        if group:
            members = [
                x
                for x in scan.leftovers.filter(
                    dismissed_at__isnull=True,
                    label=leftover.label,
                    x1=leftover.x1,
                    y1=leftover.y1,
                    x2=leftover.x2,
                    y2=leftover.y2,
                )
                if not leftover_covered(x, regions)
            ]
        now = timezone.now()
        for member in members:
            member.dismissed_at = now
            member.dismissed_by = actor
            member.dismiss_reason = reason[:500]
            member.save(update_fields=["dismissed_at", "dismissed_by", "dismiss_reason"])
            audit_record(
                action=Action.REGIONS_EDITED,
                actor=actor,
                target=scan,
                request=request,
                details={
                    "change": "leftover_dismissed",
                    "leftover": member.pk,
                    "frame": member.frame,
                    "box": list(member.box),
                    "label": member.label,
                    "reason": member.dismiss_reason,
                },
            )
            if member.pk == leftover.pk:
                leftover = member
    return leftover


def scan_confirm_review(*, scan: Scan, actor: Any, request: HttpRequest | None = None) -> Scan:
    """The technician confirms the regions as they are now. Refused (409
    leftovers_unresolved) while a leftover detection of the verification pass is neither
    covered by a region nor dismissed; once confirmed, "needs review" clears.

    A DICOM scan that needed review carries a de-identified copy that says Burned In
    Annotation YES without Clean Pixel Data (113101), as it should while text might be left.
    Confirming is the person's word that every frame is clean, so the copy is written again
    (from the original and the confirmed regions, as an edit would) with NO and 113101; what
    is exported or forwarded from now on says what was done."""
    written: list[str] = []
    try:
        with transaction.atomic():
            scan = _locked(scan.pk)
            _require_completed(scan)
            unresolved = leftovers_unresolved(scan)
            if unresolved:
                raise errors.leftovers_unresolved(len(unresolved))
            cleared = scan.needs_review
            scan.needs_review = False
            rewritten = cleared and scan.format == ScanFormat.DICOM
            if rewritten:
                data_key, image = _open_original(scan)
                regions = list(scan.regions.order_by("index"))
                _apply(scan=scan, image=image, data_key=data_key, regions=regions, written=written)
            scan.reviewed_at = timezone.now()
            scan.reviewed_by = actor
            scan.save(update_fields=["reviewed_at", "reviewed_by", "needs_review", "updated_at"])
            audit_record(
                action=Action.REGIONS_EDITED,
                actor=actor,
                target=scan,
                request=request,
                details={
                    "change": "confirmed",
                    "regions": scan.regions.count(),
                    "pending_removals": scan.regions.filter(
                        removal_requested_at__isnull=False
                    ).count(),
                    "needs_review_cleared": cleared,
                    "deidentified_copy_rewritten": rewritten,
                },
            )
    except BaseException:
        storage_delete(*written)
        raise
    return scan
