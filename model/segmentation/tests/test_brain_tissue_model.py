"""The shipped brain-tissue model on its committed held-out sample.

`model/segmentation/brain-tissue/heldout/` holds nine test-split slices (three from each of
the three held-out slabs; unseen slabs, unseen augmentation seeds; `manifest.json` says which).
The full held-out evaluation (400 slices, bootstrap CIs) is in the model card; this checks
the grey/white-matter target on the sample (a strict xfail: the shipped weights miss it, by
the figures in the card), that both backends keep the measured figures, and that
`cli evaluate` reproduces the card's section for the sample.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from model.segmentation.evaluate import evaluate

MODEL = Path(__file__).resolve().parents[1] / "brain-tissue"
HELDOUT = MODEL / "heldout"
SAMPLE_SECTION = "Committed held-out sample (onnxruntime, 1 thread)"
TARGET_DICE = 0.85
# What the shipped weights measured on the sample (model card), less 0.02: a guard against a
# broken or swapped model, NOT the target (which they miss; see the card's "Status").
MEASURED_FLOOR = {"grey_matter": 0.82, "white_matter": 0.72}


@pytest.mark.xfail(
    strict=True,
    reason="known gap: on this sample the shipped model measures Dice 0.842 (grey) and 0.741 "
    "(white matter) against the 0.85 target (on the 400 test slices grey meets it, white "
    "matter measures 0.764); MODEL_CARD.md 'Status against the targets'",
)
def test_it_meets_the_grey_and_white_matter_dice_target_on_the_held_out_sample() -> None:
    report = evaluate(MODEL, HELDOUT, backend="onnx", threads=1, resamples=200)
    for tissue in ("grey_matter", "white_matter"):
        assert report["classes"][tissue]["dice"]["mean"] >= TARGET_DICE, tissue


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_it_keeps_its_measured_dice_on_the_held_out_sample(backend: str) -> None:
    report = evaluate(MODEL, HELDOUT, backend=backend, threads=1, resamples=200)
    assert report["cases"] == 9
    for tissue, floor in MEASURED_FLOOR.items():
        dice = report["classes"][tissue]["dice"]
        assert dice["n"] == 9
        assert dice["mean"] >= floor, (tissue, dice)
    assert report["timing"]["ms_per_slice_mean"] < 1000  # generous: CI machines vary


def test_it_reproduces_the_model_card_section_for_the_sample() -> None:
    card = (MODEL / "MODEL_CARD.md").read_text()
    section = card.split(f"### {SAMPLE_SECTION}", 1)[1].split("<!--", 1)[0]
    report = evaluate(MODEL, HELDOUT, backend="onnx", threads=1)
    for tissue in ("csf", "grey_matter", "white_matter"):
        row = re.search(rf"^\| {tissue} \| (.*)$", section, re.MULTILINE)
        assert row is not None, tissue
        card_dice = float(row.group(1).split(" ", 1)[0])
        assert report["classes"][tissue]["dice"]["mean"] == pytest.approx(card_dice, abs=5e-4)
