"""The processing pipeline on arrays and bytes: no ORM, no storage, so the task and the
benchmark run exactly the same code.

    pipeline_run(image=decoded, data_key=key, scan_ref=uid, detector=detect) -> PipelineResult

Stages, each timed, frame by frame: detect (static overlays reused, see below), pad and
crop, encrypt each region (AES-256-GCM, associated data binding scan, index, frame and box),
fill (solid, not reversible), grid, fingerprints, metrics, and a verification pass that runs
the detector again over the redacted frames. Boxes are (x0, y0, x1, y1), half-open, in
original pixel coordinates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from engine.crypto import envelope as crypto

# The second opinion (engine.detection.ocr): given a redacted frame and windows (x0, y0, x1,
# y1), the text boxes it finds there, each with .coords and .score.
SecondOpinion = Callable[[np.ndarray, Sequence[tuple[int, int, int, int]]], Sequence[Any]]
OPINION_SCOPES = ("bands", "margins", "full")
# The label of what the second opinion found and no region covers (a leftover, for review).
OCR_LABEL = "ocr_text"
# The label of text read on a frame that shows one of the header's identifying values: PHI
# whatever the detector's class (sealed and filled, and the scan flagged for review).
HEADER_MATCH_LABEL = "header_match"
# Reads the text of boxes on a frame (engine.detection.ocr.TextReader.read), and says which
# kinds of the header's identifiers a text shows (ocr.IdentifierMatcher.match).
ReadText = Callable[[np.ndarray, Sequence[tuple[int, int, int, int]]], Sequence[str]]
MatchIdentifiers = Callable[[str], Sequence[str]]

# The label of a box that a scanner rule (not the detector) put on every frame.
SCANNER_RULE_LABEL = "scanner_rule"

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
    # Every box a verification pass found (the first round's, later filled or not, and what
    # was still found after the last round), once each: the review page draws them and the
    # technician resolves each before "needs review" clears.
    leftovers: list[Box] = field(default_factory=list)


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + (time.perf_counter() - start) * 1000.0


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
    return [b for b in found if not covered(b, sealed)]


TEXT_CLASSES = ("phi_text", "tech_text")


def pad(
    box: Box, padding: int, height: int, width: int, frame: np.ndarray | None = None
) -> Box | None:
    from engine.pixels.redaction import complete_line, pad_box

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
    that continues them (`engine.pixels.redaction.complete_line`). Shared with the `redact` command
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
    from engine.pixels.redaction import fill_regions

    out = frames.copy()
    for frame_index in {b.frame for b in boxes}:
        coords = [b.coords for b in boxes if b.frame == frame_index]
        out[frame_index] = fill_regions(out[frame_index], coords)
    return out


def seal_region(
    *,
    pixels: np.ndarray,
    box: Box,
    index: int,
    data_key: bytes,
    scan_ref: str,
    one_frame: bool = False,
) -> SealedRegion:
    """Seal the crop under `box` of `pixels` (all frames, or with `one_frame` the box's own
    frame alone)."""
    from engine.pixels.metrics import shannon_entropy

    frame = pixels if one_frame else pixels[box.frame]
    crop = np.ascontiguousarray(frame[box.y0 : box.y1, box.x0 : box.x1])
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


def seal_boxes(
    boxes: Sequence[Box], pixels: np.ndarray, first_index: int, data_key: bytes, scan_ref: str
) -> list[SealedRegion]:
    """Seal each box's crop of one frame's ORIGINAL pixels, numbered from `first_index`
    (crops never come from filled pixels, so regions may overlap and any paste order
    restores the same image)."""
    return [
        seal_region(
            pixels=pixels,
            box=box,
            index=first_index + i,
            data_key=data_key,
            scan_ref=scan_ref,
            one_frame=True,
        )
        for i, box in enumerate(boxes)
    ]


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
    from engine.pixels.metrics import fingerprints

    values = fingerprints(frame)
    return FingerprintValues(
        average_hash=values.average_hash,
        perceptual_hash=values.perceptual_hash,
        color_histogram=[float(v) for v in values.histogram],
    )


def quality_metrics(original: np.ndarray, redacted: np.ndarray) -> dict[str, float | None]:
    """SSIM and PSNR of redacted vs original display frames, averaged over frames.

    PSNR is None when nothing was redacted (identical images: infinite PSNR)."""
    from engine.pixels.metrics import psnr, ssim

    return {
        "ssim": float(ssim(original, redacted, frames=True)),
        "psnr": psnr(original, redacted, frames=True),
    }


def covered(box: Box, boxes: Sequence[Box], share: float = 0.9) -> bool:
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


# --- Static overlays -------------------------------------------------------------------------
#
# Burned-in text in a cine almost never moves. The detector runs on the first frame and again
# only on a frame whose overlay areas changed: the cells (a CELL x CELL downscaled grey) under
# the last detection's boxes, widened, and the frame's margins, where scanners write text.
# Everywhere else the previous frame's boxes are reused. Verification is gated the same way:
# a redacted frame whose overlay areas match the last verified frame's inherits its result
# (the detector would read the same text there); any change there is verified again. Moving
# anatomy in the middle of the frame changes neither.

CELL = 8
MARGIN_SHARE = 0.15  # top, bottom, left and right: where scanners write their text
CHANGE_THRESHOLD = 6.0  # grey levels, mean of a CELL x CELL cell


def small_grey(frame: np.ndarray) -> np.ndarray:
    """`frame` (H, W[, C] uint8) as a grey image downscaled by CELL (cell means, float32)."""
    import cv2

    if frame.ndim == 3 and frame.shape[2] >= 3:
        grey = cv2.cvtColor(np.ascontiguousarray(frame[..., :3]), cv2.COLOR_RGB2GRAY)
    else:
        grey = frame if frame.ndim == 2 else frame[..., 0]
    height, width = grey.shape
    # Cell means by area averaging: a few milliseconds for a 1024 x 768 frame.
    small = cv2.resize(
        np.ascontiguousarray(grey, dtype=np.float32),
        (max(1, width // CELL), max(1, height // CELL)),
        interpolation=cv2.INTER_AREA,
    )
    return np.asarray(small, dtype=np.float32)


def overlay_mask(
    shape: tuple[int, int], boxes: Sequence[Box], data_regions: Sequence[Sequence[int]] = ()
) -> np.ndarray:
    """The cells (of `small_grey`'s grid, `shape`) to compare: where scanners write, plus
    every box widened by its height (at least 8 px). Where they write is outside the data
    regions when an ultrasound lists them (a sector reaches into any fixed margin), else
    the frame's margins."""
    rows, cols = shape
    mask = np.zeros(shape, dtype=bool)
    if data_regions:
        mask[:] = True
        for x0, y0, x1, y1 in data_regions:
            # Cells wholly inside a region hold image data, not the scanner's writing.
            mask[-(-int(y0) // CELL) : int(y1) // CELL, -(-int(x0) // CELL) : int(x1) // CELL] = (
                False
            )
    else:
        top = max(1, int(round(rows * MARGIN_SHARE)))
        side = max(1, int(round(cols * MARGIN_SHARE)))
        mask[:top], mask[-top:], mask[:, :side], mask[:, -side:] = True, True, True, True
    for box in boxes:
        grow = max(8, box.y1 - box.y0)
        y0, y1 = max(0, box.y0 - grow) // CELL, -(-(box.y1 + grow) // CELL)
        x0, x1 = max(0, box.x0 - grow) // CELL, -(-(box.x1 + grow) // CELL)
        mask[y0:y1, x0:x1] = True
    return mask


def overlay_changed(
    previous: np.ndarray, current: np.ndarray, mask: np.ndarray, threshold: float
) -> bool:
    """Whether any masked cell of two `small_grey` images differs by more than `threshold`."""
    if previous.shape != current.shape:
        return True
    return bool((np.abs(previous - current)[mask] > threshold).any())


class _CountingDetector:
    """The detector, counting its calls (reported in the metrics)."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.calls = 0

    def __call__(self, frame: np.ndarray) -> Sequence[Any]:
        self.calls += 1
        return self.detector(frame)


@dataclass(frozen=True)
class FrameOutput:
    """One processed frame, handed to a sink as soon as it is done.

    The grid image is drawn when first asked for (`grid`), from `grid_boxes`: a sink that
    leaves a frame's grid to be drawn on request (a cine's later frames, see
    imaging.vault.derivatives) never pays for it. `drawn` is a grid already drawn (review
    edits pass theirs)."""

    index: int
    redacted_pixels: np.ndarray
    redacted_display: np.ndarray
    drawn: np.ndarray | None = None
    grid_boxes: tuple[Any, ...] = ()

    @property
    def grid(self) -> np.ndarray:
        if self.drawn is None:
            from engine.pixels.grid import draw_grid

            object.__setattr__(self, "drawn", draw_grid(self.redacted_display, self.grid_boxes))
        assert self.drawn is not None
        return self.drawn

    @property
    def has_leftovers(self) -> bool:
        """Whether the grid shows text still found after redaction (drawn for the review)."""
        return any(getattr(b, "leftover", False) for b in self.grid_boxes)


FrameSink = Callable[[FrameOutput], None]


def frame_pixels(image: Any, index: int) -> np.ndarray:
    """Frame `index` of a DecodedImage's pixels, read lazily where the image can."""
    reader = getattr(image, "frame_pixels", None)
    return cast("np.ndarray", reader(index) if reader is not None else image.pixels[index])


def frame_display(image: Any, index: int) -> np.ndarray:
    reader = getattr(image, "frame_display", None)
    return cast("np.ndarray", reader(index) if reader is not None else image.display[index])


def region_group_key(label: str, coords: Sequence[int]) -> tuple[str, int, int, int, int]:
    """Regions with this key are one row for people: the same box on several frames."""
    x0, y0, x1, y1 = (int(v) for v in coords)
    return (label, x0, y0, x1, y1)


class _Quality:
    """SSIM averaged over frames and PSNR over all frames, one frame at a time (the same
    values as `quality_metrics` on the stacked frames), scored only around the boxes
    (`engine.pixels.metrics.score_within`). A frame whose boxes are the previous frame's and
    whose pixels around them (the areas scored, margins included) are too scores the same,
    so the previous score is reused after that comparison: a cine's static overlay is scored
    once."""

    def __init__(self) -> None:
        self.ssim: list[float] = []
        self.squared_error = 0.0
        self.size = 0
        self.reused = 0
        self._last: tuple[Any, list[np.ndarray], Any] | None = None

    def add(self, original: np.ndarray, redacted: np.ndarray, boxes: Sequence[Box]) -> None:
        """One frame; `boxes` bound everything that differs (the rest adds zero error)."""
        from engine.pixels.metrics import SSIM_WINDOW, merged_rects, score_within

        self.size += int(original.size)
        if not boxes:
            self.ssim.append(1.0)
            return
        height, width = original.shape[:2]
        rects = [b.coords for b in boxes]
        # What the score depends on: the pixels of each scored area and its window margin.
        areas = merged_rects(rects, SSIM_WINDOW, height, width)
        crops = [part[y0:y1, x0:x1] for x0, y0, x1, y1 in areas for part in (original, redacted)]
        key = (tuple(areas), original.shape, original.dtype.str)
        last = self._last
        if (
            last is not None
            and original.dtype == np.uint8  # else the data range is the frame's own span
            and last[0] == key
            and all(np.array_equal(a, b) for a, b in zip(last[1], crops, strict=True))
        ):
            score = last[2]
            self.reused += 1
        else:
            score = score_within(original, redacted, rects)
            self._last = (key, [np.array(c) for c in crops], score)
        self.ssim.append(score.ssim)
        self.squared_error += score.squared_error

    def values(self) -> dict[str, float | None]:
        import math

        psnr: float | None = None
        if self.squared_error > 0:
            value = 10.0 * math.log10(255.0**2 / (self.squared_error / self.size))
            psnr = float(value) if math.isfinite(value) else None
        return {"ssim": float(np.mean(self.ssim)) if self.ssim else 1.0, "psnr": psnr}


def pipeline_run(
    *,
    image: Any,
    data_key: bytes,
    scan_ref: str,
    detector: Detector,
    classes: Sequence[str] = (),
    padding: int = 4,
    verify_rounds: int = 2,
    verify_scope: str = "bands",
    timings: dict[str, float] | None = None,
    sink: FrameSink | None = None,
    reuse_static: bool = True,
    change_threshold: float = CHANGE_THRESHOLD,
    data_regions: Sequence[Sequence[int]] = (),
    fixed_boxes: Sequence[Sequence[int]] = (),
    second_opinion: SecondOpinion | None = None,
    second_opinion_scope: str = "margins",
    read_text: ReadText | None = None,
    match_identifiers: MatchIdentifiers | None = None,
) -> PipelineResult:
    """Detect, seal and redact `image` (a DecodedImage). Pure: nothing is stored.

    Frame by frame: a frame is read, detected (or its boxes reused, see "Static overlays"
    above), sealed, filled, verified and drawn, then handed to `sink` and dropped, so memory
    grows with the frame size, not the frame count. Without a sink the frames are collected
    into the result's arrays (tests, commands, the benchmark).

    Verification: the detector runs again over the redacted frame (around what was filled,
    or the whole frame with `verify_scope="full"`; see `verify_frames`). Text it still finds
    is sealed and filled too (a first pass can miss a line next to a stronger one), up to
    `verify_rounds` times, and the scan is flagged for review whenever a round found any:
    a detector that needed a second look is one a person should check.

    `data_regions` (an ultrasound's Sequence of Ultrasound Regions, `engine.dicom.ultrasound`):
    ink outside all of them that no box covers is the scanner's annotation; it is sealed and
    filled as an "annotation" region (covered, so no review is asked for; the regions list
    shows them, and metrics["annotation_boxes"] counts them).

    `fixed_boxes` (a scanner's rules, `imaging.models.ScannerRule`): boxes covered on every
    frame whatever the detector says, sealed like any region and labelled "scanner_rule"; a
    detection they already cover is not sealed twice. Boxes are clipped to the image; one
    that falls outside it entirely is ignored. metrics["rule_boxes"] counts them.

    `second_opinion` (`engine.detection.ocr.TextFinder.search`, independent of the detector):
    after a frame is redacted and verified, it looks for text left in `second_opinion_scope`'s
    windows (`opinion_windows`: "bands" around the filled boxes, "margins" those and the
    frame's edges, "full" the whole frame). Text it finds that no region covers is not filled
    (it may be a scale or a caliper): the scan is flagged for review and the spot is one of the
    result's leftovers, labelled "ocr_text", for a person to cover or dismiss. A cine frame
    whose overlay matches the last checked frame is not looked at again.
    metrics["second_opinion_boxes"] counts what it found; timings["second_opinion_ms"].

    `read_text` and `match_identifiers` (the header's identifying values, matched in memory:
    `engine.detection.ocr.TextReader.read`, `IdentifierMatcher.match`): the second opinion's
    text that no region wholly covers (left outside, or cut short by one) is read, and so are
    the detections of classes not redacted (`classes`); text that shows a name part, patient
    ID, birth date, accession number or institution of the header is PHI whatever its class:
    it is sealed and filled ("header_match"), and the scan is flagged for review with the
    spot among the leftovers. metrics["header_matches"] lists {"frame", "kinds", "box"}:
    what kind matched where, never the text or the value; timings["header_match_ms"].
    """
    from engine.dicom.ultrasound import ANNOTATION_LABEL, annotation_boxes
    from engine.pixels.grid import GridBox
    from engine.pixels.redaction import fill_regions

    if verify_scope not in VERIFY_SCOPES:
        raise ValueError(f"unknown verification scope {verify_scope!r}")
    if second_opinion_scope not in OPINION_SCOPES:
        raise ValueError(f"unknown second-opinion scope {second_opinion_scope!r}")
    opinion_found: list[Box] = []
    reading = (
        (read_text, match_identifiers)
        if read_text is not None and match_identifiers is not None
        else None
    )
    header_matches: list[dict[str, Any]] = []
    counted = _CountingDetector(detector)
    timings = {} if timings is None else timings
    frames, height, width = int(image.frames), int(image.height), int(image.width)
    fixed = clip_boxes(fixed_boxes, height, width)

    regions: list[SealedRegion] = []
    groups: dict[tuple[str, int, int, int, int], int] = {}
    residual: list[Box] = []
    residual_first = 0
    found_first: list[Box] = []
    rounds_most = 0
    frames_detected = frames_verified = annotations = 0
    quality = _Quality()
    prints: FingerprintValues | None = None
    kept: list[FrameOutput] = []
    # The last frame the detector read: its small grey, its final boxes (every round) and
    # the mask to compare; the last verified redacted frame, likewise, and what was left.
    seen_small: np.ndarray | None = None
    seen_boxes: list[Box] = []
    seen_mask: np.ndarray | None = None
    checked_small: np.ndarray | None = None
    checked_mask: np.ndarray | None = None
    checked_residual: list[Box] = []

    for f in range(frames):
        with timed(timings, "read_ms"):  # A lazily decoded cine decodes the frame here.
            pixels = frame_pixels(image, f)
            display = frame_display(image, f)
        with timed(timings, "detect_ms"):
            small = small_grey(display) if reuse_static else None
            fresh = (
                seen_small is None
                or small is None
                or seen_mask is None
                or overlay_changed(seen_small, small, seen_mask, change_threshold)
            )
            if fresh:
                found = [
                    Box(f, b.label, b.confidence, b.x0, b.y0, b.x1, b.y1)
                    for b in detect_frames(
                        display[np.newaxis], counted, classes=() if reading else classes
                    )
                ]
                if reading and classes:
                    with timed(timings, "header_match_ms"):
                        found = _keep_classes_or_matches(
                            display, found, classes, reading, header_matches
                        )
                frames_detected += 1
                boxes = [
                    Box(f, b.label, b.confidence, b.x0, b.y0, b.x1, b.y1)
                    for b in padded_boxes(
                        [Box(0, *_rest(b)) for b in found],
                        padding,
                        height,
                        width,
                        display=display[np.newaxis],
                    )
                ]
            else:
                boxes = [Box(f, *_rest(b)) for b in seen_boxes]
            # A reused frame's boxes already hold the rules' boxes: no second seal.
            ruled = [
                Box(f, SCANNER_RULE_LABEL, 1.0, *c)
                for c in fixed
                if not covered(Box(f, SCANNER_RULE_LABEL, 1.0, *c), boxes)
            ]
            boxes = ruled + boxes
        frame_regions: list[SealedRegion] = []

        red_pixels, red_display = pixels, display
        rounds = 0
        first_round = True
        while True:
            with timed(timings, "encrypt_ms"):
                # Crops always come from the ORIGINAL pixels, so regions may overlap and any
                # paste order restores the same image.
                frame_regions += seal_boxes(
                    boxes, pixels, len(regions) + len(frame_regions), data_key, scan_ref
                )
            with timed(timings, "redact_ms"):
                coords = [b.coords for b in boxes]
                red_pixels = fill_regions(red_pixels, coords) if coords else red_pixels
                red_display = fill_regions(red_display, coords) if coords else red_display
            with timed(timings, "verify_ms"):
                sealed = [r.box for r in frame_regions]
                red_small = small_grey(red_display) if reuse_static else None
                same = (
                    not fresh
                    and first_round
                    and red_small is not None
                    and checked_small is not None
                    and checked_mask is not None
                    and not overlay_changed(
                        checked_small, red_small, checked_mask, change_threshold
                    )
                )
                if same:
                    found_now = [Box(f, *_rest(b)) for b in checked_residual]
                else:
                    frames_verified += 1
                    found_now = [
                        Box(f, *_rest(b))
                        for b in verify_frames(
                            red_display[np.newaxis],
                            counted,
                            [Box(0, *_rest(b)) for b in sealed],
                            classes=classes,
                            scope=verify_scope,
                        )
                    ]
                    if first_round:
                        residual_first += len(found_now)
                        found_first += found_now
            if same or not found_now or rounds >= verify_rounds:
                break
            first_round = False
            rounds += 1
            boxes = [
                Box(f, *_rest(b))
                for b in padded_boxes(
                    [Box(0, *_rest(b)) for b in found_now],
                    padding,
                    height,
                    width,
                    display=red_display[np.newaxis],
                )
            ]
        if data_regions and not same:
            with timed(timings, "verify_ms"):
                marks = annotation_boxes(
                    red_display, data_regions, [r.box.coords for r in frame_regions]
                )
            if marks:
                annotations += len(marks)
                with timed(timings, "encrypt_ms"):
                    frame_regions += seal_boxes(
                        [Box(f, ANNOTATION_LABEL, 1.0, *mark) for mark in marks],
                        pixels,
                        len(regions) + len(frame_regions),
                        data_key,
                        scan_ref,
                    )
                with timed(timings, "redact_ms"):
                    red_pixels = fill_regions(red_pixels, marks)
                    red_display = fill_regions(red_display, marks)
                    red_small = small_grey(red_display) if reuse_static else None
        if second_opinion is not None and not same:
            with timed(timings, "second_opinion_ms"):
                covering = [r.box for r in frame_regions] + found_now
                windows = opinion_windows(
                    red_display.shape[:2], [b.coords for b in covering], second_opinion_scope
                )
                texts = list(second_opinion(red_display, windows))
                for text in texts:
                    box = Box(f, OCR_LABEL, float(text.score), *text.coords)
                    # Half under a region or another finding: the same spot, said once.
                    if not covered(box, covering + opinion_found, share=0.5):
                        opinion_found.append(box)
            if reading and texts:
                with timed(timings, "header_match_ms"):
                    matched = _header_matched(
                        red_display,
                        [Box(f, OCR_LABEL, float(t.score), *t.coords) for t in texts],
                        covering,
                        reading,
                        header_matches,
                    )
                if matched:
                    # A header value left on the frame: PHI, sealed and filled like a region,
                    # and the spot stays among the leftovers for the review.
                    marked = [m.coords for m in matched]
                    opinion_found = [
                        b for b in opinion_found if not covered(b, matched, share=0.5)
                    ] + matched
                    with timed(timings, "encrypt_ms"):
                        frame_regions += seal_boxes(
                            matched, pixels, len(regions) + len(frame_regions), data_key, scan_ref
                        )
                    with timed(timings, "redact_ms"):
                        red_pixels = fill_regions(red_pixels, marked)
                        red_display = fill_regions(red_display, marked)
                        red_small = small_grey(red_display) if reuse_static else None
        rounds_most = max(rounds_most, rounds)
        residual += found_now
        regions += frame_regions
        if fresh:
            seen_small, seen_boxes = small, [r.box for r in frame_regions]
            if small is not None:
                seen_mask = overlay_mask(small.shape, seen_boxes, data_regions)
        if not same and red_small is not None:
            checked_small, checked_residual = red_small, found_now
            checked_mask = overlay_mask(
                red_small.shape, [r.box for r in frame_regions], data_regions
            )

        with timed(timings, "grid_ms"):
            grid_boxes = []
            for r in frame_regions:
                key = region_group_key(r.box.label, r.box.coords)
                # Numbers start at 1 for people; one number per group of identical boxes.
                number = groups.setdefault(key, len(groups) + 1)
                grid_boxes.append(GridBox(number, r.box.coords, r.box.label, r.box.confidence))
            # Text still found after the last round: drawn for the review, not filled.
            grid_boxes += [
                GridBox(0, b.coords, b.label, b.confidence, leftover=True) for b in found_now
            ]
        if f == 0:
            with timed(timings, "fingerprint_ms"):
                prints = fingerprint(red_display)
        with timed(timings, "metrics_ms"):
            quality.add(display, red_display, [r.box for r in frame_regions])
        output = FrameOutput(f, red_pixels, red_display, grid_boxes=tuple(grid_boxes))
        if sink is not None:
            sink(output)
        else:
            kept.append(output)

    with timed(timings, "metrics_ms"):
        metrics: dict[str, Any] = dict(quality.values())
        metrics["quality_reused"] = quality.reused
        metrics["regions"] = len(regions)
        metrics["region_groups"] = len(groups)
        metrics["classes"] = _count([r.box.label for r in regions])
        metrics["region_entropy"] = [
            {"index": r.index, "pixels": r.pixel_entropy, "ciphertext": r.ciphertext_entropy}
            for r in regions
        ]
    metrics["residual_detections"] = residual_first
    metrics["verification_rounds"] = rounds_most
    metrics["residual_after_verification"] = len(residual)
    metrics["detector_calls"] = counted.calls
    metrics["frames_detected"] = frames_detected
    metrics["frames_verified"] = frames_verified
    metrics["annotation_boxes"] = annotations
    metrics["second_opinion_boxes"] = len(opinion_found)
    if reading:
        metrics["header_matches"] = header_matches
    metrics["rule_boxes"] = sum(1 for r in regions if r.box.label == SCANNER_RULE_LABEL)

    assert prints is not None  # every image has a frame 0
    return PipelineResult(
        regions=regions,
        redacted_pixels=_stack([o.redacted_pixels for o in kept]),
        redacted_display=_stack([o.redacted_display for o in kept]),
        grid_display=[o.grid for o in kept],
        fingerprint=prints,
        metrics=metrics,
        timings=timings,
        needs_review=bool(residual_first) or bool(opinion_found),
        residual=residual,
        leftovers=list(dict.fromkeys(found_first + residual + opinion_found)),
    )


def _keep_classes_or_matches(
    display: np.ndarray,
    found: list[Box],
    classes: Sequence[str],
    reading: tuple[ReadText, MatchIdentifiers],
    header_matches: list[dict[str, Any]],
) -> list[Box]:
    """The detections of `classes`, and those of other classes whose text (read on the
    original frame) shows a header identifier, relabelled HEADER_MATCH_LABEL."""
    read_text, match_identifiers = reading
    kept = [b for b in found if b.label in classes]
    others = [b for b in found if b.label not in classes]
    if not others:
        return kept
    for box, text in zip(others, read_text(display, [b.coords for b in others]), strict=True):
        kinds = list(match_identifiers(text))
        if kinds:
            header_matches.append({"frame": box.frame, "kinds": kinds, "box": list(box.coords)})
            kept.append(Box(box.frame, HEADER_MATCH_LABEL, box.confidence, *box.coords))
    return kept


def _header_matched(
    red_display: np.ndarray,
    texts: list[Box],
    covering: list[Box],
    reading: tuple[ReadText, MatchIdentifiers],
    header_matches: list[dict[str, Any]],
) -> list[Box]:
    """Of the second opinion's text on a redacted frame, what no region wholly covers and
    shows a header identifier, as HEADER_MATCH_LABEL boxes."""
    read_text, match_identifiers = reading
    candidates = [b for b in texts if not covered(b, covering, share=0.9)]
    if not candidates:
        return []
    matched = []
    for box, text in zip(
        candidates, read_text(red_display, [b.coords for b in candidates]), strict=True
    ):
        kinds = list(match_identifiers(text))
        if kinds:
            header_matches.append({"frame": box.frame, "kinds": kinds, "box": list(box.coords)})
            matched.append(Box(box.frame, HEADER_MATCH_LABEL, 1.0, *box.coords))
    return matched


def clip_boxes(
    boxes: Sequence[Sequence[int]], height: int, width: int
) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) boxes clipped to a height x width image; empty ones are dropped."""
    clipped = []
    for box in boxes:
        x0, y0, x1, y1 = (int(v) for v in box)
        x0, x1 = max(0, min(x0, width)), max(0, min(x1, width))
        y0, y1 = max(0, min(y0, height)), max(0, min(y1, height))
        if x1 > x0 and y1 > y0:
            clipped.append((x0, y0, x1, y1))
    return clipped


def opinion_windows(
    shape: Sequence[int], boxes: Sequence[Sequence[int]], scope: str
) -> list[tuple[int, int, int, int]]:
    """Where the second opinion looks on a (height, width) frame: "bands", full-width rows
    around each box (a box's height above and below: the rest of a line the detector cut
    short, a line just under it); "margins", those and the frame's edges (MARGIN_SHARE of
    each side, where scanners write); "full", the whole frame. Overlapping bands are merged."""
    height, width = int(shape[0]), int(shape[1])
    if scope == "full":
        return [(0, 0, width, height)]
    rows: list[tuple[int, int]] = []
    for box in boxes:
        tall = int(box[3]) - int(box[1])
        rows.append((max(0, int(box[1]) - tall), min(height, int(box[3]) + tall)))
    if scope == "margins":
        top = max(8, int(round(height * MARGIN_SHARE)))
        rows += [(0, top), (height - top, height)]
    merged: list[list[int]] = []
    for start, end in sorted(rows):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    windows = [(0, a, width, b) for a, b in merged if b > a]
    if scope == "margins":
        side = max(8, int(round(width * MARGIN_SHARE)))
        windows += [(0, 0, side, height), (width - side, 0, width, height)]
    return windows


def rule_boxes(
    fixed_boxes: Sequence[Sequence[int]], frames: int, height: int, width: int
) -> list[Box]:
    """A scanner rule's boxes on every frame, clipped (the `redact` command's share of what
    `pipeline_run(fixed_boxes=...)` does)."""
    fixed = clip_boxes(fixed_boxes, height, width)
    return [Box(f, SCANNER_RULE_LABEL, 1.0, *c) for f in range(frames) for c in fixed]


def _rest(box: Box) -> tuple[str, float, int, int, int, int]:
    """A box's fields after the frame, to rebuild it on another frame."""
    return (box.label, box.confidence, box.x0, box.y0, box.x1, box.y1)


def _stack(frames: list[np.ndarray]) -> np.ndarray:
    # With a sink nothing is kept: an empty array stands for "handed out frame by frame".
    return np.stack(frames) if frames else np.empty((0,), dtype=np.uint8)


def _count(labels: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return counts
