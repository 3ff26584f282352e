"""What the second opinion (engine.detection.ocr) costs and what it finds, on the project's
hand-checked real test set (model/detector/testset/ground_truth.json).

    python -m bench.second_opinion [--scopes off,bands,margins,full] [--repeat 3] [--threads 1]
    python -m bench.second_opinion --match [--set leave_vendor_out]

Each image goes through `pipeline.pipeline_run` with the shipped YOLO detector (ONNX), once
per scope. Printed per scope: the median time per image, the median time the second opinion
added, the images it flagged, and what it found outside every region, sorted against the
ground truth: "phi" overlaps a hand-checked patient-text box (a real catch: text the
detector left), "text" overlaps other hand-checked text (technical text left unredacted, a
legitimate flag that costs a technician a look), "other" overlaps no hand-checked text (a
false flag). One JSON line per scope, then a table.

With --match, the second opinion also reads (engine.detection.ocr.TextReader) and compares
with each file's own DICOM header (IdentifierMatcher, as the worker does): per scope, the
median time the reading added ("header_match_ms") and the header matches found. Then a
reading check that does not depend on the detector: every hand-checked phi_text box is read
on the unredacted frame and matched against the header; printed are the boxes whose
hand-written text shows a header value ("expected", by the same matcher on the ground truth's
text) and those the reader's text matched, with the median ms per box read. `--set
leave_vendor_out` runs on testset/leave_vendor_out.json (needs ../shared/corpus).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from engine.crypto import envelope as crypto
from engine.detection import detector as detection
from engine.detection import pipeline
from engine.detection.ocr import IdentifierMatcher, TextFinder, TextReader, header_identifiers
from model.detector.testset import (
    GROUND_TRUTH,
    LEAVE_VENDOR_OUT,
    image_path,
    load_frame,
    load_ground_truth,
)


def _image(frame: np.ndarray) -> Any:
    return SimpleNamespace(
        kind="png",
        pixels=frame[np.newaxis],
        display=frame[np.newaxis],
        frames=1,
        height=frame.shape[0],
        width=frame.shape[1],
    )


def _overlap(box: tuple[int, int, int, int], other: tuple[int, int, int, int]) -> float:
    """The share of `box` under `other`."""
    left, top = max(box[0], other[0]), max(box[1], other[1])
    right, bottom = min(box[2], other[2]), min(box[3], other[3])
    area = (box[2] - box[0]) * (box[3] - box[1])
    return max(0, right - left) * max(0, bottom - top) / area if area else 0.0


def classify(found: tuple[int, int, int, int], truth: Any) -> str:
    for cls in ("phi_text", None):
        for t in truth.boxes:
            if (cls is None or t.cls == cls) and (
                _overlap(found, (t.x0, t.y0, t.x1, t.y1)) >= 0.3
                or _overlap((t.x0, t.y0, t.x1, t.y1), found) >= 0.3
            ):
                return "phi" if cls else "text"
    return "other"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scopes", default="off,bands,margins,full")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--match", action="store_true", help="read and match the header")
    parser.add_argument("--set", choices=("real", "leave_vendor_out"), default="real")
    args = parser.parse_args(argv)
    truths = load_ground_truth(GROUND_TRUTH if args.set == "real" else LEAVE_VENDOR_OUT)
    frames = [load_frame(t.package, t.file, t.frame, t.sha256) for t in truths]
    reader = TextReader(threads=args.threads) if args.match else None
    matchers = [_matcher(t) for t in truths] if args.match else [None] * len(truths)
    weights = detection.weights_path("onnx")

    def detect(frame: np.ndarray) -> list[Any]:
        return detection.detect(frame, backend="onnx", weights=weights)

    finder = TextFinder(threads=args.threads)
    detect(frames[0])
    finder(frames[0])  # load both models outside the timing
    rows = []
    for scope in args.scopes.split(","):
        times, added, flagged, reading, matched_images = [], [], 0, [], 0
        kinds = {"phi": 0, "text": 0, "other": 0}
        matched_kinds: dict[str, int] = {}
        for truth, frame, matcher in zip(truths, frames, matchers, strict=True):
            match: dict[str, Any] = {}
            if reader is not None and matcher and scope != "off":
                match = {"read_text": reader.read, "match_identifiers": matcher.match}
            best: dict[str, Any] | None = None
            for _ in range(args.repeat):
                timings: dict[str, float] = {}
                started = time.perf_counter()
                result = pipeline.pipeline_run(
                    image=_image(frame),
                    data_key=crypto.new_data_key(),
                    scan_ref="bench",
                    detector=detect,
                    timings=timings,
                    second_opinion=None if scope == "off" else finder.search,
                    second_opinion_scope="margins" if scope == "off" else scope,
                    **match,
                )
                ms = (time.perf_counter() - started) * 1000
                if best is None or ms < best["ms"]:
                    best = {"ms": ms, "result": result, "timings": timings}
            assert best is not None
            times.append(best["ms"])
            added.append(best["timings"].get("second_opinion_ms", 0.0))
            reading.append(best["timings"].get("header_match_ms", 0.0))
            header_matches = best["result"].metrics.get("header_matches", [])
            matched_images += bool(header_matches)
            for m in header_matches:
                for kind in m["kinds"]:
                    matched_kinds[kind] = matched_kinds.get(kind, 0) + 1
            found = [
                b
                for b in best["result"].leftovers
                if b.label in (pipeline.OCR_LABEL, pipeline.HEADER_MATCH_LABEL)
            ]
            flagged += bool(found)
            for b in found:
                kinds[classify(b.coords, truth)] += 1
        row = {
            "scope": scope,
            "images": len(frames),
            "ms_per_image_median": round(statistics.median(times), 1),
            "second_opinion_ms_median": round(statistics.median(added), 1),
            "images_flagged": flagged,
            "found_phi": kinds["phi"],
            "found_other_text": kinds["text"],
            "found_no_text": kinds["other"],
        }
        if args.match:
            row["header_match_ms_median"] = round(statistics.median(reading), 1)
            row["header_match_ms_max"] = round(max(reading), 1)
            row["images_with_header_matches"] = matched_images
            row["header_match_kinds"] = matched_kinds
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(
        "| scope | ms/image (median) | added by the second opinion | images flagged "
        "| PHI left found | other text | no text |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['scope']} | {r['ms_per_image_median']} | {r['second_opinion_ms_median']} | "
            f"{r['images_flagged']}/{r['images']} | {r['found_phi']} | {r['found_other_text']} | "
            f"{r['found_no_text']} |"
        )
    if reader is not None:
        print(json.dumps(reading_check(truths, frames, matchers, reader)), flush=True)
    return 0


def _matcher(truth: Any) -> IdentifierMatcher | None:
    """The matcher of a test file's own header (None when it has no identifying value)."""
    import pydicom

    ds = pydicom.dcmread(
        image_path(truth.package, truth.file, truth.sha256), stop_before_pixels=True
    )
    matcher = IdentifierMatcher(header_identifiers(ds))
    return matcher if matcher else None


def reading_check(
    truths: list[Any], frames: list[np.ndarray], matchers: list[Any], reader: TextReader
) -> dict[str, Any]:
    """Every hand-checked phi_text box read on its unredacted frame and matched against its
    file's header: how many show a header value by their ground-truth text ("expected"), how
    many the reader's text matched ("matched"; "matched_expected" of the expected ones), and
    the median ms per box read. Counts only: no text is printed."""
    expected = matched = matched_expected = boxes = 0
    per_box: list[float] = []
    for truth, frame, matcher in zip(truths, frames, matchers, strict=True):
        if not matcher:
            continue
        for t in truth.boxes:
            if t.cls != "phi_text":
                continue
            boxes += 1
            started = time.perf_counter()
            (text,) = reader.read(frame, [(t.x0 - 2, t.y0 - 2, t.x1 + 2, t.y1 + 2)])
            per_box.append((time.perf_counter() - started) * 1000)
            truth_shows = bool(t.text and matcher.match(t.text))
            read_shows = bool(matcher.match(text))
            expected += truth_shows
            matched += read_shows
            matched_expected += truth_shows and read_shows
    return {
        "reading_check": "phi_text boxes of files with header identifiers",
        "boxes": boxes,
        "expected": expected,
        "matched": matched,
        "matched_expected": matched_expected,
        "ms_per_box_median": round(statistics.median(per_box), 1) if per_box else None,
    }


if __name__ == "__main__":
    sys.exit(main())
