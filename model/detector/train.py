"""Train the sensitive-region detector and publish its weights.

    python model/detector/train.py                       # full run from config.yaml, publishes
    python model/detector/train.py --epochs 1 --n-train 8 --n-val 4 --imgsz 160 --out /tmp/smoke
    python model/detector/train.py --weights model/detector/best.pt --lr0 0.0005 \
        --select-by-real --data /work/data/det/scanners-v2 --out /work/data/det/ft  # warm start
    python model/detector/train.py --resume /work/data/det/ft/runs/detector/weights/last.pt \
        --select-by-real --out /work/data/det/ft                                  # go on

The full run generates the data set (if missing), trains YOLOv8n from scratch, then copies
best.pt to model/detector/best.pt and exports model/detector/best.onnx. A run with --out writes
everything under OUT and publishes nothing unless --publish is given.

--select-by-real keeps a checkpoint of every epoch and, after training, scores each on the real
sets as evaluate.py does (the project's real set, and the leave-vendor-out set when
../shared/corpus is there): PHI recall by the text-pixel rule over both sets first, then the
fewest false regions per image, then the latest epoch. The winner is copied to
weights/best_real.pt, the scores to weights/real_set_selection.json, and it is what --publish
publishes (Ultralytics' own best.pt is chosen by generated-set mAP only).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

DETECTOR_DIR = Path(__file__).resolve().parent


def configure_ultralytics(settings_dir: Path) -> None:
    """Keep Ultralytics offline and its settings file out of the repository (set before import)."""
    settings_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(settings_dir))
    os.environ.setdefault("YOLO_OFFLINE", "1")


def load_config(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def train(
    config: dict[str, Any], data_dir: Path, runs_dir: Path, name: str, resume: Path | None = None
) -> Path:
    """Run Ultralytics training (or resume it from a run's last.pt); returns the run's best.pt."""
    from ultralytics import YOLO

    if resume is not None:
        # Ultralytics takes the run's own arguments (data, epochs, lr...) from the checkpoint.
        YOLO(str(resume)).train(resume=True)
        weights = resume.parent
        best = weights / "best.pt"
        return best if best.exists() else weights / "last.pt"
    params = dict(config["train"])
    # A .pt here fine-tunes those weights (as the second run did); a .yaml starts from scratch.
    model = YOLO(params.pop("model"))
    if params.get("time") is None:
        params.pop("time", None)
    model.train(
        data=str(data_dir / "data.yaml"),
        project=str(runs_dir),
        name=name,
        exist_ok=True,
        seed=config["seed"],
        verbose=True,
        **params,
    )
    weights = runs_dir / name / "weights"
    best = weights / "best.pt"
    return best if best.exists() else weights / "last.pt"


def real_set_score(weights: Path, threads: int = 2) -> dict[str, Any]:
    """evaluate.py's real-set figures for `weights` (a .pt, torch backend), over the project's
    real set and, when ../shared/corpus is there, the leave-vendor-out set."""
    import torch

    from model.detector.evaluate import evaluate_real
    from model.detector.testset import GROUND_TRUTH, LEAVE_VENDOR_OUT, corpus_available

    torch.set_num_threads(threads)
    options = {
        "confidence": 0.25,
        "iou": 0.45,
        "imgsz": 640,
        "tile_above": 1280,
        "backend": "torch",
        "weights": weights,
    }
    sets = {"real": GROUND_TRUTH}
    if corpus_available():
        sets["leave_vendor_out"] = LEAVE_VENDOR_OUT
    figures = {name: evaluate_real(options, 4, truth) for name, truth in sets.items()}
    boxes = sum(f["phi_boxes"] for f in figures.values())
    found = sum(r["phi_found_text_pixels"] for f in figures.values() for r in f["per_image"])
    images = sum(f["images"] for f in figures.values())
    false = sum(len(r["false_regions"]) for f in figures.values() for r in f["per_image"])
    return {
        "weights": str(weights),
        "phi_boxes": boxes,
        "phi_recall_text_pixels": round(found / boxes, 4) if boxes else None,
        "false_regions_per_image": round(false / images, 3),
        "sets": {
            name: {
                k: f[k]
                for k in ("phi_box_recall", "phi_box_recall_text_pixels", "false_regions_per_image")
            }
            for name, f in figures.items()
        },
    }


def best_score(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """The best of `real_set_score` results listed oldest first: the highest PHI recall
    (text-pixel rule), then the fewest false regions per image, then the latest."""
    ranked = [
        ((s["phi_recall_text_pixels"] or 0.0, -s["false_regions_per_image"], i), s)
        for i, s in enumerate(scores)
    ]
    return max(ranked, key=lambda pair: pair[0])[1]


def _epoch(path: Path) -> int:
    digits = "".join(c for c in path.stem if c.isdigit())
    return int(digits) if digits else 10**6  # best.pt / last.pt after every epoch file


def select_by_real_set(weights_dir: Path, threads: int = 2) -> Path:
    """Score every checkpoint of a run (epochN.pt, best.pt, last.pt) with `real_set_score`;
    copy the best to weights_dir/best_real.pt and write weights_dir/real_set_selection.json."""
    candidates = sorted(weights_dir.glob("epoch*.pt"), key=_epoch) + [
        p for p in (weights_dir / "best.pt", weights_dir / "last.pt") if p.exists()
    ]
    if not candidates:
        raise FileNotFoundError(f"no checkpoints in {weights_dir}")
    scores = [real_set_score(path, threads) for path in candidates]
    best = best_score(scores)
    chosen = weights_dir / "best_real.pt"
    shutil.copy2(best["weights"], chosen)
    (weights_dir / "real_set_selection.json").write_text(
        json.dumps({"chosen": best["weights"], "scores": scores}, indent=2) + "\n"
    )
    return chosen


def export_onnx(weights: Path, imgsz: int) -> Path:
    """ONNX with a dynamic input size, so tiles and full images share one model."""
    from ultralytics import YOLO

    return Path(
        YOLO(str(weights)).export(
            format="onnx", imgsz=imgsz, dynamic=True, simplify=False, opset=17
        )
    )


def publish(best: Path, imgsz: int, summary: dict[str, Any]) -> None:
    target = DETECTOR_DIR / "best.pt"
    shutil.copy2(best, target)
    onnx_path = export_onnx(target, imgsz)
    summary["onnx"] = str(onnx_path)
    (DETECTOR_DIR / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DETECTOR_DIR / "config.yaml")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--time", type=float, help="training budget in hours")
    parser.add_argument("--n-train", type=int)
    parser.add_argument("--n-val", type=int)
    parser.add_argument("--imgsz", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--out", type=Path, help="folder for data and runs (smoke runs)")
    parser.add_argument("--data", type=Path, help="existing generated data set to train on")
    parser.add_argument("--name", default="detector")
    parser.add_argument("--seed", type=int, help="seed for data generation and training")
    parser.add_argument(
        "--weights", type=Path, help="fine-tune these weights instead of starting from the yaml"
    )
    parser.add_argument("--lr0", type=float, help="initial learning rate (sets optimizer SGD)")
    parser.add_argument(
        "--select-by-real",
        action="store_true",
        help="save every epoch and keep the checkpoint that scores best on the real sets",
    )
    parser.add_argument("--resume", type=Path, help="resume this run's last.pt")
    parser.add_argument("--threads", type=int, default=2, help="torch threads when scoring")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="copy best.pt into model/detector and export ONNX (default: no --out)",
    )
    args = parser.parse_args()

    config = load_config(args.config)
    for key in ("epochs", "time", "imgsz", "batch"):
        if getattr(args, key) is not None:
            config["train"][key] = getattr(args, key)
    if args.seed is not None:
        config["seed"] = args.seed
    if args.weights is not None:
        config["train"]["model"] = str(args.weights.resolve())
    if args.lr0 is not None:
        config["train"]["optimizer"] = "SGD"
        config["train"]["lr0"] = args.lr0
        # A warm start: no warm-up at a higher rate (the second run of the card lost mAP so).
        config["train"]["warmup_epochs"] = 0
    if args.select_by_real:
        config["train"]["save_period"] = 1
    for key in ("n_train", "n_val"):
        if getattr(args, key) is not None:
            config["data"][key] = getattr(args, key)
    if args.imgsz is not None and config["data"].get("crop"):
        config["data"]["crop"] = args.imgsz
    if args.out:
        data_dir, runs_dir = args.out / "data", args.out / "runs"
        if args.epochs is not None and args.epochs <= 2:
            config["train"]["close_mosaic"] = 0
        config["train"]["cache"] = False
    else:
        data_dir, runs_dir = Path(config["data"]["out"]), Path(config["runs_dir"])
    if args.data:
        data_dir = args.data
    configure_ultralytics(runs_dir.parent / "ultralytics-settings")

    started = time.time()
    train_dir = data_dir
    if args.resume is None:
        if not (data_dir / "data.yaml").exists():
            from model.detector.generate import generate_dataset

            generate_dataset(
                data_dir,
                config["data"]["n_train"],
                config["data"]["n_val"],
                config["seed"],
                config["data"]["max_side"],
            )
        crop = config["data"].get("crop")
        if crop:
            from model.detector.crops import make_crop_dataset

            train_dir = data_dir.parent / f"{data_dir.name}-crops{crop}"
            if not (train_dir / "data.yaml").exists():
                make_crop_dataset(
                    data_dir, train_dir, crop, config["data"]["crops_per_image"], config["seed"]
                )
    best = train(config, train_dir, runs_dir, args.name, resume=args.resume)
    if args.select_by_real:
        best = select_by_real_set(best.parent, args.threads)
    summary = {
        "weights": str(best),
        "data": str(data_dir),
        "config": config,
        "wall_seconds": round(time.time() - started, 1),
    }
    print(json.dumps(summary, indent=2, default=str))
    if args.publish or not args.out:
        # Exported for 640 px inputs: the network is fully convolutional, crops were for speed.
        publish(best, 640, summary)


if __name__ == "__main__":
    main()
