"""Redact burned-in text from image files in a batch, outside the web app.

    python manage.py redact INPUT... --out DIR [--preview-png] [--padding N] [--classes a,b]
                                    [--weights PATH --backend onnx|torch] [--no-scanner-rules]

INPUT is a JPEG, PNG or DICOM file, or a folder (searched recursively for them). For each
image it writes `<stem>.redacted.<ext>` under DIR in the image's own format:
- JPEG/PNG: the decoded pixels (EXIF orientation applied, no metadata) with the regions
  filled, as PNG (lossless) or JPEG (quality 95);
- DICOM: the same dataset with only its pixel data redacted (every frame of a multi-frame
  file detected and filled on its own), through `engine.dicom.io.write_redacted_dataset`,
  uncompressed or losslessly compressed as DICOM_OUTPUT_SYNTAX says (never lossy). The
  header is NOT de-identified here, and Burned In Annotation is left as the file had it (no
  verification pass runs here to confirm the frames clean).
With `--preview-png`, also `<stem>.redacted.preview.png` (8-bit rendering; one file per frame,
`.preview-<n>.png`, for multi-frame DICOM).

The work is the web pipeline's own code, chosen as processing chooses it (imaging.jobs.batch):
`validate_upload` decodes and checks the file, the configured detector
(`settings.IMAGING_DETECTOR`) runs on the display frames through
`pipeline.detect_frames`, `pipeline.padded_boxes` pads and orders the boxes and
`pipeline.fill_frames` fills them, with `IMAGING_REDACT_CLASSES` and `IMAGING_BOX_PADDING` as
defaults. The scanner rules that match a DICOM's Manufacturer and Manufacturer Model Name
(imaging.models.ScannerRule, managed in Django admin) add their boxes on every frame, class
"scanner_rule" (`--no-scanner-rules` leaves them out; without it a database that cannot be
read stops the command before the first file). Nothing is encrypted or stored: this tool
throws the regions away. Files are read whole; there is no upload size limit here, but
`UPLOAD_MAX_PIXELS` applies.

stdout gets one JSON line per input file, in input order:
    {"input", "output", "format", "frames", "regions": [{"frame", "class", "confidence",
     "box": [x0, y0, x1, y1]}], "preview": [...], "second_opinion": [{"frame", "box",
     "score"}], "ms": total, "stages_ms": {...}}
where each box is the filled (padded, half-open) rectangle in pixel coordinates, and
"second_opinion" is text that the OCR second opinion (IMAGING_SECOND_OPINION) still found
outside every filled box: not filled, listed for a person to check (empty when off); for DICOM
(IMAGING_SECOND_OPINION_MATCH) such text is read and, when it shows the header's name, patient
ID, birth date, accession number or institution, filled as a "header_match" region and listed
with "matched": [field kinds] (never the text). A file that
cannot be redacted gets {"input", "error": {"code", "message"}, "ms"} (the ImagingError code,
or `unreadable_file`/`write_failed`), the others go on, and the command exits with status 1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from engine.detection import pipeline
from engine.dicom import io as dicom
from engine.errors import ImagingError
from engine.intake.validation import DecodedImage, sniff_kind
from engine.pixels.restoration import encode_image
from imaging.jobs.batch import (
    FileFailed,
    batch_detector,
    failure_record,
    file_decode,
    fixed_boxes,
    write_atomic,
)
from imaging.jobs.detector import second_opinion, text_reader
from imaging.models import ScannerRule

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".dcm", ".dicom"})
SUFFIX_FOR_KIND = {"jpeg": ".jpg", "png": ".png", "dicom": ".dcm"}
KIND_SUFFIXES = {
    "jpeg": {".jpg", ".jpeg"},
    "png": {".png"},
    "dicom": {".dcm", ".dicom"},
}
SNIFF_BYTES = 132  # enough for the DICOM preamble and "DICM"
JPEG_QUALITY = 95


def iter_inputs(paths: list[str]) -> Iterator[Path]:
    """Files as given; folders searched recursively (sorted) for JPEG, PNG and DICOM files.

    A folder's file counts as an image by its suffix or, for DICOM files that have none, by
    its first bytes, so a corrupt `.png` is still reported rather than silently skipped.
    """
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            yield path
            continue
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            if child.suffix.lower() in IMAGE_SUFFIXES or _looks_like_image(child):
                yield child


def _looks_like_image(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return sniff_kind(handle.read(SNIFF_BYTES)) is not None
    except OSError:
        return False


def output_name(source: Path, kind: str) -> str:
    """`<stem>.redacted.<ext>`: the source's suffix when it names the format, else the usual."""
    suffix = source.suffix.lower()
    if suffix in KIND_SUFFIXES[kind]:
        return f"{source.stem}.redacted{source.suffix}"
    # "scan.dcm" read as PNG is a PNG; a DICOM without a suffix keeps its whole name.
    stem = source.stem if suffix in IMAGE_SUFFIXES else source.name
    return f"{stem}.redacted{SUFFIX_FOR_KIND[kind]}"


def encode_redacted(image: DecodedImage, source: bytes, redacted: Any) -> bytes:
    """The redacted pixels in the input's own format."""
    if image.kind == "dicom":
        return dicom.write_redacted_dataset(source, redacted, syntax=settings.DICOM_OUTPUT_SYNTAX)
    if image.kind == "png":
        return encode_image(redacted[0], "png")
    return encode_image(redacted[0], "jpeg", quality=JPEG_QUALITY)


def second_look(
    image: DecodedImage, boxes: list[pipeline.Box], source: bytes = b""
) -> tuple[list[dict[str, Any]], list[pipeline.Box]]:
    """What the second opinion (IMAGING_SECOND_OPINION, engine.detection.ocr) finds on the
    redacted frames outside every filled box: text this run left, for a person to check.
    For a DICOM file (`source`, with IMAGING_SECOND_OPINION_MATCH) that text is also read and
    compared with the header's identifying values: a match (listed with "matched": the field
    kinds, never the text) is returned as a box to fill, class "header_match"."""
    opinion = second_opinion()
    if opinion is None:
        return [], []
    search, scope = opinion
    match = None
    if image.kind == "dicom" and source and settings.IMAGING_SECOND_OPINION_MATCH:
        from engine.detection.ocr import IdentifierMatcher, header_identifiers

        matcher = IdentifierMatcher(
            header_identifiers(dicom.read_dataset(source, stop_before_pixels=True))
        )
        match = matcher.match if matcher else None
    display = pipeline.fill_frames(image.display, boxes)
    found: list[pipeline.Box] = []
    matched: dict[pipeline.Box, list[str]] = {}
    for f in range(display.shape[0]):
        covering = [b for b in boxes if b.frame == f]
        windows = pipeline.opinion_windows(display.shape[1:3], [b.coords for b in covering], scope)
        texts = [
            pipeline.Box(f, pipeline.OCR_LABEL, float(t.score), *t.coords)
            for t in search(display[f], windows)
        ]
        for box in texts:
            if not pipeline.covered(box, covering + found, share=0.5):
                found.append(box)
        unread = [b for b in texts if not pipeline.covered(b, covering, share=0.9)]
        if match is not None and unread:
            for box, text in zip(
                unread, text_reader()(display[f], [b.coords for b in unread]), strict=True
            ):
                kinds = list(match(text))
                if kinds:
                    matched[box] = kinds
    spots = [b for b in found if not any(pipeline.covered(b, [m], share=0.5) for m in matched)]
    listed = [
        {"frame": b.frame, "box": list(b.coords), "score": round(b.confidence, 4)} for b in spots
    ] + [
        {"frame": b.frame, "box": list(b.coords), "score": round(b.confidence, 4), "matched": kinds}
        for b, kinds in matched.items()
    ]
    fills = [pipeline.Box(b.frame, pipeline.HEADER_MATCH_LABEL, 1.0, *b.coords) for b in matched]
    return listed, fills


class Command(BaseCommand):
    help = "Redact burned-in text from JPEG, PNG and DICOM files (one JSON line per file)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files or folders")
        parser.add_argument("--out", required=True, type=Path, help="output folder")
        parser.add_argument(
            "--preview-png", action="store_true", help="also write an 8-bit PNG of each result"
        )
        parser.add_argument(
            "--padding",
            type=int,
            default=None,
            help="pixels added around each box (default: IMAGING_BOX_PADDING)",
        )
        parser.add_argument(
            "--classes",
            default=None,
            help="comma-separated detector classes to fill (default: IMAGING_REDACT_CLASSES, "
            "empty meaning all)",
        )
        parser.add_argument(
            "--weights", default=None, help="detector weights file (YOLO detector only)"
        )
        parser.add_argument(
            "--backend", choices=("onnx", "torch"), default=None, help="detector backend"
        )
        parser.add_argument(
            "--no-scanner-rules",
            action="store_true",
            help="do not add the scanner rules' boxes (for a machine without the database)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        out_dir: Path = options["out"]
        if out_dir.exists() and not out_dir.is_dir():
            raise CommandError(f"--out {out_dir} is not a folder")
        padding = settings.IMAGING_BOX_PADDING if options["padding"] is None else options["padding"]
        if padding < 0:
            raise CommandError("--padding must be 0 or more")
        if options["classes"] is None:
            classes = tuple(settings.IMAGING_REDACT_CLASSES)
        else:
            classes = tuple(c.strip() for c in options["classes"].split(",") if c.strip())
        detector = batch_detector(options["weights"], options["backend"])
        rules = not options["no_scanner_rules"]
        if rules:
            # Said once, before any file: a run that silently skipped the rules would leave
            # text that the admin's rules exist to cover.
            try:
                ScannerRule.objects.exists()
            except DatabaseError as exc:
                raise CommandError(
                    f"cannot read the scanner rules from the database ({exc}); run "
                    "`manage.py migrate`, or pass --no-scanner-rules to redact without them"
                ) from None

        inputs = list(iter_inputs(options["inputs"]))
        if not inputs:
            raise CommandError("no JPEG, PNG or DICOM files found in the inputs")
        used: set[Path] = set()
        failed = 0
        for source in inputs:
            record = self._one(
                source,
                out_dir,
                used,
                detector=detector,
                classes=classes,
                padding=padding,
                preview=options["preview_png"],
                rules=rules,
            )
            failed += "error" in record
            self.stdout.write(json.dumps(record, sort_keys=True))
        if failed:
            # After every file: one bad file must not stop a batch.
            raise CommandError(f"{failed} of {len(inputs)} files could not be redacted")

    def _one(
        self,
        source: Path,
        out_dir: Path,
        used: set[Path],
        *,
        detector: pipeline.Detector,
        classes: tuple[str, ...],
        padding: int,
        preview: bool,
        rules: bool = True,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        stages: dict[str, float] = {}
        try:
            try:
                data = source.read_bytes()
            except OSError as exc:
                raise FileFailed("unreadable_file", f"{exc.strerror or exc}") from exc
            with pipeline.timed(stages, "decode_ms"):
                image = file_decode(source.name, data)
            height, width = int(image.display.shape[1]), int(image.display.shape[2])
            with pipeline.timed(stages, "detect_ms"):
                found = pipeline.detect_frames(image.display, detector, classes=classes)
            boxes = pipeline.padded_boxes(found, padding, height, width, display=image.display)
            # The scanner rules (imaging.models.ScannerRule) cover their boxes on every frame.
            if rules:
                boxes += pipeline.rule_boxes(fixed_boxes(image), image.frames, height, width)
            with pipeline.timed(stages, "second_opinion_ms"):
                leftovers, matched = second_look(image, boxes, data)
            # A header value the second opinion read where nothing covers it: filled too.
            boxes += matched
            with pipeline.timed(stages, "redact_ms"):
                redacted = pipeline.fill_frames(image.pixels, boxes)
            with pipeline.timed(stages, "write_ms"):
                target = self._target(out_dir, source, image.kind, used)
                write_atomic(target, encode_redacted(image, data, redacted))
                previews = self._previews(target, image, boxes) if preview else []
        except ImagingError as exc:
            return failure_record(str(source), exc.code, exc.message, started)
        except FileFailed as exc:
            return failure_record(str(source), exc.code, exc.message, started)
        except (OSError, ValueError) as exc:
            # A full disk, or pixels no encoder takes: this file fails, the batch goes on.
            return failure_record(str(source), "write_failed", str(exc), started)
        return {
            "input": str(source),
            "output": str(target),
            "format": image.kind,
            "frames": image.frames,
            "regions": [
                {
                    "frame": box.frame,
                    "class": box.label,
                    "confidence": round(box.confidence, 4),
                    "box": list(box.coords),
                }
                for box in boxes
            ],
            "preview": [str(p) for p in previews],
            "second_opinion": leftovers,
            "ms": round((time.perf_counter() - started) * 1000.0, 1),
            "stages_ms": {k: round(v, 1) for k, v in stages.items()},
        }

    @staticmethod
    def _target(out_dir: Path, source: Path, kind: str, used: set[Path]) -> Path:
        """A free name in `out_dir`; a second input with the same stem gets `-2`, `-3`..."""
        name = output_name(source, kind)
        target = out_dir / name
        stem, _, ext = name.partition(".redacted")
        counter = 2
        while target in used:
            target = out_dir / f"{stem}-{counter}.redacted{ext}"
            counter += 1
        used.add(target)
        return target

    @staticmethod
    def _previews(target: Path, image: DecodedImage, boxes: list[pipeline.Box]) -> list[Path]:
        """8-bit PNGs of the redacted rendering: the display frames with the same boxes filled."""
        display = pipeline.fill_frames(image.display, boxes)
        base = target.name[: -len(target.suffix)] if target.suffix else target.name
        paths = []
        for index in range(display.shape[0]):
            suffix = ".preview.png" if display.shape[0] == 1 else f".preview-{index + 1}.png"
            path = target.with_name(base + suffix)
            write_atomic(path, encode_image(display[index], "png"))
            paths.append(path)
        return paths
