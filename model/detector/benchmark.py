"""Milliseconds per image of engine.detection.detector.detect, per backend and input size; prints
JSON.

    python model/detector/benchmark.py                      # 512, 1024, 2048 px; onnx and torch
    python model/detector/benchmark.py --sizes 1024 --backends onnx --runs 30

Inputs are a real ultrasound (deid-data GREYSCALE_IMAGE) resized to each square size, so the
post-processing sees realistic numbers of boxes. Torch and ONNX Runtime both get `--threads`.

Detector variants side by side, speed and what they find, on the three sets:

    python model/detector/benchmark.py --compare \
        fp32:weights=model/detector/best.onnx int8:weights=model/detector/best.int8.onnx \
        int8-480:weights=model/detector/best.int8.onnx,imgsz=480 \
        --generated /work/data/detector [--generated-count 80]

Each variant is `name:key=value,...` with detect()'s keywords (weights, imgsz, tile_above,
tiles, confidence). Sets: the generated held-out split (`--generated`: YOLO labels read as
ground truth, every image through detect() as the pipeline calls it), the project's real set
(testset/ground_truth.json) and the leave-vendor-out set (when ../shared/corpus is there).
Every image is run by every variant in turn before the next image, so the machine's load,
which moves on this shared CPU, falls on all variants alike. Per set and variant: PHI recall
(box rule and text-pixel rule, as evaluate.py scores them), false regions per image, median
wall ms and median CPU ms (process time, all threads: less sensitive to other jobs than wall
time, though it counts ONNX Runtime's spinning threads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def benchmark(backend: str, size: int, runs: int, image: np.ndarray) -> dict[str, Any]:
    from engine.detection import detector as detection

    frame = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    for _ in range(2):
        found = detection.detect(frame, backend=backend)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        found = detection.detect(frame, backend=backend)
        timings.append((time.perf_counter() - start) * 1000)
    return {
        "backend": backend,
        "size": size,
        "runs": runs,
        "median_ms": round(statistics.median(timings), 1),
        "p95_ms": round(percentile(timings, 95), 1),
        "detections": len(found),
    }


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key in ("imgsz", "tile_above"):
            options[key] = int(value)
        elif key == "confidence":
            options[key] = float(value)
        else:
            options[key] = value
    return name, options


def generated_set(folder: Path, count: int) -> list[tuple[Any, np.ndarray]]:
    """The generated held-out split as (TestImage, RGB frame): YOLO labels as the truth."""
    from model.detector.testset import TestImage, TruthBox

    classes = ("phi_text", "tech_text", "barcode")
    items = []
    for path in sorted((folder / "images" / "val").glob("*.jpg"))[:count]:
        bgr = cv2.imread(str(path))
        if bgr is None:
            raise ValueError(f"cannot read generated image {path}")
        frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        height, width = frame.shape[:2]
        boxes = []
        label = folder / "labels" / "val" / f"{path.stem}.txt"
        lines = label.read_text().split("\n") if label.exists() else []
        for fields in (line.split() for line in lines if line.strip()):
            cls, cx, cy, w, h = fields
            x0 = round((float(cx) - float(w) / 2) * width)
            y0 = round((float(cy) - float(h) / 2) * height)
            x1 = round((float(cx) + float(w) / 2) * width)
            y1 = round((float(cy) + float(h) / 2) * height)
            boxes.append(TruthBox(classes[int(cls)], x0, y0, x1, y1))
        truth = TestImage("generated", path.name, 0, tuple(boxes), vendor="generated")
        items.append((truth, frame))
    return items


def real_set(path: Path) -> list[tuple[Any, np.ndarray]]:
    from model.detector.testset import load_frame, load_ground_truth

    truths = load_ground_truth(path)
    return [(t, load_frame(t.package, t.file, t.frame, t.sha256)) for t in truths]


def compare(
    variants: list[tuple[str, dict[str, Any]]],
    sets: dict[str, list[tuple[Any, np.ndarray]]],
    padding: int,
) -> dict[str, Any]:
    from engine.detection import detector as detection
    from model.detector.evaluate import score_image

    first = next(iter(sets.values()))[0][1]
    for _, options in variants:
        detection.detect(first, **options)  # load and warm up outside the timing
    report: dict[str, Any] = {}
    for set_name, items in sets.items():
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
        for truth, frame in items:
            for name, options in variants:
                wall, cpu = time.perf_counter(), time.process_time()
                found = detection.detect(frame, **options)
                cpu_ms = (time.process_time() - cpu) * 1000
                wall_ms = (time.perf_counter() - wall) * 1000
                scored = score_image(truth, frame, found, padding)
                scored.update(wall_ms=wall_ms, cpu_ms=cpu_ms, vendor=truth.vendor)
                rows[name].append(scored)
        report[set_name] = {name: summarise(results) for name, results in rows.items()}
    return report


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    phi = sum(r["phi_boxes"] for r in results)
    found = sum(r["phi_found"] for r in results)
    ink = sum(r["phi_found_text_pixels"] for r in results)
    false = sum(len(r["false_regions"]) for r in results)
    return {
        "images": len(results),
        "phi_boxes": phi,
        "phi_found": found,
        "recall": round(found / phi, 4) if phi else None,
        "phi_found_text_pixels": ink,
        "recall_text_pixels": round(ink / phi, 4) if phi else None,
        "false_regions": false,
        "false_per_image": round(false / len(results), 3),
        "wall_ms_median": round(statistics.median(r["wall_ms"] for r in results), 1),
        "cpu_ms_median": round(statistics.median(r["cpu_ms"] for r in results), 1),
        "wall_ms_total": round(sum(r["wall_ms"] for r in results)),
        "missed": [f"{r['image']}: {m['text'] or m['box']}" for r in results for m in r["missed"]],
    }


def print_compare(report: dict[str, Any]) -> None:
    print(f"load average {report['load_start']} -> {report['load_end']}")
    head = f"{'set':<18}{'variant':<22}{'recall':>16}{'text px':>9}{'false/img':>10}"
    print(head + f"{'wall ms':>9}{'cpu ms':>8}{'total s':>9}")
    for set_name, block in report["sets"].items():
        for name, s in block.items():
            recall = f"{s['recall']} ({s['phi_found']}/{s['phi_boxes']})"
            print(
                f"{set_name:<18}{name:<22}{recall:>16}{s['recall_text_pixels']!s:>9}"
                f"{s['false_per_image']:>10}{s['wall_ms_median']:>9}{s['cpu_ms_median']:>8}"
                f"{s['wall_ms_total'] / 1000:>9.1f}"
            )


def main_compare(args: argparse.Namespace) -> None:
    from model.detector.testset import GROUND_TRUTH, LEAVE_VENDOR_OUT, corpus_available

    variants = [parse_variant(v) for v in args.compare]
    sets: dict[str, list[tuple[Any, np.ndarray]]] = {}
    if args.generated:
        sets["generated"] = generated_set(args.generated, args.generated_count)
    sets["real"] = real_set(GROUND_TRUTH)
    if corpus_available():
        sets["leave_vendor_out"] = real_set(LEAVE_VENDOR_OUT)
    load_start = [round(v, 2) for v in os.getloadavg()]
    results = compare(variants, sets, args.padding)
    report = {
        "threads": args.threads,
        "variants": {name: {k: str(v) for k, v in o.items()} for name, o in variants},
        "load_start": load_start,
        "load_end": [round(v, 2) for v in os.getloadavg()],
        "sets": results,
    }
    print_compare(report)
    if args.json_path:
        args.json_path.write_text(json.dumps(report, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", nargs="+", metavar="NAME:KEY=VALUE,...")
    parser.add_argument("--generated", type=Path, help="generated data set folder (--compare)")
    parser.add_argument("--generated-count", type=int, default=160)
    parser.add_argument("--padding", type=int, default=4, help="as IMAGING_BOX_PADDING")
    parser.add_argument("--json", dest="json_path", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--backends", nargs="+", default=["onnx", "torch"])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    # Thread counts must be fixed before either runtime starts its pools.
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.compare:
        main_compare(args)
        return
    import onnxruntime
    import torch

    torch.set_num_threads(args.threads)
    from model.detector.testset import load_frame

    image = load_frame("deid-data", "ultrasounds/GREYSCALE_IMAGE.dcm")
    results = []
    for backend in args.backends:
        for size in args.sizes:
            runs = max(5, args.runs // 4) if size >= 2048 else args.runs
            results.append(benchmark(backend, size, runs, image))
    print(
        json.dumps(
            {
                "cpu": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "threads": args.threads,
                "torch": torch.__version__,
                "onnxruntime": onnxruntime.__version__,
                "load_average_1min": round(os.getloadavg()[0], 2),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
