"""Post-processing and measurements of label maps, on cases small enough to check by hand."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.segmentation.model import ModelConfig, NetworkConfig
from engine.segmentation.outputs import class_colours, measure, overlay_png
from engine.segmentation.postprocessing import PostprocessConfig, postprocess

CLASSES = {0: "background", 1: "organ", 2: "lesion"}


def test_it_changes_nothing_by_default() -> None:
    labels = np.random.default_rng(0).integers(0, 3, (16, 16)).astype(np.uint8)
    assert PostprocessConfig().is_identity
    assert postprocess(labels, PostprocessConfig()) is labels


def test_it_keeps_only_the_largest_component_and_gives_the_rest_to_the_neighbour() -> None:
    labels = np.zeros((10, 10), np.uint8)
    labels[1:5, 1:5] = 1  # 16 pixels: kept
    labels[7:9, 7:9] = 1  # 4 pixels inside background: removed -> background
    labels[0:3, 7:10] = 2  # class 2 surrounds a stray class-1 pixel
    labels[1, 8] = 1
    out = postprocess(labels, PostprocessConfig(keep_largest=(1,)))
    assert (out[1:5, 1:5] == 1).all()
    assert (out[7:9, 7:9] == 0).all()
    assert out[1, 8] == 2  # the nearest other class, not a hole of background
    assert (out == 1).sum() == 16


def test_it_removes_components_below_the_minimum_size_for_every_class() -> None:
    labels = np.zeros((12, 12), np.uint8)
    labels[0:5, 0:5] = 1  # 25 pixels
    labels[8, 8] = 1  # 1 pixel
    labels[6:8, 0:2] = 2  # 4 pixels
    out = postprocess(labels, PostprocessConfig(min_size=5))
    assert (out == 1).sum() == 25
    assert (out == 2).sum() == 0


def test_it_opens_away_a_one_pixel_spur_and_closes_a_one_pixel_gap() -> None:
    labels = np.zeros((12, 12), np.uint8)
    labels[3:9, 3:9] = 1
    labels[5, 9:12] = 1  # a spur one pixel thick
    opened = postprocess(labels, PostprocessConfig(opening=1))
    # The cross-shaped element keeps the spur's root (its neighbour in the square survives
    # erosion) and the square's corners go: hand-checked.
    assert (opened[5, 10:12] == 0).all()
    assert opened[3, 3] == 0 and opened[8, 8] == 0
    assert (opened[4:8, 3:9] == 1).all()

    gapped = np.zeros((12, 12), np.uint8)
    gapped[3:9, 3:9] = 1
    gapped[6, 3:9] = 0  # a one-pixel crack through the square
    closed = postprocess(gapped, PostprocessConfig(closing=1))
    assert (closed[6, 4:8] == 1).all()


def test_it_cleans_a_volume_in_three_dimensions() -> None:
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[:, 2:6, 2:6] = 1  # one column through all slices: 64 voxels
    labels[0, 0, 7] = 1  # an island in slice 0
    out = postprocess(labels, PostprocessConfig(keep_largest=(1,)))
    assert (out == 1).sum() == 64


def test_it_round_trips_in_the_model_config_and_refuses_bad_options() -> None:
    config = ModelConfig(
        name="m",
        network=NetworkConfig(kind="unet", out_channels=3),
        classes=CLASSES,
        postprocessing=PostprocessConfig(opening=1, keep_largest=(1,), min_size=10),
    )
    again = ModelConfig.from_dict(config.to_dict())
    assert again.postprocessing == config.postprocessing
    # Configs written before post-processing existed load with none.
    legacy = config.to_dict()
    del legacy["postprocessing"]
    assert ModelConfig.from_dict(legacy).postprocessing.is_identity
    with pytest.raises(ValueError):
        PostprocessConfig.from_dict({"opening": 1, "dilate": 2})
    with pytest.raises(ValueError):
        PostprocessConfig(keep_largest=(0,))


def test_it_measures_areas_in_mm2_for_one_image() -> None:
    labels = np.zeros((10, 20), np.uint8)
    labels[0:2, 0:5] = 1  # 10 pixels
    labels[5, 5] = 2  # 1 pixel
    measured = measure(labels, CLASSES, pixel_spacing_mm=(0.5, 0.25))
    assert measured.pixels == {"background": 189, "organ": 10, "lesion": 1}
    assert measured.areas_mm2 == {"background": 23.62, "organ": 1.25, "lesion": 0.12}
    assert measured.volumes_ml is None


def test_it_measures_volumes_in_ml_for_frames_with_a_slice_spacing() -> None:
    labels = np.zeros((5, 10, 10), np.uint8)
    labels[:, 0:4, 0:5] = 1  # 100 voxels of 2 x 2 x 2.5 mm = 1000 mm^3 = 1 mL
    measured = measure(labels, CLASSES, pixel_spacing_mm=(2.0, 2.0), slice_spacing_mm=2.5)
    assert measured.volumes_ml is not None
    assert measured.volumes_ml["organ"] == pytest.approx(1.0)
    assert measured.volumes_ml["lesion"] == 0.0
    assert measured.spacing_mm == [2.5, 2.0, 2.0]


def test_it_gives_pixel_counts_only_without_spacing_and_mean_areas_for_a_clip() -> None:
    labels = np.ones((2, 4, 4), np.uint8)
    bare = measure(labels, CLASSES)
    assert bare.pixels["organ"] == 32 and bare.areas_mm2 is None and bare.volumes_ml is None
    clip = measure(labels, CLASSES, pixel_spacing_mm=(1.0, 1.0))
    assert clip.areas_mm2 is not None and clip.areas_mm2["organ"] == 16.0
    assert clip.notes


def test_it_draws_the_overlay_with_a_legend_below_the_image() -> None:
    base = np.full((64, 96), 100, np.uint8)
    labels = np.zeros((64, 96), np.uint8)
    labels[10:30, 10:30] = 1
    png = overlay_png(base, labels, CLASSES, title="test model")
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert image.shape[1] == 96 and image.shape[0] > 64  # legend strip added
    organ = np.array(class_colours(CLASSES)[1])
    # Inside: a blend of grey 100 and the class colour; the outline: the colour itself.
    inside = image[20, 20].astype(int)
    assert not (inside == 100).all()
    assert (image[10, 20] == organ).all()
    assert (image[50, 50] == 100).all()  # background untouched
    # The legend strip carries the swatch colours.
    legend = image[64:].reshape(-1, 3)
    assert (legend == organ).all(axis=1).any()
    assert (legend == np.array(class_colours(CLASSES)[2])).all(axis=1).any()
