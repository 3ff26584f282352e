"""The processing pipeline on arrays and bytes: no ORM, no storage, so the task and the
benchmark run exactly the same code.

    pipeline_run(image=decoded, data_key=key, scan_ref=uid) -> PipelineResult

Stages, each timed: detect (every frame), pad and crop, encrypt each region (AES-256-GCM,
associated data binding scan, index, frame and box), fill (solid, not reversible), grid,
fingerprints, metrics, and a verification pass that runs the detector again over the
redacted frames. Boxes are (x0, y0, x1, y1), half-open, in original pixel coordinates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.utils.module_loading import import_string

from imaging import crypto

# A detector takes one uint8 frame (H,W or H,W,C) and returns its detections.
Detector = Callable[[np.ndarray], Sequence[Any]]


class DetectionError(Exception):
    """The detector itself failed (missing weights, a runtime error): not the image's fault."""


@dataclass(frozen=True)
class Box:
    frame: int
    label: str
    confidence: float
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def coords(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)


@dataclass(frozen=True)
class SealedRegion:
    index: int
    box: Box
    ciphertext: bytes
    dtype: str
    channels: int
    pixel_entropy: float
    ciphertext_entropy: float


@dataclass(frozen=True)
class FingerprintValues:
    average_hash: str
    perceptual_hash: str
    color_histogram: list[float]


@dataclass
class PipelineResult:
    regions: list[SealedRegion]
    redacted_pixels: np.ndarray  # original dtype, shape (F, H, W[, C])
    redacted_display: np.ndarray  # uint8 frames for PNG rendering
    grid_display: list[np.ndarray]
    fingerprint: FingerprintValues
    metrics: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    needs_review: bool = False
    residual: list[Box] = field(default_factory=list)


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + (time.perf_counter() - start) * 1000.0


def default_detector() -> Detector:
    # Imported late: loading torch and the weights belongs to the worker, not to every
    # process that imports the services (the web process never detects).
    detector: Detector = import_string(settings.IMAGING_DETECTOR)
    return detector


def as_box(frame: int, detection: Any) -> Box:
    """One detection from the detection module as a Box."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in detection.box)
    return Box(
        frame=frame,
        label=str(detection.label),
        confidence=float(detection.confidence),
        x0=x0,
        y0=y0,
        x1=x1,
        y1=y1,
    )


def detect_frames(
    display: np.ndarray, detector: Detector, *, classes: Sequence[str] = ()
) -> list[Box]:
    """Every box on every frame, keeping only `classes` (all when empty)."""
    boxes: list[Box] = []
    for frame_index in range(display.shape[0]):
        try:
            detections = detector(display[frame_index])
        except Exception as exc:
            raise DetectionError(f"{type(exc).__name__}: {exc}") from exc
        for detection in detections:
            box = as_box(frame_index, detection)
            if classes and box.label not in classes:
                continue
            boxes.append(box)
    return boxes


VERIFY_SCOPES = ("bands", "full")


def verify_bands(boxes: Sequence[Box], height: int) -> dict[int, list[tuple[int, int]]]:
    """Per frame, the horizontal bands the verification pass looks at again: every filled
    box's rows, widened by twice its height (at least 16 px) above and below, across the whole
    frame width, overlapping bands merged.

    Text the first pass missed next to a line it found (a second line suppressed by a
    stronger one, the end of a line boxed short) lies in these bands; the rest of the frame is
    unchanged pixels the first pass has already read with the same model.
    """
    spans: dict[int, list[tuple[int, int]]] = {}
    for box in boxes:
        margin = max(16, 2 * (box.y1 - box.y0))
        spans.setdefault(box.frame, []).append(
            (max(0, box.y0 - margin), min(height, box.y1 + margin))
        )
    merged: dict[int, list[tuple[int, int]]] = {}
    for frame, frame_spans in spans.items():
        out: list[tuple[int, int]] = []
        for top, bottom in sorted(frame_spans):
            if out and top <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], bottom))
            else:
                out.append((top, bottom))
        merged[frame] = out
    return merged


def verify_frames(
    display: np.ndarray,
    detector: Detector,
    sealed: Sequence[Box],
    *,
    classes: Sequence[str] = (),
    scope: str = "bands",
) -> list[Box]:
    """Detections on the redacted frames that no sealed box already covers.

    scope "full" runs the detector over every whole frame again; "bands" only over the bands
    around what was filled (`verify_bands`), which costs a fraction of a full pass.
    """
    if scope not in VERIFY_SCOPES:
        raise ValueError(f"unknown verification scope {scope!r}")
    if scope == "full":
        found = detect_frames(display, detector, classes=classes)
    else:
        found = []
        for frame_index, bands in verify_bands(sealed, int(display.shape[1])).items():
            for top, bottom in bands:
                band = display[frame_index : frame_index + 1, top:bottom]
                for box in detect_frames(band, detector, classes=classes):
                    found.append(
                        Box(
                            frame_index,
                            box.label,
                            box.confidence,
                            box.x0,
                            box.y0 + top,
                            box.x1,
                            box.y1 + top,
                        )
                    )
    return [b for b in found if not _mostly_covered(b, sealed)]


TEXT_CLASSES = ("phi_text", "tech_text")


def pad(
    box: Box, padding: int, height: int, width: int, frame: np.ndarray | None = None
) -> Box | None:
    from imaging.redaction import complete_line, pad_box

    coords: Sequence[float] = box.coords
    if frame is not None and box.label in TEXT_CLASSES:
        coords = complete_line(frame, coords)
    x0, y0, x1, y1 = pad_box(coords, padding, (height, width))
    if x1 <= x0 or y1 <= y0:
        return None
    return Box(box.frame, box.label, box.confidence, int(x0), int(y0), int(x1), int(y1))


def padded_boxes(
    found: Sequence[Box],
    padding: int,
    height: int,
    width: int,
    *,
    display: np.ndarray | None = None,
) -> list[Box]:
    """The regions to seal and fill: each detection padded and clipped, in reading order.

    With `display` (the uint8 frames the detector saw), text lines are first grown over ink
    that continues them (`imaging.redaction.complete_line`). Shared with the `redact` command
    and the detector's evaluation, so a batch run fills exactly what an upload would.
    """
    boxes = [
        p
        for p in (
            pad(b, padding, height, width, None if display is None else display[b.frame])
            for b in found
        )
        if p is not None
    ]
    # Reading order (frame, top, left) makes the grid numbers and region indexes stable.
    boxes.sort(key=lambda b: (b.frame, b.y0, b.x0, b.y1, b.x1))
    return boxes


def fill_frames(frames: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """A copy of `frames` with every box filled solid, frame by frame."""
    from imaging.redaction import fill_regions

    out = frames.copy()
    for frame_index in {b.frame for b in boxes}:
        coords = [b.coords for b in boxes if b.frame == frame_index]
        out[frame_index] = fill_regions(out[frame_index], coords)
    return out


def seal_region(
    *, pixels: np.ndarray, box: Box, index: int, data_key: bytes, scan_ref: str
) -> SealedRegion:
    from imaging.metrics import shannon_entropy

    crop = np.ascontiguousarray(pixels[box.frame, box.y0 : box.y1, box.x0 : box.x1])
    aad = crypto.region_aad(scan_ref=scan_ref, index=index, frame=box.frame, box=box.coords)
    ciphertext = crypto.encrypt_blob(data_key, crypto.pack_array(crop), aad=aad)
    return SealedRegion(
        index=index,
        box=box,
        ciphertext=ciphertext,
        dtype=str(crop.dtype),
        channels=int(crop.shape[2]) if crop.ndim == 3 else 1,
        pixel_entropy=float(shannon_entropy(crop)),
        ciphertext_entropy=float(shannon_entropy(ciphertext)),
    )


def open_region(
    *, ciphertext: bytes, data_key: bytes, scan_ref: str, index: int, frame: int, box: Sequence[int]
) -> np.ndarray:
    """The region's original pixels, or CryptoError if anything about it was changed."""
    aad = crypto.region_aad(scan_ref=scan_ref, index=index, frame=frame, box=box)
    plaintext = crypto.decrypt_blob(data_key, bytes(ciphertext), aad=aad)
    try:
        crop = crypto.unpack_array(plaintext)
    except ValueError:
        raise crypto.CryptoError() from None
    x0, y0, x1, y1 = (int(v) for v in box)
    if crop.shape[:2] != (y1 - y0, x1 - x0):
        raise crypto.CryptoError()
    return crop


def fingerprint(frame: np.ndarray) -> FingerprintValues:
    from imaging.metrics import fingerprints

    values = fingerprints(frame)
    return FingerprintValues(
        average_hash=values.average_hash,
        perceptual_hash=values.perceptual_hash,
        color_histogram=[float(v) for v in values.histogram],
    )


def quality_metrics(original: np.ndarray, redacted: np.ndarray) -> dict[str, float | None]:
    """SSIM and PSNR of redacted vs original display frames, averaged over frames.

    PSNR is None when nothing was redacted (identical images: infinite PSNR)."""
    from imaging.metrics import psnr, ssim

    return {
        "ssim": float(ssim(original, redacted, frames=True)),
        "psnr": psnr(original, redacted, frames=True),
    }


def _mostly_covered(box: Box, boxes: Sequence[Box], share: float = 0.9) -> bool:
    """Whether `share` of `box` already lies under earlier boxes of its frame: a detection
    on our own solid fill, not text we missed."""
    x0, y0, x1, y1 = box.coords
    area = (x1 - x0) * (y1 - y0)
    if area <= 0:
        return True
    mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for other in boxes:
        if other.frame != box.frame:
            continue
        left, top = max(other.x0, x0) - x0, max(other.y0, y0) - y0
        right, bottom = min(other.x1, x1) - x0, min(other.y1, y1) - y0
        if right > left and bottom > top:
            mask[top:bottom, left:right] = True
    return float(mask.mean()) >= share


def pipeline_run(
    *,
    image: Any,
    data_key: bytes,
    scan_ref: str,
    detector: Detector | None = None,
    classes: Sequence[str] = (),
    padding: int = 4,
    verify_rounds: int = 2,
    verify_scope: str = "bands",
    timings: dict[str, float] | None = None,
) -> PipelineResult:
    """Detect, seal and redact `image` (a DecodedImage). Pure: nothing is stored.

    Verification: the detector runs again over the redacted frames (around what was filled,
    or whole frames with `verify_scope="full"`; see `verify_frames`). Text it still finds is
    sealed and filled too (a first pass can miss a line next to a stronger one), up to
    `verify_rounds` times, and the scan is flagged for review whenever a round found any:
    a detector that needed a second look is one a person should check.
    """
    from imaging.grid import GridBox, draw_grid

    detector = detector or default_detector()
    timings = {} if timings is None else timings
    pixels: np.ndarray = image.pixels
    display: np.ndarray = image.display
    height, width = int(display.shape[1]), int(display.shape[2])

    with timed(timings, "detect_ms"):
        found = detect_frames(display, detector, classes=classes)
    boxes = padded_boxes(found, padding, height, width, display=display)
    regions: list[SealedRegion] = []
    redacted_pixels, redacted_display = pixels, display
    residual: list[Box] = []
    residual_first: int | None = None
    rounds = 0
    while True:
        with timed(timings, "encrypt_ms"):
            # Crops always come from the ORIGINAL pixels, so regions may overlap and any
            # paste order restores the same image.
            start = len(regions)
            regions += [
                seal_region(
                    pixels=pixels,
                    box=box,
                    index=start + i,
                    data_key=data_key,
                    scan_ref=scan_ref,
                )
                for i, box in enumerate(boxes)
            ]
        with timed(timings, "redact_ms"):
            redacted_pixels = fill_frames(redacted_pixels, boxes)
            redacted_display = fill_frames(redacted_display, boxes)
        with timed(timings, "verify_ms"):
            residual = verify_frames(
                redacted_display,
                detector,
                [r.box for r in regions],
                classes=classes,
                scope=verify_scope,
            )
        if residual_first is None:
            residual_first = len(residual)
        if not residual or rounds >= verify_rounds:
            break
        rounds += 1
        boxes = padded_boxes(residual, padding, height, width, display=redacted_display)

    with timed(timings, "grid_ms"):
        # Numbers start at 1 for people; region index = number - 1.
        grid = [
            draw_grid(
                redacted_display[f],
                [
                    GridBox(r.index + 1, r.box.coords, r.box.label, r.box.confidence)
                    for r in regions
                    if r.box.frame == f
                ],
            )
            for f in range(redacted_display.shape[0])
        ]

    with timed(timings, "fingerprint_ms"):
        prints = fingerprint(redacted_display[0])

    with timed(timings, "metrics_ms"):
        metrics: dict[str, Any] = dict(quality_metrics(display, redacted_display))
        metrics["regions"] = len(regions)
        metrics["classes"] = _count([r.box.label for r in regions])
        metrics["region_entropy"] = [
            {"index": r.index, "pixels": r.pixel_entropy, "ciphertext": r.ciphertext_entropy}
            for r in regions
        ]
    metrics["residual_detections"] = residual_first or 0
    metrics["verification_rounds"] = rounds
    metrics["residual_after_verification"] = len(residual)

    return PipelineResult(
        regions=regions,
        redacted_pixels=redacted_pixels,
        redacted_display=redacted_display,
        grid_display=grid,
        fingerprint=prints,
        metrics=metrics,
        timings=timings,
        needs_review=bool(residual_first),
        residual=residual,
    )


def _count(labels: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return counts
