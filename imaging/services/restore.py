"""Restore and region decryption: a doctor gets the exact uploaded pixels back (rendered or
as the original DICOM) or one region's original pixels. Audited whatever happens: refusals
before the work, integrity failures and successes after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from django.conf import settings
from django.http import HttpRequest

from audit.models import Action, Outcome
from audit.services import audit_record
from engine import errors
from engine.detection import pipeline
from engine.errors import CryptoError, EngineError, ImagingError
from engine.pixels.rendering import render_frame_uint8
from engine.pixels.restoration import apply_clahe, encode_image
from imaging.models import Region, Scan, ScanFormat, ScanStatus
from imaging.vault.keys import open_data_key, open_original
from imaging.vault.pixels import scan_restore_pixels
from imaging.vault.redacted import WindowRequest, scan_header, scan_window

logger = logging.getLogger(__name__)


RESTORE_FORMATS = ("png", "jpeg", "dicom")


def restore_failed() -> EngineError:
    # One answer for every integrity failure (tampered nonce, ciphertext, tag, context or
    # wrapped key; lost key): it tells a client nothing about which check failed.
    return errors.restore_failed(
        "The stored image failed its integrity check and cannot be restored. "
        "The event has been logged."
    )


@dataclass(frozen=True)
class Rendered:
    content: bytes
    content_type: str
    filename: str


def _audited(
    *,
    action: Action,
    actor: Any,
    target: Any,
    request: HttpRequest | None,
    details: dict[str, Any],
    work: Callable[[], Rendered],
) -> Rendered:
    try:
        rendered = work()
    except (CryptoError, ImagingError, ValueError, OSError):
        logger.exception("integrity failure on %s %s", action, getattr(target, "pk", "?"))
        audit_record(
            action=action,
            actor=actor,
            target=target,
            outcome=Outcome.FAILURE,
            request=request,
            details={**details, "error": "restore_failed"},
        )
        raise restore_failed() from None
    audit_record(action=action, actor=actor, target=target, request=request, details=details)
    return rendered


def _refusals_audited(
    check: Callable[[], None],
    *,
    action: Action,
    actor: Any,
    target: Any,
    request: HttpRequest | None,
    details: dict[str, Any],
) -> None:
    """Run the pre-checks; a refusal (bad format, not ready) is audited before it is raised."""
    try:
        check()
    except EngineError as refusal:
        audit_record(
            action=action,
            actor=actor,
            target=target,
            outcome=Outcome.REFUSED,
            request=request,
            details={**details, "error": refusal.code},
        )
        raise


def _require_completed(scan: Scan) -> None:
    if scan.status != ScanStatus.COMPLETED:
        raise errors.scan_not_ready()


def _frame_index(scan: Scan, frame: int) -> int:
    if not 0 <= frame < scan.frames:
        raise errors.invalid_frame(scan.frames - 1)
    return frame


def scan_restore(
    *,
    scan: Scan,
    actor: Any,
    fmt: str = "png",
    enhance: bool = False,
    frame: int = 0,
    request: HttpRequest | None = None,
    window: Any = None,
    reason: str = "",
) -> Rendered:
    """Decrypt every region, paste them back and render. Audited whatever happens.

    `reason` (why the original is needed) goes into the audit details; with
    MEDIMG_RESTORE_REASON_REQUIRED a restore without one is refused (reason_required).

    `window` (an `imaging.vault.redacted.WindowRequest`) windows a DICOM rendering of the RESTORED
    pixels; invalid_window for JPEG/PNG, format=dicom, or a value the image cannot take."""
    window = window if window is not None else WindowRequest()
    details: dict[str, Any] = {"format": fmt, "enhance": enhance, "frame": frame}
    if not window.empty:
        details["window"] = {"name": window.window, "wc": window.centre, "ww": window.width}
    reason = reason.strip()
    if reason:
        details["reason"] = reason

    def check() -> None:
        if settings.MEDIMG_RESTORE_REASON_REQUIRED and not reason:
            raise errors.reason_required()
        if fmt not in RESTORE_FORMATS:
            raise errors.invalid_format("format must be png, jpeg or dicom.")
        if fmt == "dicom" and scan.format != ScanFormat.DICOM:
            raise errors.invalid_format("format=dicom is only for DICOM uploads.")
        if fmt == "dicom" and enhance:
            raise errors.invalid_format("enhance applies to png and jpeg only.")
        _require_completed(scan)
        _frame_index(scan, frame)
        if not window.empty and (scan.format != ScanFormat.DICOM or fmt == "dicom"):
            raise errors.invalid_window("Windows apply to png or jpeg renderings of DICOM images.")

    _refusals_audited(
        check,
        action=Action.SCAN_RESTORED,
        actor=actor,
        target=scan,
        request=request,
        details=details,
    )

    def work() -> Rendered:
        pixels = scan_restore_pixels(scan=scan)
        stem = f"scan-{scan.pk}-restored"
        if fmt == "dicom":
            original = open_original(scan)
            return Rendered(original, "application/dicom", f"{stem}.dcm")
        image = _display_frame(scan, pixels, frame, window=window, actor=actor, request=request)
        if enhance:
            image = apply_clahe(image)
        suffix = "jpg" if fmt == "jpeg" else "png"
        return Rendered(encode_image(image, fmt), f"image/{fmt}", f"{stem}.{suffix}")

    return _audited(
        action=Action.SCAN_RESTORED,
        actor=actor,
        target=scan,
        request=request,
        details=details,
        work=work,
    )


def _display_frame(
    scan: Scan, pixels: np.ndarray, frame: int, *, window: Any, actor: Any, request: Any
) -> np.ndarray:
    """One frame as an image a PNG can hold exactly (JPEG/PNG) or a rendering (DICOM)."""
    if scan.format != ScanFormat.DICOM:
        return pixels[frame]
    header = scan_header(scan)
    try:
        choice = scan_window(scan, header, window)
    except EngineError as refusal:
        audit_record(
            action=Action.SCAN_RESTORED,
            actor=actor,
            target=scan,
            outcome=Outcome.REFUSED,
            request=request,
            details={"frame": frame, "error": refusal.code},
        )
        raise
    return render_frame_uint8(header, pixels[frame], index=frame, window=choice)


def _dicom_render(scan: Scan, pixels: np.ndarray) -> np.ndarray:
    """A DICOM crop rendered with the image's default window (no overlays: a crop does not
    sit where the overlay plane does)."""
    return render_frame_uint8(scan_header(scan), pixels, overlays=False)


def region_decrypt(*, region: Region, actor: Any, request: HttpRequest | None = None) -> Rendered:
    """One region's original pixels as PNG. Audited whatever happens."""
    scan = region.scan
    details = {"scan": scan.pk, "index": region.index}
    _refusals_audited(
        partial(_require_completed, scan),
        action=Action.REGION_DECRYPTED,
        actor=actor,
        target=region,
        request=request,
        details=details,
    )

    def work() -> Rendered:
        scan_ref = str(scan.uid)
        data_key = open_data_key(scan)
        crop = pipeline.open_region(
            ciphertext=bytes(region.ciphertext),
            data_key=data_key,
            scan_ref=scan_ref,
            index=region.index,
            frame=region.frame,
            box=region.box,
        )
        # JPEG/PNG crops are their exact pixels; DICOM crops are rendered like the image.
        image = _dicom_render(scan, crop) if scan.format == ScanFormat.DICOM else crop
        return Rendered(
            encode_image(image, "png"),
            "image/png",
            f"scan-{scan.pk}-region-{region.index}.png",
        )

    return _audited(
        action=Action.REGION_DECRYPTED,
        actor=actor,
        target=region,
        request=request,
        details=details,
        work=work,
    )


def access_refused_record(
    *, action: Action, actor: Any, target_type: str, target_id: Any, request: HttpRequest | None
) -> None:
    """A refused restore or region decryption is audited under its own action too."""
    audit_record(
        action=action,
        actor=actor,
        target_type=target_type,
        target_id=str(target_id),
        outcome=Outcome.REFUSED,
        request=request,
    )
