"""Where a brain-tissue model fails: per-case Dice against anatomy and augmentation draws.

    python -m model.segmentation.brain_tissue_analysis --model model/segmentation/brain-tissue \
        --data /work/data/seg/brain-tissue/test [--seed 20261121] [--threads 1] [--flip]
        [--json OUT.json] [--draws EARLIER.json]

For every case of a split written by brain_tissue_data.py, the model segments the image as
`cli evaluate` does (same Segmenter, same preprocessing) and the case's augmentation is drawn
again from its seed (`manifest.json` has the slice and seed index; the draws are replayed,
and the regenerated image is checked against the PNG, so the parameters are the ones that
made it). The report groups the per-case grey- and white-matter Dice by slab, by the
white-matter area of the slice, and by each augmentation parameter (resolution loss, noise,
bias field, grey/white contrast gap, gamma, warp), and adds pooled Dice (all pixels of the
split at once) per slab. These are diagnostics next to the per-slice held-out figures of the
model card, not a replacement for them. `--flip` also scores left-right flip averaging of
the softmax (the network run on the image and on its mirror). `--draws` takes the draws from
an earlier report of the same split (`--json`) instead of replaying them (much faster).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from engine.segmentation.model import Segmenter, prepare_input
from model.segmentation.brain_tissue_data import DEFAULT_SEED, case_seed, load_template, sample
from model.segmentation.dataset import case_index, load_case, load_classes

GM, WM = 2, 3
DRAWN = (
    "rotation_deg", "scale", "shear", "elastic_px", "means", "spreads", "gm_wm_gap",
    "resolution", "bias", "noise_sigma", "rician", "gamma",
)  # fmt: skip


def dice(prediction: np.ndarray, truth: np.ndarray, k: int) -> float:
    pred, ref = prediction == k, truth == k
    denominator = int(pred.sum() + ref.sum())
    return 2.0 * int((pred & ref).sum()) / denominator if denominator else float("nan")


def case_rows(
    model_dir: Path,
    data: Path,
    *,
    seed: int,
    threads: int,
    flip: bool,
    draws: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(threads)
    manifest = json.loads((data / "manifest.json").read_text())
    classes = load_classes(data)
    segmenter = Segmenter.load(model_dir, backend="onnx", threads=threads)
    template = load_template()
    index = case_index(data)
    rows = []
    for entry in manifest:
        case = load_case(data, str(entry["case"]), classes, index)
        record: dict[str, Any] = {}
        if draws is not None:
            record = dict(draws[str(entry["case"])])
        else:
            image, labels = sample(
                template,
                int(entry["slice"]),
                case_seed(str(entry["case"]).split("-")[0], int(entry["seed_index"]), seed),
                case.image.shape[0],
                record,
            )
            if not np.array_equal(labels, case.mask) or (
                np.abs(np.round(image * 255) - case.image).max() > 1
            ):
                raise ValueError(f"{entry['case']}: regenerated case differs; wrong --seed?")
        prepared = prepare_input(case.image, segmenter.config)
        probabilities = segmenter.probabilities(prepared)
        prediction = np.argmax(probabilities, axis=0)
        row: dict[str, Any] = {
            "case": entry["case"],
            "slab": int(entry["slab"]),
            "slice": int(entry["slice"]),
            "wm_area": int((case.mask == WM).sum()),
            "gm_area": int((case.mask == GM).sum()),
            "dice_gm": dice(prediction, case.mask, GM),
            "dice_wm": dice(prediction, case.mask, WM),
            "wm_called_gm": int(((case.mask == WM) & (prediction == GM)).sum()),
            "gm_called_wm": int(((case.mask == GM) & (prediction == WM)).sum()),
            "max_resolution": max(record["resolution"]),
            **{k: v for k, v in record.items() if k in DRAWN},
            "wm_brighter": (
                record["means"][3] > record["means"][2]
                if "means" in record
                else bool(record["wm_brighter"])  # an earlier report without the means
            ),
            "prediction": prediction.astype(np.uint8),
            "truth": case.mask,
        }
        if flip:
            mirrored = segmenter.probabilities(np.ascontiguousarray(prepared[:, ::-1]))[..., ::-1]
            averaged = np.argmax(probabilities + mirrored, axis=0)
            row["flip_dice_gm"] = dice(averaged, case.mask, GM)
            row["flip_dice_wm"] = dice(averaged, case.mask, WM)
        rows.append(row)
    return rows


BANDS: dict[str, list[float]] = {
    "slab": [],  # one group per slab
    "wm_area": [0, 2000, 4000, 6000, 8000, 1e9],
    "max_resolution": [1.0, 1.001, 1.5, 2.0, 2.5, 3.01],
    "noise_sigma": [0, 0.015, 0.03, 0.045, 0.061],
    "bias": [0, 0.1, 0.2, 0.3, 0.36],
    "gm_wm_gap": [0.12, 0.2, 0.3, 0.45, 0.6, 1.0],
    "gamma": [0.6, 0.85, 1.0, 1.2, 1.5],
    "elastic_px": [0, 1, 2, 3, 4.01],
    "scale": [0.8, 0.95, 1.05, 1.2],
    "rician": [],
    "wm_brighter": [],
}


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def group_stats(members: list[dict[str, Any]]) -> dict[str, Any]:
        truth = np.concatenate([r["truth"].ravel() for r in members])
        prediction = np.concatenate([r["prediction"].ravel() for r in members])
        stats = {
            "n": len(members),
            "dice_gm": round(float(np.nanmean([r["dice_gm"] for r in members])), 3),
            "dice_wm": round(float(np.nanmean([r["dice_wm"] for r in members])), 3),
            "pooled_dice_gm": round(dice(prediction, truth, GM), 3),
            "pooled_dice_wm": round(dice(prediction, truth, WM), 3),
        }
        for key in ("flip_dice_gm", "flip_dice_wm"):
            if key in members[0]:
                stats[key] = round(float(np.nanmean([r[key] for r in members])), 3)
        return stats

    out: dict[str, Any] = {"all": group_stats(rows)}
    for key, edges in BANDS.items():
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            value = r[key]
            if edges:
                i = int(np.searchsorted(edges, value, side="right")) - 1
                i = min(max(i, 0), len(edges) - 2)
                label = f"[{edges[i]:g}, {edges[i + 1]:g})"
            else:
                label = str(value)
            groups.setdefault(label, []).append(r)
        out[key] = {label: group_stats(m) for label, m in sorted(groups.items())}
    # Which draws go with a low white-matter Dice: Spearman rank correlation per parameter.
    wm = np.array([r["dice_wm"] for r in rows])
    correlations = {}
    for key in ("wm_area", "slice", *[k for k in BANDS if k not in ("slab", "wm_area")]):
        values = np.array([float(r[key]) for r in rows])
        if np.ptp(values) == 0:
            continue
        ranks = np.argsort(np.argsort(values)).astype(float)
        wm_ranks = np.argsort(np.argsort(wm)).astype(float)
        correlations[key] = round(float(np.corrcoef(ranks, wm_ranks)[0, 1]), 3)
    out["spearman_wm_dice"] = correlations
    called = sum(r["wm_called_gm"] for r in rows)
    missed = sum(r["wm_area"] for r in rows) - sum(
        int(((r["truth"] == WM) & (r["prediction"] == WM)).sum()) for r in rows
    )
    out["wm_missed_called_gm_fraction"] = round(called / max(missed, 1), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--flip", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="per-case rows and summary")
    parser.add_argument("--draws", type=Path, default=None, help="an earlier --json report")
    args = parser.parse_args(argv)
    draws = None
    if args.draws:
        draws = {row["case"]: row for row in json.loads(args.draws.read_text())["cases"]}
    rows = case_rows(
        args.model, args.data, seed=args.seed, threads=args.threads, flip=args.flip, draws=draws
    )
    report = summary(rows)
    print(json.dumps(report, indent=1))
    if args.json:
        plain = [{k: v for k, v in r.items() if k not in ("prediction", "truth")} for r in rows]
        args.json.write_text(json.dumps({"summary": report, "cases": plain}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
