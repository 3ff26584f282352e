"""Train and evaluate MONAI U-Net segmentation models from the command line (no Django).

    python -m model.segmentation.cli train --data DIR --model unet|attention|residual \\
        --out model/segmentation/NAME/ [--val DIR | --val-fraction 0.1] [--folds K]
        [--epochs 20] [--batch-size 16] [--learning-rate 2e-3] [--channels 16,32,64,128]
        [--strides 2,2,2] [--num-res-units 2] [--spatial-dims 2|3] [--dropout 0]
        [--n4] [--denoise] [--clip 0.5,99.5|none] [--normalise zscore|minmax|none]
        [--max-steps N] [--crop N] [--init-weights weights.pt] [--time-budget S]
        [--seed 0] [--threads 2] [--device cpu|cuda] [--checkpoint] [--resume]

    python -m model.segmentation.cli evaluate --model model/segmentation/NAME --data DIR
        [--backend torch|onnx] [--threads 2] [--resamples 2000] [--seed 0]
        [--card-section "Held-out: ..."]

train: DIR follows model/segmentation/dataset.py (images/, masks/, classes.json). OUT gets
weights.pt, model.onnx, config.json, training_log.json and MODEL_CARD.md; see
model/segmentation/train.py for how validation, k-fold and weight selection work. Progress goes
to stdout as JSON lines; the last line is {"out", "config"}. With --checkpoint every epoch also
writes OUT/checkpoint.pt (and the best weights.pt so far); --resume continues from it when the
same command is run again with --resume added.

evaluate: per class Dice, sensitivity, specificity, precision, AUC and HD95 in mm (with the
data's pixel spacing), each with a bootstrap 95 % CI and a verdict against the clinical
thresholds; a missed structure counts as the worst case (model/segmentation/metrics.py). With
--card-section the report is also written into the model's MODEL_CARD.md under that title
(replacing an earlier section of the same title). Exit status 0 whether or not the model
passes: the verdict is in the JSON ("passed").

A bad option or data set exits with status 1 and the reason on stderr. (These were the
`manage.py train_segmentation` and `evaluate_segmentation` commands, with the same options.)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from engine.segmentation.model import NETWORK_KINDS
from engine.segmentation.preprocessing import PreprocessConfig
from model.segmentation.dataset import DatasetError
from model.segmentation.evaluate import evaluate, update_card
from model.segmentation.train import TrainOptions, train

PROGRAM = "python -m model.segmentation.cli"
FLAGS = ("n4", "denoise", "checkpoint")
RECORDED = (
    "data", "model", "out", "name", "val", "val_fraction", "folds", "epochs", "batch_size",
    "learning_rate", "channels", "strides", "num_res_units", "spatial_dims", "dropout", "n4",
    "denoise", "clip", "normalise", "max_steps", "crop", "init_weights", "time_budget",
    "oversample", "class_weights", "seed", "threads", "device", "checkpoint",
)  # fmt: skip


class CliError(Exception):
    """A bad option or data set: the message goes to stderr and the exit status is 1."""


def int_list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def command_line(options: dict[str, Any]) -> str:
    """The run as one command line with every setting spelled out, for the model card."""
    parts = [*PROGRAM.split(), "train"]
    for key in RECORDED:
        value = options.get(key)
        if value is None or (key in FLAGS and not value):
            continue
        parts.append("--" + key.replace("_", "-"))
        if key in FLAGS:
            continue
        if isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        parts.append(str(value))
    return shlex.join(parts)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", choices=NETWORK_KINDS, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default=None)
    parser.add_argument("--val", type=Path, default=None)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--folds", type=int, default=0, help="k-fold cross-validation first")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--channels", type=int_list, default=(16, 32, 64, 128))
    parser.add_argument("--strides", type=int_list, default=None)
    parser.add_argument("--num-res-units", type=int, default=2)
    parser.add_argument("--spatial-dims", type=int, choices=(2, 3), default=2)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--n4", action="store_true", help="N4 bias-field correction")
    parser.add_argument("--denoise", action="store_true", help="non-local-means denoising")
    parser.add_argument("--clip", default="0.5,99.5", help="percentiles LO,HI or 'none'")
    parser.add_argument("--normalise", choices=("zscore", "minmax", "none"), default="zscore")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument(
        "--init-weights",
        type=Path,
        default=None,
        help="start from this weights.pt (fine-tuning a model of the same network)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds: the learning-rate schedule follows the clock and training stops "
        "when it runs out (the epochs are then an upper bound)",
    )
    parser.add_argument(
        "--crop",
        type=int,
        default=None,
        help="train on random square crops of this side (a multiple of the total stride); "
        "inference still sees whole images",
    )
    parser.add_argument(
        "--oversample",
        type=int_list,
        default=None,
        help="CLASS,MIN_PIXELS,MAX_PIXELS,FACTOR: slices with MIN..MAX pixels of CLASS are "
        "drawn FACTOR times an epoch (emphasis on slices where that class is small)",
    )
    parser.add_argument(
        "--class-weights",
        type=lambda text: tuple(float(v) for v in text.split(",")),
        default=None,
        help="W0,W1,...: per-class weights in the Dice + cross-entropy loss",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1")
    parser.add_argument(
        "--checkpoint",
        action="store_true",
        help="after every epoch write OUT/checkpoint.pt and the best OUT/weights.pt so far",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt (same options as the run that wrote it)",
    )


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--card-section", default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(
        commands.add_parser(
            "train",
            help="train a MONAI U-Net (unet, attention or residual) and write weights, "
            "ONNX and a card",
        )
    )
    add_evaluate_arguments(
        commands.add_parser(
            "evaluate",
            help="per-class Dice, sensitivity, specificity, precision, AUC and HD95 with 95 % CIs",
        )
    )
    return parser


def run_train(options: dict[str, Any], out: TextIO) -> None:
    try:
        clip = None
        if options["clip"].lower() != "none":
            low, high = (float(v) for v in options["clip"].split(","))
            clip = (low, high)
        preprocessing = PreprocessConfig(
            n4=options["n4"],
            denoise=options["denoise"],
            clip=clip,
            normalise=None if options["normalise"] == "none" else options["normalise"],
        )
    except ValueError as error:
        raise CliError(f"bad preprocessing option: {error}") from error
    train_options = TrainOptions(
        data=options["data"],
        model=options["model"],
        out=options["out"],
        name=options["name"],
        val_dir=options["val"],
        val_fraction=options["val_fraction"],
        folds=options["folds"],
        epochs=options["epochs"],
        batch_size=options["batch_size"],
        learning_rate=options["learning_rate"],
        channels=options["channels"],
        strides=options["strides"],
        num_res_units=options["num_res_units"],
        spatial_dims=options["spatial_dims"],
        dropout=options["dropout"],
        preprocessing=preprocessing,
        max_steps=options["max_steps"],
        crop=options["crop"],
        init_weights=options["init_weights"],
        time_budget=options["time_budget"],
        seed=options["seed"],
        threads=options["threads"],
        device=options["device"],
        checkpoint=options["checkpoint"],
        resume=options["resume"],
        oversample=options["oversample"],
        class_weights=options["class_weights"],
        command=command_line(options),
    )

    def log(line: str) -> None:
        print(line, file=out, flush=True)

    try:
        config = train(train_options, log=log)
    except (DatasetError, ValueError) as error:
        raise CliError(str(error)) from error
    print(json.dumps({"out": str(options["out"]), "config": config}), file=out)


def run_evaluate(options: dict[str, Any], out: TextIO) -> None:
    if not (options["model"] / "config.json").is_file():
        raise CliError(f"{options['model']} has no config.json")
    try:
        report = evaluate(
            options["model"],
            options["data"],
            backend=options["backend"],
            threads=options["threads"],
            resamples=options["resamples"],
            seed=options["seed"],
        )
    except (DatasetError, ValueError) as error:
        raise CliError(str(error)) from error
    if options["card_section"]:
        update_card(options["model"], options["card_section"], report)
    print(json.dumps(report, indent=2), file=out)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one command; 0 when it ran, 1 with the reason on stderr when it could not."""
    options = vars(build_parser().parse_args(argv))
    out = sys.stdout if out is None else out
    try:
        if options["command"] == "train":
            run_train(options, out)
        else:
            run_evaluate(options, out)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
