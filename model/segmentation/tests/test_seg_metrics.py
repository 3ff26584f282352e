"""Segmentation metrics against small cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.segmentation.metrics import (
    auc,
    bootstrap_ci,
    case_metrics,
    hd95,
    summarise,
    verdict,
    worst_distance,
)


def test_it_counts_dice_sensitivity_specificity_precision_on_a_5x5_case() -> None:
    reference = np.zeros((5, 5), np.uint8)
    reference[1:3, 1:4] = 1  # 6 pixels
    prediction = np.zeros((5, 5), np.uint8)
    prediction[1:3, 1:3] = 1  # 4 pixels, all inside the reference
    prediction[4, 4] = 1  # one false positive
    result = case_metrics(prediction, reference, None, (1.0, 1.0), [1])[1]
    # TP 4, FP 1, FN 2, TN 25 - 7 = 18
    assert result["dice"] == pytest.approx(8 / 11)
    assert result["sensitivity"] == pytest.approx(4 / 6)
    assert result["specificity"] == pytest.approx(18 / 19)
    assert result["precision"] == pytest.approx(4 / 5)
    assert math.isnan(result["auc"])  # no probabilities given


def test_it_measures_hd95_in_mm_with_the_pixel_spacing_per_axis() -> None:
    prediction = np.zeros((6, 6), bool)
    reference = np.zeros((6, 6), bool)
    prediction[0, 0] = True
    reference[0, 3] = True  # 3 columns away
    assert hd95(prediction, reference, (2.0, 0.5)) == pytest.approx(1.5)
    assert hd95(prediction, reference, (0.5, 2.0)) == pytest.approx(6.0)
    reference[0, 3], reference[3, 0] = False, True  # now 3 rows away
    assert hd95(prediction, reference, (2.0, 0.5)) == pytest.approx(6.0)


def test_it_takes_the_95th_percentile_not_the_maximum() -> None:
    reference = np.zeros((12, 20), bool)
    reference[0, :] = True  # a 1-pixel line: every pixel is boundary
    prediction = reference.copy()
    prediction[10, 0] = True  # one outlier, 10 px away: 21 distances, 20 zeros
    assert hd95(prediction, reference, (1.0, 1.0)) == pytest.approx(0.0)
    prediction[10, 1] = True  # two outliers: 22 distances, p95 at index 19.95 -> 0.95 * 10
    assert hd95(prediction, reference, (1.0, 1.0)) == pytest.approx(9.5)


def test_it_computes_auc_by_ranks_with_ties_counted_half() -> None:
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)
    assert auc(np.array([0.9, 0.1]), np.array([1, 0])) == pytest.approx(1.0)
    assert math.isnan(auc(np.array([0.2, 0.3]), np.array([1, 1])))


def test_it_gives_the_bootstrap_interval_of_a_two_value_sample() -> None:
    # Resampled means of {0, 1} are 0, 0.5, 1 with chance 1/4, 1/2, 1/4: the 2.5 and 97.5
    # percentiles are 0 and 1.
    assert bootstrap_ci(np.array([0.0, 1.0]), resamples=4000, seed=1) == (0.0, 1.0)
    assert bootstrap_ci(np.array([0.7, 0.7, 0.7])) == (pytest.approx(0.7), pytest.approx(0.7))
    low, high = bootstrap_ci(np.array([0.1, 0.2, 0.9, 0.4, 0.5]), resamples=2000, seed=3)
    assert 0.1 < low < 0.42 < high < 0.9
    assert bootstrap_ci(np.array([0.1, 0.2, 0.9]), seed=5) == bootstrap_ci(
        np.array([0.1, 0.2, 0.9]), seed=5
    )


def test_it_scores_a_missed_structure_as_the_worst_case() -> None:
    reference = np.zeros((4, 6), np.uint8)
    reference[1:3, 2:4] = 1
    missed_case = case_metrics(np.zeros_like(reference), reference, None, (1.0, 2.0), [0, 1])
    missed = missed_case[1]
    assert missed["dice"] == 0.0
    assert missed["sensitivity"] == 0.0
    assert missed["precision"] == 0.0
    assert (
        missed["hd95"]
        == pytest.approx(math.sqrt(4**2 + 12**2))
        == worst_distance((4, 6), (1.0, 2.0))
    )
    perfect_case = case_metrics(reference, reference, None, (1.0, 2.0), [0, 1])
    assert perfect_case[1]["dice"] == 1.0 and perfect_case[1]["hd95"] == 0.0
    summary = summarise([perfect_case, missed_case], {0: "background", 1: "lesion"}, resamples=200)
    lesion = summary["classes"]["lesion"]
    assert lesion["dice"]["mean"] == 0.5 and lesion["dice"]["n"] == 2
    assert lesion["hd95"]["n"] == 2
    assert lesion["hd95"]["mean"] == pytest.approx(worst_distance((4, 6), (1.0, 2.0)) / 2, abs=1e-4)
    assert summary["passed"] is False


def test_it_scores_a_structure_predicted_where_there_is_none_as_the_worst_case() -> None:
    prediction = np.zeros((4, 4), np.uint8)
    prediction[0, 0] = 1
    result = case_metrics(prediction, np.zeros_like(prediction), None, (1.0, 1.0), [1])[1]
    assert result["dice"] == 0.0 and result["precision"] == 0.0
    assert result["hd95"] == pytest.approx(math.sqrt(32))
    assert math.isnan(result["sensitivity"])  # nothing to find: undefined, not a miss


def test_it_leaves_out_only_metrics_with_nothing_to_measure() -> None:
    empty = np.zeros((3, 3), np.uint8)
    result = case_metrics(empty, empty, None, (1.0, 1.0), [1])
    assert math.isnan(result[1]["dice"]) and math.isnan(result[1]["hd95"])
    assert result[1]["specificity"] == 1.0
    reference = empty.copy()
    reference[1, 1] = 1
    hit = case_metrics(reference, reference, None, (1.0, 1.0), [1])
    summary = summarise([result, hit], {1: "lesion"}, resamples=100)
    assert summary["classes"]["lesion"]["dice"] == {
        "mean": 1.0,
        "ci95": [1.0, 1.0],
        "n": 1,
        "verdict": "target",
    }
    assert summary["classes"]["lesion"]["specificity"]["n"] == 2


def test_it_judges_against_target_and_minimum() -> None:
    assert verdict("dice", 0.86) == "target"
    assert verdict("dice", 0.82) == "minimum"
    assert verdict("dice", 0.79) == "fail"
    assert verdict("hd95", 4.9) == "target"
    assert verdict("hd95", 7.0) == "minimum"
    assert verdict("hd95", 10.5) == "fail"
    assert verdict("auc", math.nan) == "fail"


def test_it_uses_class_probabilities_for_auc_per_case() -> None:
    reference = np.array([[0, 1], [1, 0]], np.uint8)
    probabilities = np.stack([1 - reference * 0.8, reference * 0.8]).astype(np.float32)
    result = case_metrics(reference, reference, probabilities, (1.0, 1.0), [0, 1])
    assert result[1]["auc"] == 1.0 and result[0]["auc"] == 1.0
