"""3D networks train on whole NIfTI volumes and evaluate with the slice spacing."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from model.segmentation.evaluate import evaluate, update_card
from model.segmentation.train import TrainOptions, split_cases, train


def write_balls(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.json").write_text(json.dumps({"0": "background", "1": "ball"}))
    x, y, z = np.mgrid[:16, :16, :8]
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    for i in range(n):
        cx, cy = rng.integers(6, 10, size=2)
        mask = ((x - cx) ** 2 + (y - cy) ** 2 + 4 * (z - 4) ** 2 < 20).astype(np.uint8)
        image = (mask * 100 + rng.normal(0, 5, mask.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, affine), root / "images" / f"v{i}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), root / "masks" / f"v{i}.nii.gz")


def test_it_trains_a_3d_network_on_volumes_and_evaluates_it(tmp_path: Path) -> None:
    write_balls(tmp_path / "data", 3)
    lines: list[str] = []
    config = train(
        TrainOptions(
            data=tmp_path / "data",
            model="unet",
            out=tmp_path / "model",
            spatial_dims=3,
            channels=(4, 8),
            epochs=2,
            batch_size=2,
            val_fraction=0.34,
            threads=1,
        ),
        log=lines.append,
    )
    assert config["network"]["spatial_dims"] == 3
    assert config["training"]["cases"] == 2  # one of three held out for validation
    assert config["training"]["onnx_max_abs_logit_gap"] < 1e-3
    assert any('"val_dice"' in line for line in lines)
    report = evaluate(tmp_path / "model", tmp_path / "data", resamples=50, threads=1)
    ball = report["classes"]["ball"]
    assert ball["dice"]["n"] == 3 and ball["hd95"]["n"] == 3
    assert report["timing"]["slices"] == 3 * 8  # a volume's time is spread over its slices
    update_card(tmp_path / "model", "Held-out balls", report)
    card = update_card(tmp_path / "model", "Held-out balls", report).read_text()
    assert card.count("### Held-out balls") == 1  # a rerun replaces its section
    assert "| ball | " in card and card.index("## Evaluation") < card.index("### Held-out balls")


def test_it_cross_validates_over_k_folds_then_trains_on_every_case(tmp_path: Path) -> None:
    write_balls(tmp_path / "data", 6)
    config = train(
        TrainOptions(
            data=tmp_path / "data",
            model="attention",
            out=tmp_path / "model",
            folds=3,
            channels=(4, 8),
            epochs=1,
            batch_size=8,
            max_steps=2,
            threads=1,
        ),
        log=lambda line: None,
    )
    assert config["training"]["cross_validation"]["folds"] == 3
    assert config["training"]["cases"] == 6  # the shipped network sees every case
    log = json.loads((tmp_path / "model" / "training_log.json").read_text())
    held = [name for fold in log["cross_validation"] for name in fold["held_out"]]
    assert sorted(held) == [f"v{i}" for i in range(6)]  # each case held out exactly once
    assert all("val_mean_dice" in fold["best"] for fold in log["cross_validation"])


def test_it_splits_cases_reproducibly_and_refuses_a_single_case() -> None:
    names = [f"c{i}" for i in range(10)]
    train_names, val_names = split_cases(names, 0.2, seed=3)
    assert len(val_names) == 2 and set(train_names) | set(val_names) == set(names)
    assert split_cases(names, 0.2, seed=3) == (train_names, val_names)
    try:
        split_cases(["only"], 0.1, seed=0)
    except ValueError as error:
        assert "two cases" in str(error)
    else:
        raise AssertionError("a single case cannot be split")


def test_it_crops_each_sample_at_its_own_place_and_keeps_image_and_mask_aligned() -> None:
    from model.segmentation.train import random_crop

    x = np.arange(3 * 16 * 16, dtype=np.float32).reshape(3, 1, 16, 16)
    y = (x.astype(np.int64) % 7).astype(np.uint8)
    xs, ys = random_crop(x, y, 8, np.random.default_rng(1))
    assert xs.shape == ys.shape == (3, 1, 8, 8)
    assert np.array_equal(ys, (xs.astype(np.int64) % 7).astype(np.uint8))
    corners = {float(xs[i, 0, 0, 0]) for i in range(3)}
    assert len(corners) > 1  # not one window for the whole batch
    same, _ = random_crop(x, y, 32, np.random.default_rng(1))
    assert same is x  # a crop larger than the image is the image


def test_it_trains_on_crops_and_refuses_a_crop_off_the_stride(tmp_path: Path) -> None:
    import pytest
    from PIL import Image

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    (data / "classes.json").write_text(json.dumps({"0": "background", "1": "square"}))
    for i in range(4):
        mask = np.zeros((32, 32), np.uint8)
        mask[4 + i : 20 + i, 6:22] = 1
        Image.fromarray((mask * 150 + 40).astype(np.uint8)).save(data / "images" / f"s{i}.png")
        Image.fromarray(mask).save(data / "masks" / f"s{i}.png")

    def options(out: Path, crop: int) -> TrainOptions:
        return TrainOptions(
            data=data, model="unet", out=out, channels=(4, 8), epochs=1, batch_size=2,
            threads=1, crop=crop,
        )  # fmt: skip

    config = train(options(tmp_path / "m", 16), log=lambda _: None)
    assert config["training"]["crop"] == 16
    with pytest.raises(ValueError, match="multiple of the total stride"):
        train(options(tmp_path / "bad", 15), log=lambda _: None)


def write_squares(root: Path, n: int) -> None:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.json").write_text(json.dumps({"0": "background", "1": "square"}))
    for i in range(n):
        mask = np.zeros((32, 32), np.uint8)
        mask[4 + i : 20 + i, 6:22] = 1
        Image.fromarray((mask * 150 + 40).astype(np.uint8)).save(root / "images" / f"s{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"s{i}.png")


def test_it_resumes_an_interrupted_run_from_its_checkpoint_exactly(tmp_path: Path) -> None:
    import pytest
    import torch

    write_squares(tmp_path / "data", 6)

    def options(out: Path, resume: bool = False) -> TrainOptions:
        return TrainOptions(
            data=tmp_path / "data", model="unet", out=out, channels=(4, 8), epochs=3,
            batch_size=2, threads=1, checkpoint=True, resume=resume,
        )  # fmt: skip

    whole = train(options(tmp_path / "whole"), log=lambda _: None)
    assert (tmp_path / "whole" / "checkpoint.pt").is_file()

    def stop_in_epoch_two(line: str) -> None:
        if line.startswith('{"epoch": 2'):
            raise KeyboardInterrupt  # killed before epoch 2 was checkpointed

    with pytest.raises(KeyboardInterrupt):
        train(options(tmp_path / "cut"), log=stop_in_epoch_two)
    saved = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert saved["epoch"] == 1 and len(saved["history"]) == 1
    # Between epochs the directory already loads as a model: config.json and the best weights.
    from engine.segmentation.model import Segmenter

    Segmenter.load(tmp_path / "cut").segment(np.zeros((32, 32), np.float32))
    lines: list[str] = []
    resumed = train(options(tmp_path / "cut", resume=True), log=lines.append)
    assert any(line.startswith("resumed from") and "after epoch 1" in line for line in lines)
    log_whole = json.loads((tmp_path / "whole" / "training_log.json").read_text())["history"]
    log_cut = json.loads((tmp_path / "cut" / "training_log.json").read_text())["history"]
    assert [r["loss"] for r in log_cut] == [r["loss"] for r in log_whole]
    assert resumed["training"]["steps"] == whole["training"]["steps"] == 3 * 3
    a = torch.load(tmp_path / "whole" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "weights.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_it_refuses_to_resume_without_a_checkpoint_or_with_another_schedule(
    tmp_path: Path,
) -> None:
    import pytest

    write_squares(tmp_path / "data", 4)

    def options(epochs: int, resume: bool) -> TrainOptions:
        return TrainOptions(
            data=tmp_path / "data", model="unet", out=tmp_path / "m", channels=(4, 8),
            epochs=epochs, batch_size=2, threads=1, checkpoint=True, resume=resume,
        )  # fmt: skip

    with pytest.raises(ValueError, match="no checkpoint to resume from"):
        train(options(1, resume=True), log=lambda _: None)
    train(options(1, resume=False), log=lambda _: None)
    with pytest.raises(ValueError, match="resume with the same"):
        train(options(2, resume=True), log=lambda _: None)
