"""Choose a per-class logit offset on validation data and bake it into a model's output bias.

    python -m model.segmentation.calibrate --model DIR --data VAL_DIR --tune 3 \
        [--offsets -0.5,-0.25,0,0.25,0.5,0.75,1,1.25,1.5] [--threads 1] [--apply]

A network trained with Dice + cross-entropy on one class mix can be biased against a class
(here: white matter called grey matter where it is thin). Adding a constant to one class's
logit moves the decision boundary between it and the others without retraining. This scores
each offset on VAL_DIR (validation data: never the test split) with the model's own
preprocessing and its `test_time_flip` setting, by the mean per-case Dice of the foreground
classes (the figure the model card's targets use), and prints the table. `--apply` adds the
best offset to the bias of the network's last convolution for that class (the logits then
shift by exactly that constant, checked), rewrites weights.pt, re-exports model.onnx, and
records the offset and the table in config.json "training" "calibration".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from engine.segmentation.model import (
    ONNX_FILE,
    WEIGHTS_FILE,
    ModelConfig,
    Segmenter,
    build_network,
    prepare_input,
)
from model.segmentation.dataset import iter_cases


def log_probabilities(
    model_dir: Path, data: Path, threads: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    import torch

    torch.set_num_threads(threads)
    segmenter = Segmenter.load(model_dir, backend="onnx", threads=threads)
    logs, masks = [], []
    for case in iter_cases(data):
        p = segmenter.probabilities(prepare_input(case.image, segmenter.config))
        logs.append(np.log(np.maximum(p, 1e-8)).astype(np.float32))
        masks.append(case.mask)
    return logs, masks


def mean_dice(
    logs: list[np.ndarray], masks: list[np.ndarray], k: int, offset: float, classes: list[int]
) -> dict[int, float]:
    scores: dict[int, list[float]] = {c: [] for c in classes}
    for log_p, mask in zip(logs, masks, strict=True):
        shifted = log_p.copy()
        shifted[k] += offset
        prediction = np.argmax(shifted, axis=0)
        for c in classes:
            pred, ref = prediction == c, mask == c
            denominator = int(pred.sum() + ref.sum())
            if denominator:
                scores[c].append(2.0 * int((pred & ref).sum()) / denominator)
    return {c: round(float(np.mean(v)), 4) for c, v in scores.items()}


def output_bias(network: Any, k: int, classes: int) -> Any:
    """The bias parameter that shifts logit k alone when changed (found by trying)."""
    import torch

    side = (32, 32) if network_dims(network) == 2 else (16, 16, 16)
    probe = torch.randn(1, 1, *side)
    with torch.inference_mode():
        before = network(probe)
    for name, parameter in reversed(list(network.named_parameters())):
        if not name.endswith("bias") or tuple(parameter.shape) != (classes,):
            continue
        with torch.no_grad():
            parameter[k] += 1.0
        with torch.inference_mode():
            after = network(probe)
        with torch.no_grad():
            parameter[k] -= 1.0
        change = (after - before).numpy()[0].reshape(classes, -1)
        expected = np.zeros((classes, 1))
        expected[k] = 1.0
        if np.allclose(change, expected, atol=1e-4):
            return parameter
    raise ValueError("no output bias shifts that logit alone")


def network_dims(network: Any) -> int:
    return int(getattr(network, "dimensions", 2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--tune", type=int, required=True, help="class index whose logit moves")
    parser.add_argument("--offsets", default="-0.5,-0.25,0,0.25,0.5,0.75,1,1.25,1.5")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--apply", action="store_true")
    args = parser.parse_args(argv)
    config = ModelConfig.load(args.model)
    foreground = [c for c in sorted(config.classes) if c != 0]
    logs, masks = log_probabilities(args.model, args.data, args.threads)
    table = []
    for offset in (float(v) for v in args.offsets.split(",")):
        dice = mean_dice(logs, masks, args.tune, offset, foreground)
        table.append({"offset": offset, **{config.classes[c]: v for c, v in dice.items()}})
        print(json.dumps(table[-1]), flush=True)
    # The tuned class and the others it trades pixels with: mean Dice over the foreground.
    best = max(table, key=lambda row: np.mean([row[config.classes[c]] for c in foreground]))
    print(json.dumps({"best": best}))
    if args.apply and best["offset"] != 0.0:
        import torch

        from model.segmentation.train import export_onnx

        network = build_network(config.network)
        weights = args.model / WEIGHTS_FILE
        network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        network.eval()
        bias = output_bias(network, args.tune, config.network.out_channels)
        with torch.no_grad():
            bias[args.tune] += best["offset"]
        torch.save(network.state_dict(), weights)
        gap = export_onnx(network, config, args.model / ONNX_FILE)
        config.training["calibration"] = {
            "class": config.classes[args.tune],
            "logit_offset": best["offset"],
            "data": str(args.data),
            "table": table,
            "onnx_max_abs_logit_gap": gap,
        }
        config.save(args.model)
        print(json.dumps({"applied": best["offset"], "onnx_max_abs_logit_gap": gap}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
