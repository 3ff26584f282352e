"""Measure the detector; prints JSON.

    python model/detector/evaluate.py                       # generated split and real set
    python model/detector/evaluate.py --skip-generated --backend torch --confidence 0.1

(a) generated: the held-out generated validation split (whole images, up to 640 px), scored by
    Ultralytics at imgsz 640: precision, recall, mAP@0.5, mAP@0.5:0.95.
(b) real: the hand-checked real test set (testset/ground_truth.json) through
    engine.detection.detector.detect, as the pipeline calls it:
    - PHI box recall: a phi_text box counts as found when at least 90 % of its area is covered
      by the padded detections (padded as the pipeline pads:
      engine.detection.pipeline.padded_boxes); and by the text-pixel rule, when at least 95 %
      of its writing's pixels are covered (`text_pixels`), the blank between words aside;
    - false regions per image: detections of which less than 20 % of the area lies on any
      annotated box (phi_text, tech_text, other), i.e. boxes on anatomy or graphics;
    - ms per image (wall time of detect(), after one warm-up call).
(c) leave_vendor_out: the same on testset/leave_vendor_out.json, real images from vendors that
    neither the generator nor (b) used (../shared/corpus; skipped with its reason when absent),
    with the figures per vendor group ("per_vendor"), as (b) also reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.detection import detector as detection
from engine.detection import pipeline
from model.detector.testset import (
    GROUND_TRUTH,
    LEAVE_VENDOR_OUT,
    TestImage,
    corpus_available,
    corpus_dir,
    load_frame,
    load_ground_truth,
)

DETECTOR_DIR = Path(__file__).resolve().parent
COVERED = 0.9
# The text-pixel rule (as the outside measurement counts): a box is found when this
# share of its writing's pixels is covered, however wide the blank space between its words.
TEXT_PIXELS_COVERED = 0.95
FALSE_REGION_OVERLAP = 0.2
# Hand-drawn boxes are tight; allow this slack around them when judging a detection.
ANNOTATION_SLACK = 2


def evaluate_generated(weights: Path, data: Path, imgsz: int) -> dict[str, Any]:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    # Ultralytics logs to stdout; keep stdout for the JSON report.
    for handler in LOGGER.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):
        metrics = YOLO(str(weights)).val(
            data=str(data),
            imgsz=imgsz,
            batch=8,
            device="cpu",
            plots=False,
            verbose=False,
            split="val",
            project="/tmp/medimg-detector-val",
            name="val",
            exist_ok=True,
        )
    box = metrics.box
    return {
        "data": str(data),
        "imgsz": imgsz,
        "precision": round(float(box.mp), 4),
        "recall": round(float(box.mr), 4),
        "map50": round(float(box.map50), 4),
        "map50_95": round(float(box.map), 4),
        "per_class_map50": {
            metrics.names[int(c)]: round(float(v), 4)
            for c, v in zip(box.ap_class_index, box.ap50, strict=True)
        },
    }


def coverage_mask(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        mask[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
    return mask


def text_pixels(crop: np.ndarray) -> np.ndarray:
    """The writing inside a hand-checked box: pixels farther from the box's commonest level
    (its background) than 30 % of the way to its farthest pixel, light or dark text alike."""
    grey = (
        crop.astype(np.float32) if crop.ndim == 2 else crop[..., :3].max(axis=2).astype(np.float32)
    )
    background = float(np.median(grey))
    distance = np.abs(grey - background)
    return distance >= 0.3 * max(float(distance.max()), 1.0)


def score_image(
    truth: TestImage, frame: np.ndarray, found: list[detection.Detection], padding: int
) -> dict[str, Any]:
    shape = frame.shape[:2]
    # Padded exactly as the pipeline pads (line completion included).
    padded = [
        b.coords
        for b in pipeline.padded_boxes(
            [pipeline.as_box(0, d) for d in found],
            padding,
            shape[0],
            shape[1],
            display=frame[None],
        )
    ]
    covered = coverage_mask(shape, padded)
    phi = [b for b in truth.boxes if b.cls == "phi_text"]
    missed = []
    ink_missed = 0
    for b in phi:
        share = float(covered[b.y0 : b.y1, b.x0 : b.x1].mean())
        ink = text_pixels(frame[b.y0 : b.y1, b.x0 : b.x1])
        ink_share = float(covered[b.y0 : b.y1, b.x0 : b.x1][ink].mean()) if ink.any() else 1.0
        ink_missed += ink_share < TEXT_PIXELS_COVERED
        if share < COVERED:
            missed.append(
                {
                    "text": b.text,
                    "box": [b.x0, b.y0, b.x1, b.y1],
                    "covered": round(share, 3),
                    "text_pixels_covered": round(ink_share, 3),
                }
            )
    annotated = coverage_mask(
        shape,
        [
            (
                b.x0 - ANNOTATION_SLACK,
                b.y0 - ANNOTATION_SLACK,
                b.x1 + ANNOTATION_SLACK,
                b.y1 + ANNOTATION_SLACK,
            )
            for b in truth.boxes
        ],
    )
    false_regions = []
    for d in found:
        x0, y0, x1, y1 = d.box
        area = annotated[y0:y1, x0:x1]
        if area.size == 0 or float(area.mean()) < FALSE_REGION_OVERLAP:
            false_regions.append(
                {"box": list(d.box), "label": d.label, "confidence": round(d.confidence, 3)}
            )
    return {
        "image": truth.key,
        "phi_boxes": len(phi),
        "phi_found": len(phi) - len(missed),
        "phi_found_text_pixels": len(phi) - ink_missed,
        "detections": len(found),
        "false_regions": false_regions,
        "missed": missed,
    }


def evaluate_real(
    options: dict[str, Any], padding: int, ground_truth: Path = GROUND_TRUTH
) -> dict[str, Any]:
    truths = load_ground_truth(ground_truth)
    frames = [load_frame(t.package, t.file, t.frame, t.sha256) for t in truths]
    detection.detect(frames[0], **options)  # load the model and warm up outside the timing
    per_image, timings = [], []
    for truth, frame in zip(truths, frames, strict=True):
        start = time.perf_counter()
        found = detection.detect(frame, **options)
        timings.append((time.perf_counter() - start) * 1000)
        result = score_image(truth, frame, found, padding)
        result["ms"] = round(timings[-1], 1)
        per_image.append(result)
    phi_total = sum(r["phi_boxes"] for r in per_image)
    phi_found = sum(r["phi_found"] for r in per_image)
    phi_found_ink = sum(r["phi_found_text_pixels"] for r in per_image)
    false_total = sum(len(r["false_regions"]) for r in per_image)
    for truth, result in zip(truths, per_image, strict=True):
        result["vendor"] = truth.vendor
    return {
        "images": len(per_image),
        "phi_boxes": phi_total,
        "phi_box_recall": round(phi_found / phi_total, 4) if phi_total else None,
        "phi_box_recall_text_pixels": round(phi_found_ink / phi_total, 4) if phi_total else None,
        "false_regions_per_image": round(false_total / len(per_image), 3),
        "ms_per_image_median": round(statistics.median(timings), 1),
        "ms_per_image_mean": round(statistics.fmean(timings), 1),
        "padding": f"pipeline.padded_boxes(padding={padding}): line completion, height_ratio 0.25",
        "options": {k: str(v) for k, v in options.items()},
        "per_vendor": per_vendor(per_image),
        "per_image": per_image,
    }


def per_vendor(per_image: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Recall, false regions per image and median ms for each vendor group."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for result in per_image:
        groups.setdefault(result.get("vendor") or "unnamed", []).append(result)
    report = {}
    for vendor, results in sorted(groups.items()):
        phi = sum(r["phi_boxes"] for r in results)
        found = sum(r["phi_found"] for r in results)
        found_ink = sum(r["phi_found_text_pixels"] for r in results)
        report[vendor] = {
            "images": len(results),
            "phi_boxes": phi,
            "phi_found": found,
            "phi_box_recall": round(found / phi, 4) if phi else None,
            "phi_box_recall_text_pixels": round(found_ink / phi, 4) if phi else None,
            "false_regions_per_image": round(
                sum(len(r["false_regions"]) for r in results) / len(results), 3
            ),
            "ms_median": round(statistics.median(r["ms"] for r in results), 1),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-pt", type=Path, default=DETECTOR_DIR / "best.pt")
    parser.add_argument("--data", type=Path, default=Path("/work/data/detector/data.yaml"))
    parser.add_argument("--skip-generated", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--backend", choices=("onnx", "torch"), default="onnx")
    parser.add_argument("--weights", type=Path, help="weights for the real set (by backend)")
    parser.add_argument("--confidence", type=float, default=0.25)
    parser.add_argument("--iou", type=float, default=0.45)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--tile-above", type=int, default=1280)
    parser.add_argument("--padding", type=int, default=4, help="as IMAGING_BOX_PADDING")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--verbose", action="store_true", help="per-image details")
    parser.add_argument(
        "--skip-leave-vendor-out",
        action="store_true",
        help="skip the leave-vendor-out set (skipped anyway when ../shared/corpus is absent)",
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {}
    if not args.skip_generated:
        report["generated"] = evaluate_generated(args.weights_pt, args.data, args.imgsz)
    if not args.skip_real:
        options = {
            "confidence": args.confidence,
            "iou": args.iou,
            "imgsz": args.imgsz,
            "tile_above": args.tile_above,
            "backend": args.backend,
            "weights": args.weights or detection.weights_path(args.backend),
        }
        sets = {"real": GROUND_TRUTH}
        if not args.skip_leave_vendor_out:
            if corpus_available():
                sets["leave_vendor_out"] = LEAVE_VENDOR_OUT
            else:
                report["leave_vendor_out"] = {"skipped": f"no corpus at {corpus_dir()}"}
        for name, truth in sets.items():
            real = evaluate_real(options, args.padding, truth)
            if not args.verbose:
                real["per_image"] = [
                    {k: (len(v) if k == "false_regions" else v) for k, v in r.items()}
                    for r in real["per_image"]
                ]
            report[name] = real
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
