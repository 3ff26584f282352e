"""ONNX Runtime settings for the detector on a shared CPU: threads and spinning.

    .venv/bin/python -m bench.ort_threads [--runs 10] [--height 480 --width 640]

Runs the committed detector (model/detector/best.onnx) on one input of the given size with
several session settings, interleaved call by call so that every setting sees the same load,
and prints the median and minimum ms of each. ONNX Runtime's worker threads spin while they
wait for work by default, which costs a lot when other processes want the same cores.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTS = Path(__file__).resolve().parents[1] / "model" / "detector" / "best.onnx"
SETTINGS = {
    "threads=all, spinning (default)": (0, True),
    "threads=2, spinning": (2, True),
    "threads=2, no spinning": (2, False),
    "threads=1, no spinning": (1, False),
}


def session(threads: int, spinning: bool) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(
        str(WEIGHTS), sess_options=options, providers=["CPUExecutionProvider"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    args = parser.parse_args()

    batch = np.random.default_rng(0).random((1, 3, args.height, args.width), dtype=np.float32)
    sessions = {name: session(*values) for name, values in SETTINGS.items()}
    for s in sessions.values():
        s.run(None, {s.get_inputs()[0].name: batch})  # warm-up
    times: dict[str, list[float]] = {name: [] for name in sessions}
    load_start = os.getloadavg()
    for _ in range(args.runs):
        for name, s in sessions.items():
            start = time.perf_counter()
            s.run(None, {s.get_inputs()[0].name: batch})
            times[name].append((time.perf_counter() - start) * 1000)
    print(f"input {args.width}x{args.height}, {args.runs} runs each, interleaved")
    print(f"load average at start {load_start}, at end {os.getloadavg()}")
    for name, values in times.items():
        print(f"{name:<34} median {np.median(values):7.1f} ms   min {min(values):7.1f} ms")


if __name__ == "__main__":
    main()
