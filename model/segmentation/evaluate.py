"""Evaluate a trained segmentation model on a data set (`python -m model.segmentation.cli`).

Each case is segmented whole (a volume slice by slice for a 2D network) with the model's own
preprocessing, and scored per class with model/segmentation/metrics.py using the case's pixel
spacing. The report (JSON-ready dict):

    {"model", "data", "cases", "backend", "threads",
     "classes": {name: {metric: {"mean", "ci95": [lo, hi], "n", "verdict"}}},
     "passed": bool,                # every foreground metric meets at least its minimum
     "thresholds": {metric: {"target", "minimum", "better"}},
     "timing": {"ms_per_slice_mean", "ms_per_slice_p95", "slices",
                "stages_ms_per_slice": {"clip", "normalise", ..., "network"}}}

Background is reported but not judged. The timing is wall time of preprocessing plus network
per 2D slice (a volume's time divided by its slices), with `threads` torch or onnxruntime
threads, after one untimed warm-up run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from engine.segmentation.model import Segmenter
from model.segmentation.dataset import case_index, case_names, load_case, load_classes
from model.segmentation.metrics import case_metrics, summarise, thresholds_table
from model.segmentation.train import CARD_FILE

CARD_MARK = "<!-- evaluation: {section} -->"


def evaluate(
    model_dir: Path,
    data: Path,
    *,
    backend: str = "torch",
    threads: int = 2,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    segmenter = Segmenter.load(model_dir, backend=backend, threads=threads)
    classes = segmenter.config.classes
    data_classes = load_classes(data)
    if data_classes != classes:
        raise ValueError(f"data classes {data_classes} differ from the model's {classes}")
    per_case = []
    slice_ms: list[float] = []
    stage_ms: dict[str, float] = {}
    names = case_names(data)
    index = case_index(data)
    # One untimed run first: the first call pays for lazy allocation and kernel selection.
    segmenter.segment(load_case(data, names[0], data_classes, index).image)
    for name in names:
        case = load_case(data, name, data_classes, index)
        result = segmenter.segment(case.image)
        slices = 1 if case.image.ndim == 2 else case.image.shape[0]
        slice_ms.extend([result.ms / slices] * slices)
        for stage, ms in result.stages_ms.items():
            stage_ms[stage] = stage_ms.get(stage, 0.0) + ms
        per_case.append(
            case_metrics(
                result.labels, case.mask, result.probabilities, case.spacing, list(classes)
            )
        )
    summary = summarise(per_case, classes, resamples=resamples, seed=seed)
    return {
        "model": str(model_dir),
        "data": str(data),
        "cases": len(names),
        "backend": backend,
        "threads": threads,
        **summary,
        "thresholds": thresholds_table(),
        "timing": {
            "ms_per_slice_mean": round(float(np.mean(slice_ms)), 2),
            "ms_per_slice_p95": round(float(np.percentile(slice_ms, 95)), 2),
            "slices": len(slice_ms),
            "stages_ms_per_slice": {k: round(v / len(slice_ms), 2) for k, v in stage_ms.items()},
        },
    }


def card_section(title: str, report: dict[str, Any]) -> str:
    lines = [
        CARD_MARK.format(section=title),
        f"### {title}",
        "",
        f"Data `{report['data']}`, {report['cases']} cases, backend {report['backend']}, "
        f"threads: {report['threads']}. Mean over cases [bootstrap 95 % CI] (n); verdict "
        "against target/minimum. Overall: " + ("PASS" if report["passed"] else "FAIL") + ".",
        "",
        "| class | " + " | ".join(report["thresholds"]) + " |",
        "|---" * (len(report["thresholds"]) + 1) + "|",
    ]
    for name, metrics in report["classes"].items():
        cells = []
        for metric in report["thresholds"]:
            entry = metrics[metric]
            if entry["mean"] is None:
                cells.append("n/a")
                continue
            low, high = entry["ci95"]
            cell = f"{entry['mean']:.3f} [{low:.3f}, {high:.3f}] ({entry['n']})"
            cells.append(cell + (f" {entry['verdict']}" if "verdict" in entry else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    timing = report["timing"]
    lines += [
        "",
        f"Speed: {timing['ms_per_slice_mean']} ms per slice mean, {timing['ms_per_slice_p95']} "
        f"p95, over {timing['slices']} slices (preprocessing + network); per stage: "
        + ", ".join(f"{k} {v} ms" for k, v in timing["stages_ms_per_slice"].items())
        + ".",
        CARD_MARK.format(section=f"/{title}"),
        "",
    ]
    return "\n".join(lines)


def update_card(model_dir: Path, title: str, report: dict[str, Any]) -> Path:
    """Add or replace the section called `title` at the end of the model card."""
    path = Path(model_dir) / CARD_FILE
    text = path.read_text() if path.is_file() else f"# Model card: {Path(model_dir).name}\n"
    start = re.escape(CARD_MARK.format(section=title))
    end = re.escape(CARD_MARK.format(section=f"/{title}"))
    text = re.sub(f"{start}.*?{end}\n?", "", text, flags=re.DOTALL)
    path.write_text(text.rstrip("\n") + "\n\n" + card_section(title, report))
    return path
