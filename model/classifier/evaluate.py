"""Evaluate the example lesion classifier on held-out generated slices.

    python -m model.classifier.evaluate [--model model/classifier/lesion] [--n 1000]
        [--seed 20261203] [--bootstrap 1000] [--json] [--cache DIR]

The cases come from model/classifier/data.py's `test` split: axial slabs of the template that
training and validation never used, drawn from their own seed stream. The model runs through
engine.classification (the same preprocessing and onnxruntime session the app uses).

Prints: AUC (Mann-Whitney) with a percentile bootstrap 95 % CI (cases resampled), sensitivity
and specificity at the config's threshold (with Wilson 95 % intervals), a reliability table
(10 equal-width bins of P(lesion): cases, mean predicted, observed share of lesions) with the
expected calibration error, and the acceptance figures as PASS/FAIL.

Acceptance (this project's, stated in MODEL_CARD.md; neither issue 18 nor the reference
design names figures): AUC >= 0.85, sensitivity >= 0.80, specificity >= 0.80.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from engine.classification import Classifier, ClassifierConfig, preprocess
from model.classifier.data import DEFAULT_SEED, generate

HERE = Path(__file__).resolve().parent
ACCEPTANCE = {"auc": 0.85, "sensitivity": 0.80, "specificity": 0.80}


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))  # ties get their mean rank
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def bootstrap_auc(scores: np.ndarray, labels: np.ndarray, n: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(labels), len(labels))
        value = auc(scores[idx], labels[idx])
        if not math.isnan(value):
            values.append(value)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def wilson(successes: int, total: int) -> tuple[float, float]:
    if total == 0:
        return float("nan"), float("nan")
    z = 1.959964
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


def reliability(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        rows.append(
            {
                "bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}",
                "cases": count,
                "mean_predicted": float(scores[mask].mean()) if count else None,
                "observed": float(labels[mask].mean()) if count else None,
            }
        )
    return rows


def test_cases(
    n: int, seed: int, cache: Path | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (n, 128, 128), labels and lesion radii of the first n test cases of `seed`."""
    path = cache / f"test-{n}-{seed}.npz" if cache else None
    if path is not None and path.is_file():
        with np.load(path) as stored:
            return stored["images"], stored["labels"], stored["radii"]
    cases = generate("test", n, seed=seed)
    images = np.stack([c.image for c in cases])
    labels = np.array([c.label for c in cases])
    radii = np.array([c.radius for c in cases])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, images=images, labels=labels, radii=radii)
    return images, labels, radii


def evaluate(
    model_dir: Path,
    n: int,
    seed: int = DEFAULT_SEED,
    bootstrap: int = 1000,
    cache: Path | None = None,
) -> dict[str, Any]:
    config = ClassifierConfig.from_dict(json.loads((model_dir / "config.json").read_text()))
    classifier = Classifier.from_bytes(config, (model_dir / "model.onnx").read_bytes())
    images, labels, radii = test_cases(n, seed, cache)
    positive = config.positive_index
    assert positive is not None, "the example classifier is binary"
    batch = np.concatenate([preprocess(image, config) for image in images])
    probabilities = np.concatenate(
        [classifier.probabilities(batch[i : i + 64]) for i in range(0, len(batch), 64)]
    )
    scores = probabilities[:, positive]
    predicted = scores >= config.threshold
    tp = int((predicted & (labels == 1)).sum())
    tn = int((~predicted & (labels == 0)).sum())
    pos, neg = int((labels == 1).sum()), int((labels == 0).sum())
    table = reliability(scores, labels)
    ece = sum(
        r["cases"] / len(labels) * abs(r["mean_predicted"] - r["observed"])
        for r in table
        if r["cases"]
    )
    value = auc(scores, labels)
    ci = bootstrap_auc(scores, labels, bootstrap, seed) if bootstrap else (value, value)
    sensitivity, specificity = tp / pos if pos else float("nan"), tn / neg if neg else float("nan")
    figures = {"auc": value, "sensitivity": sensitivity, "specificity": specificity}
    # Sensitivity by lesion size: where the model finds it hard.
    by_size = []
    for low, high in ((4.0, 6.0), (6.0, 8.0), (8.0, 10.01)):
        mask = (labels == 1) & (radii >= low) & (radii < high)
        if mask.any():
            by_size.append(
                {
                    "radius_px": f"{low}-{high}",
                    "cases": int(mask.sum()),
                    "sensitivity": float(predicted[mask].mean()),
                }
            )
    return {
        "model": config.extra.get("name", model_dir.name),
        "version": config.extra.get("version", ""),
        "cases": len(labels),
        "lesions": pos,
        "seed": seed,
        "threshold": config.threshold,
        "auc": value,
        "auc_ci95": list(ci),
        "bootstrap": bootstrap,
        "sensitivity": sensitivity,
        "sensitivity_ci95": list(wilson(tp, pos)),
        "specificity": specificity,
        "specificity_ci95": list(wilson(tn, neg)),
        "ece": float(ece),
        "reliability": table,
        "sensitivity_by_size": by_size,
        "acceptance": {
            k: {"needed": v, "measured": figures[k], "pass": bool(figures[k] >= v)}
            for k, v in ACCEPTANCE.items()
        },
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"{result['model']} {result['version']}: {result['cases']} held-out generated slices "
        f"({result['lesions']} with a lesion), seed {result['seed']}",
        f"AUC {result['auc']:.3f} (95% CI {result['auc_ci95'][0]:.3f}-{result['auc_ci95'][1]:.3f},"
        f" {result['bootstrap']} bootstrap resamples)",
        f"At threshold {result['threshold']}: sensitivity {result['sensitivity']:.3f} "
        f"(95% CI {result['sensitivity_ci95'][0]:.3f}-{result['sensitivity_ci95'][1]:.3f}), "
        f"specificity {result['specificity']:.3f} "
        f"(95% CI {result['specificity_ci95'][0]:.3f}-{result['specificity_ci95'][1]:.3f})",
        "",
        "Reliability (P(lesion) bins):",
        f"{'bin':>9} {'cases':>6} {'mean predicted':>15} {'observed':>9}",
    ]
    for row in result["reliability"]:
        mean = "-" if row["mean_predicted"] is None else f"{row['mean_predicted']:.3f}"
        observed = "-" if row["observed"] is None else f"{row['observed']:.3f}"
        lines.append(f"{row['bin']:>9} {row['cases']:>6} {mean:>15} {observed:>9}")
    lines.append(f"Expected calibration error: {result['ece']:.3f}")
    lines.append("")
    lines.append("Sensitivity by lesion size (mean semi-axis, px on 128):")
    for row in result["sensitivity_by_size"]:
        lines.append(f"  {row['radius_px']:>8}: {row['sensitivity']:.3f} ({row['cases']} cases)")
    lines.append("")
    lines.append("Acceptance:")
    for name, row in result["acceptance"].items():
        verdict = "PASS" if row["pass"] else "FAIL"
        lines.append(f"  {name} >= {row['needed']:.2f}: {row['measured']:.3f} {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=HERE / "lesion")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cache", type=Path, default=None, help="keep generated cases here")
    args = parser.parse_args(argv)
    result = evaluate(
        args.model, args.n, seed=args.seed, bootstrap=args.bootstrap, cache=args.cache
    )
    print(json.dumps(result, indent=1) if args.json else report(result))


if __name__ == "__main__":
    main()
