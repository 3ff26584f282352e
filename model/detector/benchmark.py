"""Milliseconds per image of engine.detection.detector.detect, per backend and input size; prints
JSON.

    python model/detector/benchmark.py                      # 512, 1024, 2048 px; onnx and torch
    python model/detector/benchmark.py --sizes 1024 --backends onnx --runs 30

Inputs are a real ultrasound (deid-data GREYSCALE_IMAGE) resized to each square size, so the
post-processing sees realistic numbers of boxes. Torch and ONNX Runtime both get `--threads`.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--backends", nargs="+", default=["onnx", "torch"])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    # Thread counts must be fixed before either runtime starts its pools.
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
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
