"""The example lesion classifier: its data are labelled honestly, and the evaluation command
reproduces the figures in its model card (fast version: fewer cases, wider tolerance)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from engine.classification import ClassifierConfig, preprocess
from model.classifier import data as lesion_data
from model.classifier.evaluate import auc, evaluate, main, reliability

SHIPPED = Path(__file__).resolve().parents[1] / "lesion"


def test_generated_cases_carry_a_lesion_exactly_when_labelled() -> None:
    cases = lesion_data.generate("test", 12, seed=7)
    assert {c.label for c in cases} == {0, 1}
    for case in cases:
        assert case.image.shape == (lesion_data.SIZE, lesion_data.SIZE)
        assert case.image.min() >= 0.0 and case.image.max() <= 1.0
        if case.label:
            assert lesion_data.RADIUS[0] <= case.radius <= lesion_data.RADIUS[1]
            assert lesion_data.CONTRAST[0] <= abs(case.contrast) <= lesion_data.CONTRAST[1]
        else:
            assert case.radius == 0 and case.contrast == 0
    # The same seed gives the same cases; test slabs are not training slabs.
    again = lesion_data.generate("test", 12, seed=7)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(cases, again, strict=True))
    template = lesion_data.load_template()
    splits = lesion_data.slab_splits(template.labels)
    train_slices = {z for _, z in splits["train"]}
    assert not {c.z for c in cases} & train_slices


def test_a_lesion_changes_pixels_only_inside_the_brain() -> None:
    rng = np.random.default_rng(0)
    image = np.full((64, 64), 0.5, dtype=np.float32)
    labels = np.zeros((64, 64), dtype=np.uint8)
    labels[16:48, 16:48] = 3
    out, radius, contrast = lesion_data.add_lesion(image, labels, rng)
    changed = out != image
    assert changed.any() and radius > 0 and contrast != 0
    assert not (changed & (labels == 0)).any()


def test_auc_matches_sklearn_and_the_reliability_table_counts_every_case() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    scores = rng.random(300).round(2)
    labels = (rng.random(300) < scores).astype(int)
    assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    table = reliability(scores, labels)
    assert len(table) == 10 and sum(r["cases"] for r in table) == 300


def _card_figure(name: str) -> float:
    card = (SHIPPED / "MODEL_CARD.md").read_text()
    match = re.search(rf"^\| {name} \| ([0-9.]+)", card, re.MULTILINE)
    assert match, f"the card has no {name} row"
    return float(match.group(1))


def test_the_shipped_model_fits_its_config_and_is_small() -> None:
    config = ClassifierConfig.from_dict(json.loads((SHIPPED / "config.json").read_text()))
    assert config.classes == ("no_lesion", "lesion") and config.positive_class == "lesion"
    assert (SHIPPED / "model.onnx").stat().st_size < 2 * 1024 * 1024
    assert preprocess(np.zeros((200, 150)), config).shape == (1, 1, *config.size)
    assert config.size == (96, 96)


def test_evaluation_reproduces_the_card_on_a_smaller_held_out_set(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = evaluate(SHIPPED, 200, bootstrap=200)
    assert result["cases"] == 200
    # 200 cases instead of the card's 1000: the same seed stream, so the first 200 of them.
    assert result["auc"] == pytest.approx(_card_figure("AUC"), abs=0.06)
    assert result["sensitivity"] == pytest.approx(_card_figure("Sensitivity"), abs=0.1)
    assert result["specificity"] == pytest.approx(_card_figure("Specificity"), abs=0.1)
    low, high = result["auc_ci95"]
    assert low <= result["auc"] <= high
    main(["--n", "40", "--bootstrap", "50"])
    printed = capsys.readouterr().out
    assert "AUC" in printed and "Reliability" in printed and "Acceptance:" in printed
    assert re.search(r"auc >= 0\.85: [0-9.]+ (PASS|FAIL)", printed)
