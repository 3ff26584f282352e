"""The brain-tissue generator: held-out slabs, seed streams, aligned image and mask."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model.segmentation.brain_tissue_data import (
    CLASSES,
    GAP,
    generate_split,
    load_template,
    sample,
    slab_splits,
)
from model.segmentation.dataset import iter_cases


def test_it_builds_four_tissue_labels_from_the_packaged_template() -> None:
    template = load_template()
    counts = np.bincount(template.labels.ravel(), minlength=4)
    assert counts.size == 4 and (counts > 0).all()
    assert counts[2] > counts[1] and counts[3] > counts[1]  # GM and WM outweigh CSF
    assert np.allclose(template.probabilities.sum(axis=0), 1.0, atol=1e-5)


def test_it_keeps_held_out_slabs_apart_with_a_gap() -> None:
    splits = slab_splits(load_template().labels)
    slices = {name: {z for _, z in pairs} for name, pairs in splits.items()}
    slabs = {name: {s for s, _ in pairs} for name, pairs in splits.items()}
    assert all(slices[name] for name in ("train", "val", "test"))
    assert not slabs["train"] & slabs["test"] and not slabs["val"] & slabs["test"]
    for z in slices["test"]:
        nearest_train = min(abs(z - t) for t in slices["train"])
        assert nearest_train > GAP


def test_it_repeats_a_sample_for_a_seed_and_varies_it_across_seeds() -> None:
    template = load_template()
    z = slab_splits(template.labels)["train"][10][1]
    seeds = np.random.SeedSequence(7).spawn(2)
    first = sample(template, z, seeds[0], 128)
    again = sample(template, z, np.random.SeedSequence(7).spawn(2)[0], 128)
    other = sample(template, z, seeds[1], 128)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    image, labels = first
    assert image.dtype == np.float32 and image.min() >= 0.0 and image.max() <= 1.0
    assert labels.shape == (128, 128) and set(np.unique(labels)) <= set(CLASSES)


def test_it_writes_a_split_in_the_dataset_convention(tmp_path: Path) -> None:
    manifest = generate_split(tmp_path, "test", 3, size=256, seed=11)
    test_slices = {z for _, z in slab_splits(load_template().labels)["test"]}
    assert {row["slice"] for row in manifest} <= test_slices
    cases = list(iter_cases(tmp_path / "test"))
    assert [c.name for c in cases] == ["test-00000", "test-00001", "test-00002"]
    assert all(c.image.shape == (256, 256) and c.spacing == (1.0, 1.0) for c in cases)
    assert json.loads((tmp_path / "test" / "classes.json").read_text())["3"] == "white_matter"
    for case in cases:  # the contrast follows the mask: grey and white matter look different
        grey, white = case.image[case.mask == 2], case.image[case.mask == 3]
        assert grey.size > 500 and white.size > 500
        assert abs(float(grey.mean()) - float(white.mean())) > 5
