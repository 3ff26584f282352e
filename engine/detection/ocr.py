"""A second opinion that does not share the detector's blind spots: PP-OCR's text detection
network (a DB, differentiable-binarisation, model trained on general scene and document text),
whose ONNX weights ship inside the `rapidocr` package on PyPI (Apache-2.0). Only the weights
are used; the pre- and post-processing are ours, on onnxruntime, so nothing is downloaded and
no other OCR code runs.

    finder = TextFinder()                       # the packaged PP-OCRv6 small detector
    finder(frame) -> [TextBox(x0, y0, x1, y1, score), ...]   # axis-aligned, frame pixels
    finder.search(frame, windows) -> [...]      # the same, inside some windows only
    reader = TextReader()                       # the packaged PP-OCRv6 small recogniser
    reader.read(frame, boxes) -> ["text", ...]  # one line of text per box
    IdentifierMatcher(header_identifiers(ds)).match(text) -> ["name", ...]  # field kinds

The model sees a uint8 frame (grey or RGB), resized so its longer side is at most
`limit_side` (multiples of 32), normalised to [-1, 1]. Its output is a text probability map;
pixels above `threshold` are joined into components, a component whose mean probability is
below `box_threshold` is dropped, and each kept one is grown by the DB "unclip" distance
(area x ratio / perimeter, as the model was trained to shrink its targets) and mapped back to
frame coordinates. Only line-like boxes are kept (`_line_like`): the network also fires on
calipers, crosses and traces, which are not what a second opinion on text is for.
"""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

MODEL_FILE = "PP-OCRv6_det_small.onnx"
REC_MODEL_FILE = "PP-OCRv6_rec_small.onnx"


class OcrUnavailable(Exception):
    """The `rapidocr` package (which holds the weights) or onnxruntime is not installed."""


def packaged_model(name: str = MODEL_FILE) -> Path:
    """PP-OCR weights inside the installed `rapidocr` package (detection by default)."""
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        raise OcrUnavailable("the rapidocr package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise OcrUnavailable(f"{path} is missing from the rapidocr package")
    return path


def onnx_session(model: str | Path, threads: int) -> Any:
    """An ONNX Runtime CPU session of `threads` intra-op threads (OcrUnavailable without
    onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
        raise OcrUnavailable("onnxruntime is not installed") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class TextBox:
    x0: int
    y0: int
    x1: int
    y1: int
    score: float

    @property
    def coords(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)


class TextFinder:
    def __init__(
        self,
        model: str | Path | None = None,
        *,
        threads: int = 1,
        limit_side: int = 960,
        threshold: float = 0.3,
        box_threshold: float = 0.6,
        unclip_ratio: float = 1.5,
        min_side: int = 3,
        min_aspect: float = 1.5,
        max_line_share: float = 0.06,
    ) -> None:
        self.session = onnx_session(model or packaged_model(), threads)
        self.input = self.session.get_inputs()[0].name
        self.limit_side = limit_side
        self.threshold = threshold
        self.box_threshold = box_threshold
        self.unclip_ratio = unclip_ratio
        self.min_side = min_side
        self.min_aspect = min_aspect
        self.max_line_share = max_line_share

    def _probabilities(self, frame: np.ndarray) -> tuple[np.ndarray, float, float]:
        import cv2

        rgb = frame if frame.ndim == 3 else np.repeat(frame[:, :, np.newaxis], 3, axis=2)
        rgb = rgb[:, :, :3]
        height, width = rgb.shape[:2]
        scale = min(1.0, self.limit_side / max(height, width))
        new_h = max(32, int(round(height * scale / 32)) * 32)
        new_w = max(32, int(round(width * scale / 32)) * 32)
        resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        tensor = (resized.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[np.newaxis]
        output = self.session.run(None, {self.input: np.ascontiguousarray(tensor)})[0]
        return cast(np.ndarray, output[0, 0]), width / new_w, height / new_h

    def __call__(self, frame: np.ndarray) -> list[TextBox]:
        import cv2

        if frame.shape[0] < 8 or frame.shape[1] < 8:
            return []
        probability, sx, sy = self._probabilities(frame)
        mask = (probability > self.threshold).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        height, width = frame.shape[:2]
        found = []
        for i in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[i])
            if min(w, h) < self.min_side:
                continue
            score = float(probability[labels == i].mean())
            if score < self.box_threshold:
                continue
            grow = area * self.unclip_ratio / (2 * (w + h))
            x0 = int(np.floor((x - grow) * sx))
            y0 = int(np.floor((y - grow) * sy))
            x1 = int(np.ceil((x + w + grow) * sx))
            y1 = int(np.ceil((y + h + grow) * sy))
            box = TextBox(max(0, x0), max(0, y0), min(width, x1), min(height, y1), score)
            if box.x1 > box.x0 and box.y1 > box.y0 and self._line_like(box, height):
                found.append(box)
        return sorted(found, key=lambda b: (b.y0, b.x0))

    def _line_like(self, box: TextBox, frame_height: int) -> bool:
        """A line of text: wider than tall by `min_aspect`, and no taller than a text line
        gets (`max_line_share` of the frame's height, at least 48 px). Measured on the real
        test set (bench.second_opinion): what fails this is calipers, crosses, ECG traces,
        colour bars and probe marks, the detector's hard negatives, not writing."""
        tall, wide = box.y1 - box.y0, box.x1 - box.x0
        return wide >= self.min_aspect * tall and tall <= max(
            48, self.max_line_share * frame_height
        )

    def search(self, frame: np.ndarray, windows: Sequence[Sequence[int]]) -> list[TextBox]:
        """Text inside each (x0, y0, x1, y1) window (clipped to the frame), in frame
        coordinates; a box found in two overlapping windows comes back once per window."""
        height, width = frame.shape[:2]
        found: list[TextBox] = []
        for window in windows:
            x0, y0, x1, y1 = (int(v) for v in window)
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
            if x1 - x0 < 8 or y1 - y0 < 8:
                continue
            for box in self(frame[y0:y1, x0:x1]):
                found.append(TextBox(box.x0 + x0, box.y0 + y0, box.x1 + x0, box.y1 + y0, box.score))
        return found


class TextReader:
    """PP-OCR's text recognition network (PP-OCRv6 small, a CTC line recogniser whose
    character list is stored in the ONNX file's metadata), from the same `rapidocr` wheel.

    `read(frame, boxes)`: each box's crop, resized to 48 px high (its aspect kept, at most
    `max_width` px wide), normalised to [-1, 1] in BGR order as PaddleOCR trained it; the
    most likely character per step, repeats and blanks removed (greedy CTC). What it reads
    is for matching in memory only: never stored or logged."""

    HEIGHT = 48

    def __init__(
        self, model: str | Path | None = None, *, threads: int = 1, max_width: int = 1600
    ) -> None:
        self.session = onnx_session(model or packaged_model(REC_MODEL_FILE), threads)
        self.input = self.session.get_inputs()[0].name
        listed = self.session.get_modelmeta().custom_metadata_map.get("character", "")
        if not listed:
            raise OcrUnavailable("the recognition model carries no character list")
        # Index 0 is CTC's blank; the space is appended last, as PaddleOCR does.
        self.characters = ["", *listed.splitlines(), " "]
        self.max_width = max_width

    def _line(self, crop: np.ndarray) -> str:
        import cv2

        rgb = crop if crop.ndim == 3 else np.repeat(crop[:, :, np.newaxis], 3, axis=2)
        bgr = np.ascontiguousarray(rgb[:, :, 2::-1])
        height, width = bgr.shape[:2]
        new_w = int(min(self.max_width, max(self.HEIGHT, np.ceil(self.HEIGHT * width / height))))
        resized = cv2.resize(bgr, (new_w, self.HEIGHT), interpolation=cv2.INTER_LINEAR)
        tensor = (resized.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[np.newaxis]
        scores = self.session.run(None, {self.input: tensor})[0][0]
        best = scores.argmax(axis=1)
        keep = np.ones(best.shape, bool)
        keep[1:] = best[1:] != best[:-1]
        keep &= best != 0
        return "".join(self.characters[i] for i in best[keep] if i < len(self.characters))

    def read(self, frame: np.ndarray, boxes: Sequence[Sequence[int]]) -> list[str]:
        """The text of each (x0, y0, x1, y1) box of `frame` ("" for an empty box)."""
        height, width = frame.shape[:2]
        texts = []
        for box in boxes:
            x0, y0, x1, y1 = (int(v) for v in box)
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
            texts.append(self._line(frame[y0:y1, x0:x1]) if x1 - x0 >= 4 and y1 - y0 >= 4 else "")
        return texts


# ---------------------------------------------------------------- the header's identifiers

IDENTIFIER_KINDS = ("name", "patient_id", "birth_date", "accession", "institution")
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
# Words of institution names that identify nobody by themselves.
GENERIC_WORDS = frozenset(
    [
        "HOSPITAL",
        "HOSPITALS",
        "MEDICAL",
        "CENTER",
        "CENTRE",
        "CLINIC",
        "CLINICS",
        "UNIVERSITY",
        "GENERAL",
        "IMAGING",
        "RADIOLOGY",
        "HEALTH",
        "DEPARTMENT",
        "DEPT",
        "INSTITUTE",
        "SAINT",
        "MEMORIAL",
        "REGIONAL",
        "COUNTY",
        "CITY",
        "CHILDRENS",
        "NATIONAL",
        "COMMUNITY",
        "DIAGNOSTIC",
        "DIAGNOSTICS",
        "SERVICES",
        "SYSTEM",
        "KLINIKUM",
    ]
)
# OCR confuses these with digits: folded on both sides before IDs and dates are compared.
_DIGIT_FOLD = str.maketrans({"O": "0", "Q": "0", "D": "0", "I": "1", "L": "1", "S": "5", "B": "8"})


@dataclass(frozen=True)
class Identifier:
    """One identifying header value. Its repr names the kind only: the value is PHI."""

    kind: str
    value: str = field(repr=False)


def fold(text: str) -> str:
    """Upper case, accents dropped, DICOM's ^ and punctuation as spaces, spaces collapsed."""
    plain = "".join(
        c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
    ).upper()
    return " ".join(re.findall(r"[A-Z0-9]+", plain))


def _compact(text: str) -> str:
    return fold(text).replace(" ", "")


def date_variants(value: str) -> list[str]:
    """A DICOM date (YYYYMMDD) as scanners print it, compacted (no separators, upper case):
    ISO, US, European, with and without zero padding, two-digit years, month names."""
    digits = re.sub(r"\D", "", value)
    if len(digits) != 8:
        return []
    year, month, day = digits[:4], int(digits[4:6]), int(digits[6:8])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return []
    mon, yy = MONTHS[month - 1], year[2:]
    forms = {
        f"{year}{month:02d}{day:02d}",
        f"{month:02d}{day:02d}{year}",
        f"{day:02d}{month:02d}{year}",
        f"{month}{day}{year}",
        f"{day}{month}{year}",
        f"{month:02d}{day:02d}{yy}",
        f"{day:02d}{month:02d}{yy}",
        f"{year}{month}{day}",
        f"{day:02d}{mon}{year}",
        f"{day}{mon}{year}",
        f"{day:02d}{mon}{yy}",
        f"{mon}{day:02d}{year}",
        f"{mon}{day}{year}",
    }
    return sorted(forms, key=len, reverse=True)


class IdentifierMatcher:
    """Whether a line of text read on a frame shows one of the header's identifying values,
    as Presidio's `use_metadata` does, compared after `fold` (case, accents, spaces, ^ and
    commas): a name matches when one of its parts (two letters or more) is a word of the line,
    or a part of four letters or more is inside it (OCR often drops the ^ or the space); a
    patient ID or accession number of four characters or more, and a birth date in any of
    `date_variants`, when inside the compacted line with no digit adjoining (letters OCR
    takes for digits folded on both sides); an institution when its name is inside the line
    or one of its distinctive words (five letters or more, not GENERIC_WORDS) is a word of it.

    `match(text)` returns the kinds matched, never the values; nothing here logs."""

    def __init__(self, identifiers: Iterable[Identifier]) -> None:
        self._names: list[str] = []
        self._codes: list[tuple[str, str]] = []  # (kind, compacted and digit-folded)
        self._dates: list[str] = []
        self._institutions: list[tuple[str, list[str]]] = []
        for identifier in identifiers:
            value = identifier.value or ""
            if identifier.kind == "name":
                self._names += [p for p in fold(value).split() if len(p) >= 2]
            elif identifier.kind in ("patient_id", "accession"):
                code = _compact(value).translate(_DIGIT_FOLD)
                if len(code) >= 4:
                    self._codes.append((identifier.kind, code))
            elif identifier.kind == "birth_date":
                self._dates += [v.translate(_DIGIT_FOLD) for v in date_variants(value)]
            elif identifier.kind == "institution":
                words = [w for w in fold(value).split() if len(w) >= 5 and w not in GENERIC_WORDS]
                if _compact(value):
                    self._institutions.append((_compact(value), words))

    def __bool__(self) -> bool:
        return bool(self._names or self._codes or self._dates or self._institutions)

    @staticmethod
    def _inside(needle: str, folded: str, compact: str) -> bool:
        """`needle` in `folded` (the line, digit-folded) with no digit of the line as read
        (`compact`, same positions) right before or after it."""
        start = folded.find(needle)
        while start >= 0:
            end = start + len(needle)
            before = compact[start - 1] if start else ""
            after = compact[end] if end < len(compact) else ""
            if not before.isdigit() and not after.isdigit():
                return True
            start = folded.find(needle, start + 1)
        return False

    def match(self, text: str) -> list[str]:
        """The kinds of identifier that `text` shows (empty when none)."""
        words = fold(text).split()
        if not words:
            return []
        compact = "".join(words)
        folded = compact.translate(_DIGIT_FOLD)
        kinds: list[str] = []
        if any(p in words or (len(p) >= 4 and p in compact) for p in self._names):
            kinds.append("name")
        for kind, code in self._codes:
            if kind not in kinds and self._inside(code, folded, compact):
                kinds.append(kind)
        if any(self._inside(d, folded, compact) for d in self._dates):
            kinds.append("birth_date")
        if any(
            full in compact or any(w in words for w in distinct)
            for full, distinct in self._institutions
        ):
            kinds.append("institution")
        return kinds


def header_identifiers(ds: object) -> list[Identifier]:
    """The identifying values of a DICOM header (a pydicom Dataset): the patient's name,
    patient ID, birth date, accession number and institution, those present and not empty.
    For matching in the worker's memory before de-identification; never stored."""
    pairs = (
        ("name", "PatientName"),
        ("patient_id", "PatientID"),
        ("birth_date", "PatientBirthDate"),
        ("accession", "AccessionNumber"),
        ("institution", "InstitutionName"),
    )
    found = []
    for kind, keyword in pairs:
        value = getattr(ds, keyword, None)
        text = str(value).strip() if value is not None else ""
        if text:
            found.append(Identifier(kind, text))
    return found
