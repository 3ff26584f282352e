"""Int8 variants of the detector's ONNX file (ONNX Runtime's quantization tools); prints JSON.

    python model/detector/quantize.py --mode static --images /work/data/detector/images/val \
        --out model/detector/best.int8.onnx
    python model/detector/quantize.py --mode dynamic --out /work/data/quant/dynamic.onnx

static: QDQ format, int8 weights per output channel, uint8 activations, calibrated on generated
    images (`--images`, resized and padded exactly as the detector feeds them) with the chosen
    calibration method. The Detect head's tail (box decoding, the concatenation of pixel box
    coordinates with 0-1 class scores, the sigmoid) stays float: one uint8 scale over a tensor
    that holds both 600 px coordinates and scores would round every score to 0 or 2.5.
dynamic: weights int8, activations quantized at run time (ConvInteger), no calibration.

The float model is first run through `quant_pre_process` (shape inference and ONNX Runtime's
graph optimisation), as ONNX Runtime recommends before quantizing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.detection.detector import to_input

DETECTOR_DIR = Path(__file__).resolve().parent
BRANCHES = ("cv2", "cv3")  # the Detect head's box and class branches


def calibration_batches(images: Path, count: int, imgsz: int, seed: int) -> list[np.ndarray]:
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    random.Random(seed).shuffle(paths)
    batches = []
    for path in paths[:count]:
        bgr = cv2.imread(str(path))
        if bgr is None:
            raise ValueError(f"cannot read calibration image {path}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        # Calibrate on the shape the whole-image pass and the tiles use: a padded square.
        tensor, _ = to_input(rgb, imgsz)
        canvas = np.full((3, imgsz, imgsz), 114 / 255.0, np.float32)
        canvas[:, : tensor.shape[1], : tensor.shape[2]] = tensor[:, :imgsz, :imgsz]
        batches.append(canvas[None])
    return batches


def float_nodes(model_path: Path, ends: bool) -> list[str]:
    """Names of the nodes kept in float: the Detect head's nodes after its last convolutions
    (DFL, decoding, concat, sigmoid); with `ends` also the first convolution (it reads the
    image) and the head's six output convolutions (box and class logits)."""
    import onnx

    model = onnx.load(str(model_path))
    names = [n.name for n in model.graph.node]
    tail = [
        n for n in names if "/model.22/" in n and not any(f"/model.22/{b}" in n for b in BRANCHES)
    ]
    if not ends:
        return tail
    outputs = [f"/model.22/{b}.{i}/{b}.{i}.2/Conv" for b in BRANCHES for i in range(3)]
    return tail + [n for n in names if n == "/model.0/conv/Conv" or n in outputs]


def quantize(args: argparse.Namespace) -> dict[str, Any]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    with tempfile.TemporaryDirectory(prefix="medimg-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(args.model), str(prepared), skip_symbolic_shape=True)
        excluded = float_nodes(prepared, args.float_ends)
        if args.mode == "dynamic":
            quantize_dynamic(
                str(prepared),
                str(args.out),
                weight_type=QuantType.QInt8,
                per_channel=args.per_channel,
                nodes_to_exclude=excluded,
            )
            return {"mode": "dynamic", "excluded_nodes": len(excluded)}

        batches = calibration_batches(args.images, args.count, args.imgsz, args.seed)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = iter(batches)

            def get_next(self) -> dict[str, np.ndarray] | None:
                batch = next(self.items, None)
                return None if batch is None else {"images": batch}

        method = {
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy,
        }[args.calibration]
        quantize_static(
            str(prepared),
            str(args.out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=args.per_channel,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=method,
            nodes_to_exclude=excluded,
            extra_options={"CalibMovingAverage": args.calibration == "minmax"},
        )
        return {
            "mode": "static",
            "format": "QDQ",
            "per_channel": args.per_channel,
            "calibration": args.calibration,
            "calibration_images": len(batches),
            "excluded_nodes": len(excluded),
            "float_ends": args.float_ends,
        }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_source(out: Path, source: Path, report: dict[str, Any]) -> None:
    """Write into the int8 file which float file it was made from and how, so a test can tell
    when best.onnx was retrained and best.int8.onnx not remade."""
    import onnx

    model = onnx.load(str(out))
    entries = {"quantized_from_sha256": sha256(source), "quantization": json.dumps(report)}
    for key, value in entries.items():
        prop = next((p for p in model.metadata_props if p.key == key), None)
        if prop is None:
            prop = model.metadata_props.add()
            prop.key = key
        prop.value = value
    onnx.save(model, str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DETECTOR_DIR / "best.onnx")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mode", choices=("static", "dynamic"), default="static")
    parser.add_argument("--images", type=Path, default=Path("/work/data/detector/images/val"))
    parser.add_argument("--count", type=int, default=64, help="calibration images")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument(
        "--calibration", choices=("minmax", "percentile", "entropy"), default="minmax"
    )
    parser.add_argument("--no-per-channel", dest="per_channel", action="store_false")
    parser.add_argument(
        "--float-ends",
        action="store_true",
        help="also keep the first convolution and the head's output convolutions in float",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report = quantize(args)
    record_source(args.out, args.model, report)
    report["out"] = str(args.out)
    report["bytes"] = args.out.stat().st_size
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
