"""Segmentation metrics per case and class, bootstrap confidence intervals, clinical verdicts.

Per case and class (one class against the rest):
    dice = 2TP / (2TP + FP + FN)        sensitivity = TP / (TP + FN)
    specificity = TN / (TN + FP)        precision = TP / (TP + FP)
    auc  = Mann-Whitney AUC of the class probability over all pixels (ties count half)
    hd95 = symmetric 95th-percentile Hausdorff distance in mm between the two structures'
           boundaries: max of the two directed 95th percentiles (as MONAI's
           compute_hausdorff_distance with percentile=95), distances taken with the pixel
           spacing (scipy's exact Euclidean distance transform with `sampling`).

The missed-structure rule. A structure that is in the reference but absent from the
prediction is scored as the worst case, never dropped: Dice 0, sensitivity 0, precision 0,
HD95 = the image's diagonal in mm (no two points can be further apart). The same holds for a
structure predicted where the reference has none (Dice 0, precision 0, HD95 worst). Only a
metric that has nothing to measure is left out of that case's mean: Dice, HD95 and precision
when the class is in neither mask, sensitivity when the reference has no positives, AUC when
every pixel is one class. Each summary says how many cases (n) went into it.

Summary per class and metric: mean over cases, and a 95 % percentile-bootstrap interval
(cases resampled with replacement, `resamples` times, seeded, so the figure repeats).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

METRICS = ("dice", "sensitivity", "specificity", "precision", "auc", "hd95")


@dataclass(frozen=True)
class Threshold:
    target: float
    minimum: float
    higher_is_better: bool = True


# The reference design's clinical thresholds.
THRESHOLDS = {
    "dice": Threshold(0.85, 0.80),
    "sensitivity": Threshold(0.90, 0.85),
    "specificity": Threshold(0.85, 0.80),
    "precision": Threshold(0.85, 0.80),
    "auc": Threshold(0.90, 0.85),
    "hd95": Threshold(5.0, 10.0, higher_is_better=False),
}


def worst_distance(shape: tuple[int, ...], spacing: tuple[float, ...]) -> float:
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a neighbour outside it (full connectivity)."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def hd95(prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...]) -> float:
    """HD95 in mm; worst case when exactly one mask is empty; NaN when both are."""
    prediction, reference = prediction.astype(bool), reference.astype(bool)
    if not prediction.any() and not reference.any():
        return math.nan
    if not prediction.any() or not reference.any():
        return worst_distance(reference.shape, spacing)
    pred_edge, ref_edge = _boundary(prediction), _boundary(reference)
    to_ref = ndimage.distance_transform_edt(~ref_edge, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_edge, sampling=spacing)
    return float(max(np.percentile(to_ref[pred_edge], 95), np.percentile(to_pred[ref_edge], 95)))


def auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum statistic; NaN when one class is absent."""
    truth = truth.astype(bool).ravel()
    positives = int(truth.sum())
    negatives = truth.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = rankdata(scores.ravel())
    rank_sum = float(ranks[truth].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def _ratio(numerator: float, denominator: float, *, empty: float) -> float:
    return numerator / denominator if denominator else empty


def case_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    probabilities: np.ndarray | None,
    spacing: tuple[float, ...],
    classes: list[int],
) -> dict[int, dict[str, float]]:
    """Metrics for each class of one case; probabilities are (C, *shape) or None (no AUC)."""
    out: dict[int, dict[str, float]] = {}
    for k in classes:
        pred, ref = prediction == k, reference == k
        tp = float(np.count_nonzero(pred & ref))
        fp = float(np.count_nonzero(pred & ~ref))
        fn = float(np.count_nonzero(~pred & ref))
        tn = float(pred.size - tp - fp - fn)
        present = bool(ref.any() or pred.any())
        out[k] = {
            "dice": _ratio(2 * tp, 2 * tp + fp + fn, empty=math.nan),
            "sensitivity": _ratio(tp, tp + fn, empty=math.nan),
            "specificity": _ratio(tn, tn + fp, empty=math.nan),
            # Nothing predicted but something to find: a miss, scored 0, not undefined.
            "precision": _ratio(tp, tp + fp, empty=0.0 if present else math.nan),
            "auc": auc(probabilities[k], ref) if probabilities is not None else math.nan,
            "hd95": hd95(pred, ref, spacing),
        }
    return out


def bootstrap_ci(
    values: np.ndarray, *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; (nan, nan) for no values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return (math.nan, math.nan)
    if values.size == 1:
        return (float(values[0]), float(values[0]))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.size, size=(resamples, values.size))
    means = values[picks].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return (float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha)))


def verdict(metric: str, value: float) -> str:
    """'target', 'minimum' (meets the minimum only) or 'fail'."""
    rule = THRESHOLDS[metric]
    if math.isnan(value):
        return "fail"
    if rule.higher_is_better:
        return "target" if value >= rule.target else "minimum" if value >= rule.minimum else "fail"
    return "target" if value <= rule.target else "minimum" if value <= rule.minimum else "fail"


def _clean(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def summarise(
    per_case: list[dict[int, dict[str, float]]],
    classes: dict[int, str],
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean, bootstrap CI, n and verdict per class and metric; background is not judged."""
    report: dict[str, Any] = {}
    passed = True
    for k, name in sorted(classes.items()):
        entry: dict[str, Any] = {}
        for m_index, metric in enumerate(METRICS):
            values = np.array([case[k][metric] for case in per_case if k in case], dtype=float)
            values = values[~np.isnan(values)]
            mean = float(values.mean()) if values.size else math.nan
            low, high = bootstrap_ci(values, resamples=resamples, seed=seed + 7919 * m_index + k)
            result: dict[str, Any] = {
                "mean": _clean(mean),
                "ci95": [_clean(low), _clean(high)],
                "n": int(values.size),
            }
            if k != 0:
                result["verdict"] = verdict(metric, mean)
                passed &= result["verdict"] != "fail"
            entry[metric] = result
        report[name] = entry
    return {"classes": report, "passed": passed}


def thresholds_table() -> dict[str, dict[str, float | str]]:
    return {
        metric: {
            "target": rule.target,
            "minimum": rule.minimum,
            "better": "higher" if rule.higher_is_better else "lower",
        }
        for metric, rule in THRESHOLDS.items()
    }
