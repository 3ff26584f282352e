"""MONAI U-Net inference, and train + evaluate through `python -m model.segmentation.cli`."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.segmentation.model import (
    WEIGHTS_FILE,
    ModelConfig,
    NetworkConfig,
    Segmenter,
    build_network,
)
from engine.segmentation.preprocessing import PreprocessConfig
from model.segmentation import cli
from model.segmentation.train import export_onnx

CLASSES = {0: "background", 1: "square", 2: "disc"}


def tiny_config(kind: str = "residual") -> ModelConfig:
    return ModelConfig(
        name="tiny",
        network=NetworkConfig(kind=kind, out_channels=3, channels=(4, 8, 16), strides=(2, 2)),
        classes=CLASSES,
        preprocessing=PreprocessConfig(),
    )


def write_shapes_dataset(root: Path, n: int, seed: int) -> None:
    """64x64 images: a bright square (class 1) and a dark disc (class 2) on grey, noisy."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.json").write_text(json.dumps({str(k): v for k, v in CLASSES.items()}))
    rows, cols = np.mgrid[:64, :64]
    for i in range(n):
        mask = np.zeros((64, 64), np.uint8)
        r, c = rng.integers(4, 24, size=2)
        mask[r : r + 14, c : c + 14] = 1
        cr, cc = rng.integers(42, 54, size=2)
        mask[(rows - cr) ** 2 + (cols - cc) ** 2 < 8**2] = 2
        image = np.choose(mask, [120.0, 220.0, 30.0]) + rng.normal(0, 12, (64, 64))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / f"c{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"c{i}.png")


@pytest.mark.parametrize(
    ("kind", "monai_class", "residual"),
    [("unet", "UNet", False), ("residual", "UNet", True), ("attention", "AttentionUnet", False)],
)
def test_it_builds_monai_networks(kind: str, monai_class: str, residual: bool) -> None:
    network = build_network(NetworkConfig(kind=kind, out_channels=3, channels=(4, 8, 16)))
    assert type(network).__name__ == monai_class
    assert type(network).__module__.startswith("monai.networks.nets")
    if monai_class == "UNet":
        assert network.num_res_units == (2 if residual else 0)
    with torch.inference_mode():
        assert network(torch.zeros(2, 1, 32, 32)).shape == (2, 3, 32, 32)


def test_it_builds_a_3d_network() -> None:
    config = NetworkConfig(kind="residual", out_channels=2, spatial_dims=3, channels=(4, 8))
    with torch.inference_mode():
        assert build_network(config)(torch.zeros(1, 1, 8, 16, 16)).shape == (1, 2, 8, 16, 16)


def test_it_refuses_an_unknown_network() -> None:
    with pytest.raises(ValueError, match="unknown network"):
        NetworkConfig(kind="transformer", out_channels=2)


def test_it_segments_any_size_and_volumes_slice_by_slice() -> None:
    torch.manual_seed(0)
    config = tiny_config()
    segmenter = Segmenter.from_network(config, build_network(config.network))
    image = np.random.default_rng(0).random((30, 45)).astype(np.float32)
    result = segmenter.segment(image)
    assert result.labels.shape == (30, 45) and result.labels.dtype == np.uint8
    assert result.probabilities.shape == (3, 30, 45)
    assert np.allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert np.array_equal(result.labels, result.probabilities.argmax(axis=0))
    assert list(result.stages_ms) == ["clip", "normalise", "network"]
    volume = np.stack([image, image[::-1]])
    stacked = segmenter.segment(volume)
    assert stacked.labels.shape == (2, 30, 45)
    assert np.allclose(stacked.probabilities[:, 0], result.probabilities, atol=1e-5)


def test_it_gives_the_same_answer_from_onnx_and_torch(tmp_path: Path) -> None:
    torch.manual_seed(1)
    config = tiny_config("unet")
    network = build_network(config.network).eval()
    config.save(tmp_path)
    torch.save(network.state_dict(), tmp_path / WEIGHTS_FILE)
    assert export_onnx(network, config, tmp_path / "model.onnx") < 1e-3
    image = np.random.default_rng(2).random((40, 36)).astype(np.float32)
    by_torch = Segmenter.load(tmp_path, backend="torch").segment(image)
    by_onnx = Segmenter.load(tmp_path, backend="onnx").segment(image)
    assert np.allclose(by_torch.probabilities, by_onnx.probabilities, atol=1e-4)


def test_it_trains_and_evaluates_through_the_cli(tmp_path: Path) -> None:
    write_shapes_dataset(tmp_path / "train", 8, seed=0)
    write_shapes_dataset(tmp_path / "test", 4, seed=1)
    out = tmp_path / "model"
    stdout = StringIO()
    assert cli.main(
        [
            "train",
            "--data", str(tmp_path / "train"),
            "--model", "residual",
            "--out", str(out),
            "--val-fraction", "0.25",
            "--channels", "8,16,32",
            "--epochs", "30",
            "--batch-size", "4",
            "--max-steps", "30",
            "--learning-rate", "1e-2",
            # One thread: with the CPU shared, two OpenMP threads spin against each other
            # (measured 16 ms vs ~800 ms per step here).
            "--threads", "1",
        ],
        out=stdout,
    ) == 0  # fmt: skip
    assert {p.name for p in out.iterdir()} >= {
        "weights.pt", "model.onnx", "config.json", "MODEL_CARD.md", "training_log.json"
    }  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["network"]["kind"] == "residual" and config["classes"]["2"] == "disc"
    assert config["training"]["cases"] == 6  # two of eight held out for validation
    assert config["training"]["onnx_max_abs_logit_gap"] < 1e-3
    log = json.loads((out / "training_log.json").read_text())
    assert log["history"][-1]["steps"] == 30 and "val_mean_dice" in log["history"][-1]

    report_out = StringIO()
    assert cli.main(
        [
            "evaluate",
            "--model", str(out),
            "--data", str(tmp_path / "test"),
            "--resamples", "200",
            "--threads", "1",
            "--card-section", "Held-out shapes",
        ],
        out=report_out,
    ) == 0  # fmt: skip
    report = json.loads(report_out.getvalue())
    assert report["cases"] == 4
    square = report["classes"]["square"]
    assert set(square) == {"dice", "sensitivity", "specificity", "precision", "auc", "hd95"}
    assert square["dice"]["n"] == 4 and square["dice"]["verdict"] in {"target", "minimum", "fail"}
    low, high = square["dice"]["ci95"]
    assert low <= square["dice"]["mean"] <= high
    # 30 steps are enough to learn bright squares and dark discs on grey.
    assert square["dice"]["mean"] > 0.8 and report["classes"]["disc"]["dice"]["mean"] > 0.8
    assert "verdict" not in report["classes"]["background"]["dice"]
    assert report["timing"]["slices"] == 4
    assert set(report["timing"]["stages_ms_per_slice"]) == {"clip", "normalise", "network"}
    card = (out / "MODEL_CARD.md").read_text()
    assert "### Held-out shapes" in card
    assert f"model.segmentation.cli train --data {tmp_path / 'train'} --model residual" in card
    assert "--channels 8,16,32" in card and "--max-steps 30" in card


def test_it_reports_a_missing_model_as_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["evaluate", "--model", str(tmp_path), "--data", str(tmp_path)]) == 1
    assert f"error: {tmp_path} has no config.json" in capsys.readouterr().err
