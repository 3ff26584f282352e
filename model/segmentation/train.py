"""Train a MONAI U-Net on a data set in the model/segmentation/dataset.py convention.

Called by `python -m model.segmentation.cli train` (model/segmentation/cli.py has the options).
Writes to OUT: weights.pt (best state_dict), model.onnx (same network, checked against torch),
config.json (network, classes, preprocessing, training record), training_log.json (loss and
validation Dice per epoch, k-fold results) and MODEL_CARD.md from MODEL_CARD.template.md.

Validation: `val_dir` when given; otherwise `val_fraction` of the cases (at least one) is held
out by a seeded shuffle. The weights kept are those of the epoch with the best mean
foreground Dice on the validation slices. With `folds=K` (K >= 2) the cases are first split
into K seeded folds, a network is trained on each K-1 and scored on the fold left out (the
cross-validation figures go into the log and the card), then the shipped network is trained
on every case: selected on `val_dir` if given, otherwise the last epoch is kept, since no
case is left to select on.

2D networks train on slices (every slice of a volume). Slices of different sizes are padded
at the end to the largest, the image with its minimum and the mask with background. A 3D
network trains on whole volumes, which must then share one shape.
"""

from __future__ import annotations

import json
import math
import os
import string
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.segmentation.model import (
    ONNX_FILE,
    WEIGHTS_FILE,
    ModelConfig,
    NetworkConfig,
    Segmenter,
    build_network,
    prepare_input,
)
from engine.segmentation.preprocessing import PreprocessConfig
from model.segmentation.dataset import Case, iter_cases, load_classes

TEMPLATE = Path(__file__).resolve().parent / "MODEL_CARD.template.md"
CARD_FILE = "MODEL_CARD.md"
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TrainOptions:
    data: Path
    model: str
    out: Path
    name: str | None = None
    val_dir: Path | None = None
    val_fraction: float = 0.1
    folds: int = 0
    epochs: int = 20
    batch_size: int = 16
    learning_rate: float = 2e-3
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] | None = None
    num_res_units: int = 2
    spatial_dims: int = 2
    dropout: float = 0.0
    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig)
    max_steps: int | None = None
    crop: int | None = None  # train on random crops of this side (2D); None: whole images
    init_weights: Path | None = None  # start from this state_dict (fine-tuning)
    time_budget: float | None = None  # seconds: the schedule runs on time and stops there
    checkpoint: bool = False  # after every epoch: OUT/checkpoint.pt, best weights.pt so far
    resume: bool = False  # continue from OUT/checkpoint.pt (implies checkpoint)
    # (class, min_pixels, max_pixels, factor): 2D samples holding min..max pixels of that
    # class are drawn `factor` times an epoch (e.g. the slices where white matter is thin)
    oversample: tuple[int, int, int, int] | None = None
    class_weights: tuple[float, ...] | None = None  # per class, in the Dice and CE loss
    seed: int = 0
    threads: int = 2
    device: str = "cpu"
    command: str = ""


def _stack(images: list[np.ndarray], masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    shape = tuple(max(s) for s in zip(*(image.shape for image in images), strict=True))
    x = np.empty((len(images), 1, *shape), dtype=np.float32)
    y = np.zeros((len(masks), 1, *shape), dtype=np.uint8)  # int64 only per batch: 8x smaller
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        x[i, 0] = float(image.min())
        where: tuple[int | slice, ...] = (i, 0, *(slice(0, n) for n in image.shape))
        x[where] = image
        y[where] = mask
    return x, y


def to_arrays(cases: list[Case], config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, *spatial) float32 inputs and uint8 targets, prepared as inference prepares them."""
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for case in cases:
        prepared = prepare_input(case.image, config)
        if config.network.spatial_dims == 3 or prepared.ndim == 2:
            images.append(prepared)
            masks.append(case.mask)
        else:
            images.extend(prepared)
            masks.extend(case.mask)
    return _stack(images, masks)


def divisible_pad(x: np.ndarray, y: np.ndarray, divisor: int) -> tuple[np.ndarray, np.ndarray]:
    pads = [(0, 0), (0, 0)] + [(0, (-n) % divisor) for n in x.shape[2:]]
    return np.pad(x, pads, mode="edge"), np.pad(y, pads, constant_values=0)


def random_crop(
    x: np.ndarray, y: np.ndarray, side: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random side x side window of each 2D sample (N, 1, H, W); whole when it is smaller."""
    height, width = x.shape[2:]
    if side >= height and side >= width:
        return x, y
    h, w = min(side, height), min(side, width)
    tops = rng.integers(0, height - h + 1, size=len(x))
    lefts = rng.integers(0, width - w + 1, size=len(x))
    windows = [
        (slice(None), slice(top, top + h), slice(left, left + w))
        for top, left in zip(tops, lefts, strict=True)
    ]
    xs = np.stack([x[i][window] for i, window in enumerate(windows)])
    ys = np.stack([y[i][window] for i, window in enumerate(windows)])
    return xs, ys


def foreground_dice(
    segmenter: Segmenter, x: np.ndarray, y: np.ndarray, classes: list[int]
) -> dict[int, float]:
    """Dice per class pooled over all validation pixels (fast; the evaluator does per case)."""
    if segmenter.config.network.spatial_dims == 3:
        predictions = np.stack([np.argmax(segmenter.probabilities(v[0]), axis=0) for v in x])
    else:  # a (N, H, W) chunk is run slice by slice, as a volume would be
        predictions = np.concatenate(
            [
                np.argmax(segmenter.probabilities(x[i : i + 16, 0]), axis=0)
                for i in range(0, len(x), 16)
            ]
        )
    truth = y[:, 0]
    out = {}
    for k in classes:
        pred, ref = predictions == k, truth == k
        denominator = pred.sum() + ref.sum()
        out[k] = float(2 * (pred & ref).sum() / denominator) if denominator else math.nan
    return out


def save_atomically(state: Any, path: Path) -> None:
    """torch.save through a temporary file, so a kill mid-write leaves the old file intact."""
    import torch

    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def fit(
    config: ModelConfig,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray] | None,
    options: TrainOptions,
    log: Callable[[str], None],
    checkpoint: Path | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """Train one network; returns it (best weights loaded when there is validation) and its log.

    With `checkpoint`, the whole state (network, optimiser, schedule, step, random streams,
    log, best weights, clock) is written there after every epoch and the best weights so far
    to weights.pt next to it; with `options.resume` a run continues from that file where it
    stopped, on the same schedule."""
    import torch
    from monai.losses import DiceCELoss

    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    device = torch.device(options.device)
    network = build_network(config.network).to(device)
    if options.init_weights is not None:
        network.load_state_dict(
            torch.load(options.init_weights, map_location=device, weights_only=True)
        )
    optimiser = torch.optim.AdamW(network.parameters(), lr=options.learning_rate, weight_decay=1e-4)
    x_train, y_train = divisible_pad(*train, config.network.divisor)
    pool = oversampled_pool(y_train, options.oversample)
    if options.oversample:
        log(f"oversampling: {len(pool) - len(x_train)} extra draws an epoch")
    steps_per_epoch = math.ceil(len(pool) / options.batch_size)
    total = options.epochs * steps_per_epoch
    if options.max_steps is not None:
        total = min(total, options.max_steps)
    warmup = max(1, total // 20)
    if options.time_budget:
        warmup = min(warmup, 50)  # `epochs` is only an upper bound then
    fit_started = time.perf_counter()
    saved = None
    if checkpoint is not None and options.resume:
        if not checkpoint.is_file():
            raise ValueError(f"no checkpoint to resume from: {checkpoint}")
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        if saved["total"] != total:
            raise ValueError(
                f"checkpoint was for {saved['total']} steps, these options give {total}: "
                "resume with the same --epochs, --max-steps and --batch-size"
            )
        fit_started -= saved["elapsed"]  # a time budget counts the earlier session's time

    def progress(step: int) -> float:
        # With a time budget the run is as far along as the larger of its steps and its
        # clock, so a slower machine gets fewer steps but the same full schedule, on time.
        done = step / total
        if options.time_budget:
            done = max(done, (time.perf_counter() - fit_started) / options.time_budget)
        return min(done, 1.0)

    def schedule(step: int) -> float:
        # Linear warm-up, then cosine decay to zero over the remaining steps (or time).
        if step < warmup:
            return (step + 1) / warmup
        start = warmup / total
        done = max(progress(step), start)
        return 0.5 * (1.0 + math.cos(math.pi * (done - start) / max(1e-9, 1.0 - start)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
    weight = None
    if options.class_weights is not None:
        if len(options.class_weights) != len(config.classes):
            raise ValueError(f"--class-weights needs {len(config.classes)} values")
        weight = torch.tensor(options.class_weights, dtype=torch.float32, device=device)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, weight=weight)
    foreground = [k for k in config.classes if k != 0]
    history: list[dict[str, Any]] = []
    best_score, best_state = -math.inf, None
    step, first_epoch = 0, 0
    if saved is not None:
        network.load_state_dict(saved["network"])
        optimiser.load_state_dict(saved["optimiser"])
        scheduler.load_state_dict(saved["scheduler"])
        rng.bit_generator.state = saved["numpy_rng"]
        torch.set_rng_state(saved["torch_rng"])
        history, step, first_epoch = saved["history"], saved["step"], saved["epoch"]
        best_score, best_state = saved["best_score"], saved["best_state"]
        log(f"resumed from {checkpoint} after epoch {first_epoch}, step {step}")
        if step >= total or progress(step) >= 1.0:
            first_epoch = options.epochs  # it had finished: only the outputs are written
    for epoch in range(first_epoch, options.epochs):
        network.train()
        order = pool[rng.permutation(len(pool))]
        losses = []
        started = time.perf_counter()
        for start in range(0, len(order), options.batch_size):
            if step >= total or progress(step) >= 1.0:
                break
            index = np.sort(order[start : start + options.batch_size])
            xb, yb = x_train[index], y_train[index]
            if options.crop and xb.ndim == 4:
                # Crops cost a quarter of a 256^2 step at 128^2: more, varied steps per CPU
                # second; a fully convolutional network still segments whole images.
                xb, yb = random_crop(xb, yb, options.crop, rng)
            # Left-right flips: anatomy is roughly symmetric, and it doubles the views cheaply.
            flip = rng.random(len(index)) < 0.5
            xb = np.where(flip[:, None, None, None], xb[..., ::-1], xb) if xb.ndim == 4 else xb
            yb = np.where(flip[:, None, None, None], yb[..., ::-1], yb) if yb.ndim == 4 else yb
            optimiser.zero_grad()
            loss = loss_fn(
                network(torch.from_numpy(np.ascontiguousarray(xb)).to(device)),
                torch.from_numpy(yb.astype(np.int64)).to(device),
            )
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            step += 1
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "steps": step,
            "loss": round(float(np.mean(losses)), 5) if losses else None,
            "seconds": round(time.perf_counter() - started, 1),
        }
        if val is not None:
            segmenter = Segmenter.from_network(config, network)
            dice = foreground_dice(segmenter, *val, foreground)
            record["val_dice"] = {config.classes[k]: round(v, 4) for k, v in dice.items()}
            score = float(np.nanmean(list(dice.values()))) if dice else 0.0
            record["val_mean_dice"] = round(score, 4)
            improved = score > best_score
            if improved:
                best_score = score
                best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        history.append(record)
        log(json.dumps(record))
        if checkpoint is not None:
            if val is not None and improved:
                save_atomically(best_state, checkpoint.parent / WEIGHTS_FILE)
            save_atomically(
                {
                    "network": network.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "numpy_rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "step": step,
                    "epoch": epoch + 1,
                    "total": total,
                    "best_score": best_score,
                    "best_state": best_state,
                    "elapsed": time.perf_counter() - fit_started,
                },
                checkpoint,
            )
        if step >= total or progress(step) >= 1.0:
            break
    network = network.cpu()
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    return network, history


def oversampled_pool(y: np.ndarray, oversample: tuple[int, int, int, int] | None) -> np.ndarray:
    """Sample indices for one epoch: every sample once, plus (factor - 1) more draws of each
    sample holding between min_pixels and max_pixels pixels of the class."""
    everyone = np.arange(len(y))
    if not oversample:
        return everyone
    if len(oversample) != 4:
        raise ValueError("--oversample is CLASS,MIN_PIXELS,MAX_PIXELS,FACTOR")
    k, min_pixels, max_pixels, factor = oversample
    area = (y == k).reshape(len(y), -1).sum(axis=1)
    chosen = np.flatnonzero((area >= min_pixels) & (area <= max_pixels))
    return np.concatenate([everyone, *([chosen] * (factor - 1))])


def split_cases(names: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    order = list(np.random.default_rng(seed).permutation(names))
    n_val = max(1, round(len(names) * fraction))
    if len(names) < 2:
        raise ValueError("need at least two cases to hold one out for validation")
    return sorted(order[n_val:]), sorted(order[:n_val])


def export_onnx(network: Any, config: ModelConfig, path: Path) -> float:
    """Export with dynamic batch and size; returns the largest |torch - onnxruntime| logit gap."""
    import onnxruntime as ort
    import torch

    side = config.network.divisor * 4
    shape = (1, config.network.in_channels) + (side,) * config.network.spatial_dims
    dummy = torch.randn(*shape)
    spatial = {i + 2: f"d{i}" for i in range(config.network.spatial_dims)}
    with warnings.catch_warnings():
        # MONAI's InstanceNorm has no running statistics, so "train=True" in export is right.
        warnings.filterwarnings("ignore", message=".*instance_norm.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # The TorchScript exporter is deprecated; the dynamo one needs onnxscript (not a dep).
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        torch.onnx.export(
            network,
            (dummy,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch", **spatial}, "logits": {0: "batch", **spatial}},
            opset_version=17,
            dynamo=False,
        )
    check_shape = (2, config.network.in_channels) + (side * 2,) * config.network.spatial_dims
    check = torch.randn(*check_shape)
    with torch.inference_mode():
        expected = network(check).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": check.numpy()})[0]
    return float(np.abs(got - expected).max())


def write_card(out: Path, config: ModelConfig, data: Path, extra: dict[str, str]) -> Path:
    dataset_notes = ""
    for candidate in (data / "DATASET.md", data.parent / "DATASET.md"):
        if candidate.is_file():
            dataset_notes = candidate.read_text().strip()
            break
    values = {
        "name": config.name,
        "network": json.dumps(config.to_dict()["network"]),
        "classes": ", ".join(f"{k} {v}" for k, v in sorted(config.classes.items())),
        "preprocessing": json.dumps(config.preprocessing.to_dict()),
        "data": str(data),
        "dataset_notes": dataset_notes or "(no DATASET.md next to the data)",
        **extra,
    }
    text = string.Template(TEMPLATE.read_text()).safe_substitute(values)
    path = out / CARD_FILE
    path.write_text(text)
    return path


def train(options: TrainOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    import torch

    torch.set_num_threads(options.threads)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    classes = load_classes(options.data)
    cases = list(iter_cases(options.data))
    strides = options.strides or (2,) * (len(options.channels) - 1)
    if options.crop is not None and options.crop % int(np.prod(strides)):
        raise ValueError(f"--crop must be a multiple of the total stride {int(np.prod(strides))}")
    config = ModelConfig(
        name=options.name or out.name,
        network=NetworkConfig(
            kind=options.model,
            out_channels=len(classes),
            spatial_dims=options.spatial_dims,
            channels=tuple(options.channels),
            strides=tuple(strides),
            num_res_units=options.num_res_units,
            dropout=options.dropout,
        ),
        classes=classes,
        preprocessing=options.preprocessing,
    )
    if max(classes) != len(classes) - 1:
        raise ValueError("classes.json indices must run 0..N-1")
    started = time.perf_counter()
    cv: list[dict[str, Any]] = []
    by_name = {case.name: case for case in cases}
    names = sorted(by_name)
    val_cases: list[Case] | None = None
    val_arrays: tuple[np.ndarray, np.ndarray] | None
    if options.val_dir is not None:
        val_cases = list(iter_cases(options.val_dir))
    if options.folds and options.folds >= 2:
        if options.folds > len(names):
            raise ValueError(f"{options.folds} folds need at least as many cases ({len(names)})")
        order = list(np.random.default_rng(options.seed).permutation(names))
        for fold in range(options.folds):
            held = sorted(order[fold :: options.folds])
            kept = [by_name[n] for n in names if n not in held]
            log(f"fold {fold + 1}/{options.folds}: {len(kept)} train cases, {len(held)} held out")
            val_arrays = divisible_pad(
                *to_arrays([by_name[n] for n in held], config), config.network.divisor
            )
            network, history = fit(config, to_arrays(kept, config), val_arrays, options, log)
            best = max(history, key=lambda r: r.get("val_mean_dice", -1))
            cv.append({"fold": fold + 1, "held_out": held, "best": best})
        train_cases = cases
    elif val_cases is None:
        train_names, val_names = split_cases(names, options.val_fraction, options.seed)
        train_cases = [by_name[n] for n in train_names]
        val_cases = [by_name[n] for n in val_names]
    else:
        train_cases = cases
    val_arrays = (
        divisible_pad(*to_arrays(val_cases, config), config.network.divisor)
        if val_cases is not None
        else None
    )
    train_arrays = to_arrays(train_cases, config)
    log(f"training on {len(train_arrays[0])} samples from {len(train_cases)} cases")
    checkpoint = None
    if options.checkpoint or options.resume:  # the final network only, not the k-fold ones
        checkpoint = out / CHECKPOINT_FILE
        config.save(out)  # with weights.pt, OUT can be evaluated while the run goes on
    network, history = fit(config, train_arrays, val_arrays, options, log, checkpoint)
    seconds = time.perf_counter() - started
    torch.save(network.state_dict(), out / WEIGHTS_FILE)
    onnx_gap = export_onnx(network, config, out / ONNX_FILE)
    cv_summary = None
    if cv:
        means = [fold["best"].get("val_mean_dice") for fold in cv]
        cv_summary = {
            "folds": len(cv),
            "mean_dice": round(float(np.mean(means)), 4),
            "sd_dice": round(float(np.std(means)), 4),
        }
    config.training = {
        "data": str(options.data),
        "val": str(options.val_dir) if options.val_dir else None,
        "cases": len(train_cases),
        "samples": int(len(train_arrays[0])),
        "epochs_run": history[-1]["epoch"] if history else 0,
        "steps": history[-1]["steps"] if history else 0,
        "batch_size": options.batch_size,
        "crop": options.crop,
        "oversample": list(options.oversample) if options.oversample else None,
        "class_weights": list(options.class_weights) if options.class_weights else None,
        "init_weights": str(options.init_weights) if options.init_weights else None,
        "time_budget_s": options.time_budget,
        "learning_rate": options.learning_rate,
        "seed": options.seed,
        "threads": options.threads,
        "device": options.device,
        "seconds": round(seconds, 1),
        "best_val_mean_dice": max((r.get("val_mean_dice", -1) for r in history), default=None),
        "cross_validation": cv_summary,
        "onnx_max_abs_logit_gap": onnx_gap,
        "command": options.command,
    }
    config.save(out)
    (out / "training_log.json").write_text(
        json.dumps({"history": history, "cross_validation": cv}, indent=1) + "\n"
    )
    write_card(
        out,
        config,
        Path(options.data),
        {
            "command": options.command or "(not recorded)",
            "training": json.dumps(config.training, indent=1),
            "history_tail": json.dumps(history[-3:], indent=1),
        },
    )
    return config.to_dict()
