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


def test_an_atrophied_case_has_more_csf_and_less_tissue_than_the_same_case_without() -> None:
    template = load_template()
    z = slab_splits(template.labels)["train"][30][1]
    seed = np.random.SeedSequence(5)
    _, plain = sample(template, z, seed, 256)
    _, shrunk = sample(template, z, np.random.SeedSequence(5), 256, atrophy_level=0.3)
    counts = {
        name: np.bincount(m.ravel(), minlength=4) for name, m in (("a", plain), ("b", shrunk))
    }
    assert counts["b"][1] > counts["a"][1] * 1.5  # CSF widened
    assert counts["b"][2] < counts["a"][2] and counts["b"][3] < counts["a"][3]
    # same deformation: the brain outline barely moves (edge pixels may tip to CSF)
    assert abs(int(counts["b"][0]) - int(counts["a"][0])) < 0.01 * counts["a"][0]
    _, left = sample(
        template, z, np.random.SeedSequence(5), 256, atrophy_level=0.3, atrophy_side="left"
    )
    assert counts["a"][1] < np.bincount(left.ravel(), minlength=4)[1] < counts["b"][1]


def test_the_atrophy_option_leaves_other_cases_alone_and_records_the_draws(
    tmp_path: Path,
) -> None:
    plain = generate_split(tmp_path / "a", "train", 4, size=128, seed=12)
    mixed = generate_split(
        tmp_path / "b", "train", 4, size=128, seed=12, atrophy_fraction=0.5, atrophy_max=0.3
    )
    assert all(row["atrophy_level"] == 0.0 and row["atrophy_side"] == "none" for row in plain)
    shrunk = [row for row in mixed if row["atrophy_side"] != "none"]
    assert shrunk and len(shrunk) < 4  # the draws for seed 12 give both kinds
    assert all(0.0 < float(row["atrophy_level"]) <= 0.3 for row in shrunk)
    assert json.loads((tmp_path / "b" / "train" / "manifest.json").read_text()) == mixed
    for a, b in zip(plain, mixed, strict=True):
        first = (tmp_path / "a" / "train" / "masks" / f"{a['case']}.png").read_bytes()
        second = (tmp_path / "b" / "train" / "masks" / f"{b['case']}.png").read_bytes()
        assert (first == second) == (b["atrophy_side"] == "none")
