"""What the viewer asks of a processed scan: frames, windows, and windowed renderings of the
REDACTED pixels (restore's windowed rendering, of the restored pixels, is in services).

    frame_param(params) -> int                       # `?frame=N`, 0-based; invalid_frame
    window_request(params) -> WindowRequest          # `?window=` or `?wc=&ww=`; invalid_window
    open_redacted_dataset(scan, *, data_key=None) -> bytes   # the stored de-identified DICOM
    scan_header(scan) -> Dataset                     # the redacted dataset, pixels not read
    scan_redacted_pixels(scan) -> np.ndarray         # the redacted array (original dtype)
    scan_window(scan, header, request) -> Window | None
    redacted_render(scan, frame, window) -> (H, W, 3) uint8, regions filled
    scan_display_info(scan) -> dict                  # frames and window presets

The redacted array is sealed under the scan's data key because restore trusts it; it is not
secret (its regions are filled), so technicians see its renderings. Every region box is
filled again on the rendering, as the pipeline filled the display it stored: whatever the
window, an overlay plane or a LUT cannot bring a redacted area back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from engine import errors
from engine.crypto import envelope as crypto
from engine.dicom.io import read_dataset
from engine.dicom.ultrasound import ultrasound_regions
from engine.pixels import rendering
from engine.pixels.redaction import fill_regions
from imaging.models import Region, Scan, ScanFormat
from imaging.vault.keys import open_data_key
from imaging.vault.pixels import redacted_pixels_unseal
from imaging.vault.storage import storage_read


@dataclass(frozen=True)
class WindowRequest:
    window: str | None = None
    centre: float | None = None
    width: float | None = None

    @property
    def empty(self) -> bool:
        return self.window is None and self.centre is None and self.width is None


def frame_param(params: Mapping[str, Any], *, frames: int | None = None) -> int:
    """`?frame=N` (default 0). invalid_frame unless a whole number in range."""
    raw = params.get("frame")
    if raw in (None, ""):
        frame = 0
    else:
        try:
            frame = int(str(raw))
        except ValueError:
            raise errors.invalid_frame(None) from None
    if frame < 0 or (frames is not None and frame >= frames):
        top = max((frames or 1) - 1, 0)
        raise errors.invalid_frame(top)
    return frame


def _number(params: Mapping[str, Any], name: str) -> float | None:
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(str(raw))
    except ValueError:
        raise errors.invalid_window(f"{name} must be a number.") from None
    if not math.isfinite(value):
        raise errors.invalid_window(f"{name} must be a finite number.")
    return value


def window_request(params: Mapping[str, Any]) -> WindowRequest:
    """`?window=<preset|file|auto>` or `?wc=<centre>&ww=<width>`, parsed, not yet checked
    against the image (see `scan_window`)."""
    window = params.get("window")
    return WindowRequest(
        window=str(window) if window not in (None, "") else None,
        centre=_number(params, "wc"),
        width=_number(params, "ww"),
    )


def open_redacted_dataset(scan: Scan, *, data_key: bytes | None = None) -> bytes:
    """The scan's stored redacted dataset (for a DICOM scan, the de-identified file exports
    hand out), decrypted (`data_key`: the scan's, when the caller has it already).
    CryptoError when it fails its integrity check, OSError when it cannot be read."""
    blob = storage_read(scan.redacted_path)
    if data_key is None:
        data_key = open_data_key(scan)
    return crypto.decrypt_blob(
        data_key, blob, aad=crypto.redacted_dataset_aad(scan_ref=str(scan.uid))
    )


def scan_header(scan: Scan) -> Dataset:
    """The redacted dataset's header: it describes the decoded pixels (RGB for YBR sources).
    CryptoError if the stored dataset fails its integrity check."""
    # Overlay data sits before the pixel data, so the header keeps it.
    return read_dataset(open_redacted_dataset(scan), stop_before_pixels=True)


def scan_redacted_pixels(scan: Scan) -> np.ndarray:
    scan_ref = str(scan.uid)
    data_key = open_data_key(scan)
    sealed = storage_read(scan.redacted_pixels_path)
    return redacted_pixels_unseal(sealed, data_key=data_key, scan_ref=scan_ref)


def scan_window(
    scan: Scan, header: Dataset | None, request: WindowRequest
) -> rendering.Window | None:
    """The window to render with; None for the default. invalid_window for a non-DICOM scan
    or a value this image cannot take."""
    if request.empty:
        return None
    if scan.format != ScanFormat.DICOM or header is None:
        raise errors.invalid_window("Windows apply to DICOM images only.")
    return rendering.window_choice(
        header, window=request.window, centre=request.centre, width=request.width
    )


def _region_boxes(scan: Scan, frame: int) -> list[tuple[int, int, int, int]]:
    return [
        (r.x1, r.y1, r.x2, r.y2)
        for r in Region.objects.filter(scan=scan, frame=frame).only("x1", "y1", "x2", "y2")
    ]


def redacted_render(
    scan: Scan, frame: int, window: rendering.Window | None, *, header: Dataset | None = None
) -> np.ndarray:
    """The redacted frame rendered with `window`, every region of the frame filled black."""
    header = header if header is not None else scan_header(scan)
    pixels = scan_redacted_pixels(scan)
    image = rendering.render_frame_uint8(header, pixels[frame], index=frame, window=window)
    return fill_regions(image, _region_boxes(scan, frame))


def scan_display_info(scan: Scan, header: Dataset | None) -> dict[str, Any]:
    """Frames and windows for the viewer; header is None for JPEG/PNG scans."""
    info: dict[str, Any] = {
        "id": scan.pk,
        "format": scan.format,
        "frames": scan.frames,
        "width": scan.width,
        "height": scan.height,
        "modality": scan.modality,
        "windowable": False,
        "window_presets": [],
        "file_windows": [],
        "default_window": None,
        "overlays": 0,
        "ultrasound_regions": [],
    }
    if header is None:
        return info
    options = rendering.window_options(header)
    info.update(
        modality=scan.modality or str(header.get("Modality", "")),
        windowable=options["windowable"],
        window_presets=options["presets"],
        file_windows=options["file"],
        default_window=options["default"],
        overlays=len(rendering.overlay_groups(header)),
        # Calipers on an ultrasound measure in its regions' physical units.
        ultrasound_regions=[r.as_dict() for r in ultrasound_regions(header)],
    )
    return info
