"""Volumetrics accuracy and atrophy grades on generated series with known tissue volumes.

    python -m model.segmentation.evaluate_volumetrics [--model model/segmentation/brain-tissue]
        [--levels 0,0.1,0.2,0.3] [--sides both,left] [--slice-mm 3] [--pixel-mm 1]
        [--size 256] [--slab 52,132] [--age-band 20-29] [--truth] [--card]

For each case of model/segmentation/volumetrics_data.py (the MNI152 maps with a known fraction
of grey and white matter turned into CSF, resliced), the model segments the volume slice by
slice as the app does, engine.brain measures it, and the table gives the true and measured
volumes (mL), the relative errors, true and measured BPF, the parenchymal asymmetry, the
atrophy grade and the flagged regions. `--truth` also grades the ground-truth labels (the
argmax of the resliced probabilities): what a perfect segmenter would give, which separates
the measure's behaviour from the model's. `--card` adds (or replaces) the section "Volumetrics
on generated MR series" of the model's MODEL_CARD.md with the table, the command and the
weights' SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.brain.normative import atrophy_assessment
from engine.brain.volumetrics import brain_volumetrics, tissue_indices
from engine.segmentation.model import Segmenter
from model.segmentation.evaluate import CARD_MARK
from model.segmentation.train import CARD_FILE
from model.segmentation.volumetrics_data import make_case

TISSUES = ("grey_matter", "white_matter", "csf")


def evaluate(
    model_dir: Path,
    *,
    levels: list[float],
    sides: list[str],
    slice_mm: int,
    pixel_mm: int,
    size: int,
    band: str,
    truth: bool,
    slab: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    segmenter = Segmenter.load(model_dir, backend="onnx", threads=1)
    classes = dict(segmenter.config.classes)
    labels_of = tissue_indices(classes)
    rows = []
    for side in sides:
        for level in levels:
            if level == 0 and side != sides[0]:
                continue
            case = make_case(
                level, side, slice_mm=slice_mm, pixel_mm=pixel_mm, size=size, z_range=slab
            )
            true = case.true_volumes_ml()
            true_bpf = (true["grey_matter"] + true["white_matter"]) / sum(true.values())
            sources = {"model": segmenter.segment(case.image.astype(np.float32)).labels}
            if truth:
                sources["truth"] = np.argmax(case.probabilities, axis=0).astype(np.uint8)
            for source, labels in sources.items():
                measured = brain_volumetrics(
                    labels, case.spacing_mm, classes, image=case.image
                ).to_dict()
                graded = atrophy_assessment(measured, labels_of, band=band, sex="F")
                rows.append(
                    {
                        "case": case.name,
                        "source": source,
                        "level": level,
                        "side": side,
                        "true_ml": true,
                        "measured_ml": measured["volumes_ml"],
                        "error_pct": {
                            t: round(100 * (measured["volumes_ml"][t] - true[t]) / true[t], 1)
                            for t in TISSUES
                        },
                        "true_bpf": round(true_bpf, 4),
                        "bpf": measured["bpf"],
                        "bpf_z": graded["measures"]["bpf"]["z"],
                        "asymmetry_parenchyma": measured["asymmetry"]["parenchyma"],
                        "grade": graded["grade"],
                        "flagged": [
                            f"{f['name']}:{f['side']}:{f['measure']}" for f in graded["flagged"]
                        ],
                    }
                )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "| case | labels | GM true/meas (err %) | WM true/meas (err %) | CSF true/meas (err %) "
        "| BPF true/meas (z) | AI parenchyma | grade | flagged |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [
            f"{r['true_ml'][t]:.0f}/{r['measured_ml'][t]:.0f} ({r['error_pct'][t]:+.1f})"
            for t in TISSUES
        ]
        print(
            f"| {r['case']} | {r['source']} | {' | '.join(cells)} | {r['true_bpf']:.3f}/"
            f"{r['bpf']:.3f} ({r['bpf_z']:+.2f}) | {r['asymmetry_parenchyma']:+.3f} | "
            f"{r['grade']} | {', '.join(r['flagged']) or '-'} |"
        )


CARD_TITLE = "Volumetrics on generated MR series"


def update_card(model_dir: Path, command: str, table: str) -> Path:
    """Add or replace the CARD_TITLE section at the end of the model card."""
    path = model_dir / CARD_FILE
    text = path.read_text() if path.is_file() else f"# Model card: {model_dir.name}\n"
    start, end = CARD_MARK.format(section=CARD_TITLE), CARD_MARK.format(section=f"/{CARD_TITLE}")
    text = re.sub(f"{re.escape(start)}.*?{re.escape(end)}\n?", "", text, flags=re.DOTALL)
    weights = model_dir / "model.onnx"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else "?"
    section = "\n".join(
        [
            start,
            f"### {CARD_TITLE}",
            "",
            "MNI152 grey/white-matter maps with a known fraction of both turned into CSF "
            "(whole brain or left hemisphere), resliced into DICOM MR series "
            "(model/segmentation/volumetrics_data.py); measured by engine.brain as the app does. "
            f"Weights model.onnx sha256 `{digest[:16]}`. Command: `{command}`. "
            "Method, references and reading: docs/volumetrics.md.",
            "",
            table.rstrip("\n"),
            end,
            "",
        ]
    )
    path.write_text(text.rstrip("\n") + "\n\n" + section)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("model/segmentation/brain-tissue"))
    parser.add_argument("--levels", default="0,0.1,0.2,0.3")
    parser.add_argument("--sides", default="both,left")
    parser.add_argument("--slice-mm", type=int, default=3)
    parser.add_argument("--pixel-mm", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--slab", help="first,last 1 mm template slice kept (e.g. 52,132)")
    parser.add_argument("--age-band", default="20-29")
    parser.add_argument("--truth", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--card", action="store_true", help="write the table into the card")
    args = parser.parse_args(argv)
    rows = evaluate(
        args.model,
        levels=[float(v) for v in args.levels.split(",")],
        sides=args.sides.split(","),
        slice_mm=args.slice_mm,
        pixel_mm=args.pixel_mm,
        size=args.size,
        band=args.age_band,
        truth=args.truth,
        slab=tuple(int(v) for v in args.slab.split(",")) if args.slab else None,  # type: ignore[arg-type]
    )
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        print_table(rows)
    print(buffer.getvalue(), end="")
    if args.card:
        command = "python -m model.segmentation.evaluate_volumetrics " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        print(f"card: {update_card(args.model, command, buffer.getvalue())}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
