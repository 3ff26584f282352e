"""What the brain-tissue work added: hard-slice oversampling and class weights in training,
test-time flip averaging in the Segmenter, and the failure analysis that replays each case's
augmentation draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.segmentation.model import ModelConfig, NetworkConfig, Segmenter, build_network
from model.segmentation.brain_tissue_analysis import case_rows, summary
from model.segmentation.brain_tissue_data import (
    case_seed,
    generate_split,
    load_template,
    sample,
    slab_splits,
)
from model.segmentation.tests.test_seg_train import write_squares
from model.segmentation.train import TrainOptions, oversampled_pool, train


def test_it_draws_the_slices_where_a_class_is_small_factor_times_an_epoch() -> None:
    y = np.zeros((5, 1, 10, 10), np.uint8)
    y[1, 0, :2, :2] = 3  # 4 pixels of class 3
    y[2, 0, :5, :5] = 3  # 25
    y[3, 0, :9, :9] = 3  # 81
    pool = oversampled_pool(y, (3, 4, 30, 3))
    assert sorted(pool.tolist()) == [0, 1, 1, 1, 2, 2, 2, 3, 4]
    assert oversampled_pool(y, None).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="CLASS,MIN_PIXELS,MAX_PIXELS,FACTOR"):
        oversampled_pool(y, (3, 30, 3))  # type: ignore[arg-type]


def test_it_trains_with_oversampling_and_class_weights_and_records_them(tmp_path: Path) -> None:
    write_squares(tmp_path / "data", 4)
    lines: list[str] = []
    options = TrainOptions(
        data=tmp_path / "data", model="unet", out=tmp_path / "m", channels=(4, 8), epochs=1,
        batch_size=2, threads=1, oversample=(1, 1, 300, 2), class_weights=(0.5, 2.0),
    )  # fmt: skip
    config = train(options, log=lines.append)
    # 3 training cases (one held out), squares of 256 pixels: each drawn twice, 3 steps.
    assert "oversampling: 3 extra draws an epoch" in lines
    assert config["training"]["steps"] == 3
    assert config["training"]["oversample"] == [1, 1, 300, 2]
    assert config["training"]["class_weights"] == [0.5, 2.0]
    bad = TrainOptions(
        data=tmp_path / "data", model="unet", out=tmp_path / "bad", channels=(4, 8), epochs=1,
        threads=1, class_weights=(1.0, 1.0, 1.0),
    )  # fmt: skip
    with pytest.raises(ValueError, match="needs 2 values"):
        train(bad, log=lambda _: None)


def test_flip_averaging_is_the_mean_of_the_image_and_its_mirror() -> None:
    import torch

    torch.manual_seed(0)
    network_config = NetworkConfig(kind="unet", out_channels=3, channels=(4, 8))
    network = build_network(network_config)
    plain_config = ModelConfig(name="t", network=network_config, classes={0: "a", 1: "b", 2: "c"})
    flip_config = ModelConfig.from_dict({**plain_config.to_dict(), "test_time_flip": True})
    assert flip_config.test_time_flip and not plain_config.test_time_flip
    assert ModelConfig.from_dict(flip_config.to_dict()).test_time_flip  # it round-trips
    plain = Segmenter.from_network(plain_config, network)
    flipped = Segmenter.from_network(flip_config, network)
    image = np.random.default_rng(0).normal(size=(30, 22)).astype(np.float32)  # padded to 32, 24
    expected = (
        plain.probabilities(image) + plain.probabilities(image[:, ::-1].copy())[..., ::-1]
    ) / 2
    got = flipped.probabilities(image)
    assert got.shape == (3, 30, 22) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, plain.probabilities(image), atol=1e-3)  # it did change
    volume = np.stack([image, image[::-1]])  # a volume goes through in batches, the same way
    np.testing.assert_allclose(flipped.probabilities(volume)[:, 0], expected, atol=1e-5)


def test_it_replays_each_cases_draws_and_groups_dice_by_them(tmp_path: Path) -> None:
    manifest = generate_split(tmp_path, "test", 2, size=256, seed=5)
    template = load_template()
    record: dict[str, object] = {}
    image, labels = sample(
        template, int(manifest[1]["slice"]), case_seed("test", 1, 5), 256, record
    )
    from PIL import Image

    written = np.asarray(Image.open(tmp_path / "test" / "images" / "test-00001.png"))
    assert np.array_equal(np.round(image * 255).astype(np.uint8), written)
    assert set(record) >= {"gm_wm_gap", "resolution", "noise_sigma", "bias", "gamma"}
    assert float(record["gm_wm_gap"]) >= 0.12  # type: ignore[arg-type]
    assert int(manifest[1]["slice"]) in {z for _, z in slab_splits(template.labels)["test"]}

    model = Path(__file__).resolve().parents[1] / "brain-tissue"
    rows = case_rows(model, tmp_path / "test", seed=5, threads=1, flip=True)
    assert [r["case"] for r in rows] == ["test-00000", "test-00001"]
    assert all(0.0 <= r["dice_wm"] <= 1.0 and 0.0 <= r["flip_dice_wm"] <= 1.0 for r in rows)
    report = summary(rows)
    plain = {
        r["case"]: {k: v for k, v in r.items() if k not in ("prediction", "truth")} for r in rows
    }
    again = case_rows(model, tmp_path / "test", seed=5, threads=1, flip=False, draws=plain)
    assert [(r["dice_wm"], r["gm_wm_gap"]) for r in again] == [
        (r["dice_wm"], r["gm_wm_gap"]) for r in rows
    ]  # the draws of an earlier report stand in for replaying them
    assert report["all"]["n"] == 2 and sum(g["n"] for g in report["slab"].values()) == 2
    with pytest.raises(ValueError, match="regenerated case differs"):
        case_rows(model, tmp_path / "test", seed=6, threads=1, flip=False)
    json.dumps(report)  # plain JSON


def test_calibration_finds_the_output_bias_and_shifts_one_logit_exactly() -> None:
    import torch

    from model.segmentation.calibrate import mean_dice, output_bias

    torch.manual_seed(0)
    config = NetworkConfig(kind="residual", out_channels=4, channels=(4, 8, 16), num_res_units=2)
    network = build_network(config).eval()
    probe = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        before = network(probe)
    bias = output_bias(network, 3, 4)
    with torch.no_grad():
        bias[3] += 0.7
    with torch.inference_mode():
        after = network(probe)
    np.testing.assert_allclose((after - before)[0, 3].numpy(), 0.7, atol=1e-5)
    np.testing.assert_allclose((after - before)[0, :3].numpy(), 0.0, atol=1e-5)
    # A larger offset for a class predicts more of it: Dice moves from 0 to 1 here.
    log_p = np.log(np.array([0.6, 0.0, 0.0, 0.4], np.float32) + 1e-8)[:, None, None] * np.ones(
        (1, 2, 2)
    )
    mask = np.full((2, 2), 3, np.uint8)
    assert mean_dice([log_p], [mask], 3, 0.0, [3])[3] == 0.0
    assert mean_dice([log_p], [mask], 3, 1.0, [3])[3] == 1.0
