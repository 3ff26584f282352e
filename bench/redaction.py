"""Redaction benchmark: ours against Microsoft Presidio's DicomImageRedactorEngine.

    make bench                                   # installs what it needs, then runs this
    .venv/bin/python -m bench.redaction [--repeat 5] [--presidio-repeat 1] [--sizes 512,1024,2048]
                                        [--no-presidio] [--json out.json]

One run, the same files for both systems (bench/cases.py): the hand-checked real test set
(deid-data and pydicom-data images with burned-in text, model/detector/testset/ground_truth.json)
and generated 512², 1024², 2048² scans, all as DICOM files on disk.

Timed per image, model loading and one warm-up call excluded for both:
- ours: read and validate the file, a fresh data key wrapped by the KEK, detect (the configured
  detector, as the worker calls it), pad, encrypt every region (AES-256-GCM), fill, and write
  the redacted DICOM. The worker's other steps (grid, fingerprints, quality metrics,
  verification pass, database) are not redaction and are left out; `manage.py bench_pipeline`
  times those.
- Presidio: read the file, `redact_and_return_bbox` (Tesseract OCR, spaCy + recognisers,
  header values as deny-list), write the redacted DICOM. It runs in its own virtual
  environment (.bench-venv) through bench/presidio_runner.py.

Scored by model/detector/evaluate.py's `score_image` for both: a PHI box counts as found when
>= 90 % of its area is covered by the padded boxes; a false region is a box with < 20 % of its
area on any annotated text. Presidio's word boxes get the same padding as our detections
(pad_box, and line completion over the file's own pixels, as the pipeline pads), although
Presidio fills them unpadded: that can only raise Presidio's recall.

ms per image: each image's median over its repeats, then the median and p95 over images.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH_PYTHON = ROOT / ".bench-venv" / "bin" / "python"


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medimg.settings")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / "var" / "ultralytics"))
    import django

    django.setup()


def ours_once(
    data: bytes, detector: Any, out_path: Path, ref: str, stages: dict[str, float] | None = None
) -> tuple[float, list[Any]]:
    """Our redaction of one DICOM file; returns (ms, raw detections of frame 0).

    `stages`, when given, gets the ms of each step added to it."""
    from django.conf import settings

    from engine.detection import pipeline
    from engine.detection.detector import Detection
    from engine.intake.validation import validate_upload
    from imaging.management.commands.redact import encode_redacted
    from imaging.vault.keys import new_scan_key

    stages = {} if stages is None else stages
    timed = pipeline.timed
    start = time.perf_counter()
    with timed(stages, "read+decode"):
        image = validate_upload(
            name="bench.dcm",
            data=data,
            max_bytes=max(len(data), settings.UPLOAD_MAX_BYTES),
            max_pixels=settings.UPLOAD_MAX_PIXELS,
        )
    with timed(stages, "key"):
        data_key, _ = new_scan_key(ref)
    height, width = int(image.display.shape[1]), int(image.display.shape[2])
    with timed(stages, "detect"):
        found = pipeline.detect_frames(
            image.display, detector, classes=settings.IMAGING_REDACT_CLASSES
        )
    boxes = pipeline.padded_boxes(found, settings.IMAGING_BOX_PADDING, height, width)
    with timed(stages, "encrypt"):
        sealed = [
            pipeline.seal_region(
                pixels=image.pixels, box=b, index=i, data_key=data_key, scan_ref=ref
            )
            for i, b in enumerate(boxes)
        ]
    assert len(sealed) == len(boxes)
    with timed(stages, "fill+write"):
        redacted = pipeline.fill_frames(image.pixels, boxes)
        out_path.write_bytes(encode_redacted(image, data, redacted))
    ms = (time.perf_counter() - start) * 1000.0
    return ms, [Detection(b.coords, b.label, b.confidence) for b in found if b.frame == 0]


def run_ours(cases: list[Any], paths: list[Path], repeat: int, out_dir: Path) -> list[dict]:
    from imaging.jobs.detector import default_detector

    detector = default_detector()
    ours_once(paths[0].read_bytes(), detector, out_dir / "warm.dcm", "warm")
    rows = []
    for case, path in zip(cases, paths, strict=True):
        data = path.read_bytes()
        times: list[float] = []
        found: list[Any] = []
        steps: list[Any] = []
        for i in range(repeat):
            stages: dict[str, float] = {}
            ms, found = ours_once(data, detector, out_dir / "ours.dcm", f"{case.name}-{i}", stages)
            times.append(ms)
            steps.append(stages)
        stage_ms = {k: round(statistics.median(s[k] for s in steps), 1) for k in steps[0]}
        rows.append({"name": case.name, "ms": times, "detections": found, "stages": stage_ms})
        print(f"ours     {case.name}: {statistics.median(times):.0f} ms", file=sys.stderr)
    return rows


def run_presidio(manifest: Path, repeat: int) -> dict[str, Any]:
    from engine.detection.detector import Detection

    command = [str(BENCH_PYTHON), str(ROOT / "bench" / "presidio_runner.py"), str(manifest)]
    done = subprocess.run(
        [*command, "--repeat", str(repeat)], check=True, stdout=subprocess.PIPE, text=True
    )
    report = json.loads(done.stdout)
    for row in report["results"]:
        # Presidio reports a box once per entity found in it; one box is one region.
        unique = sorted({tuple(b) for b in row["boxes"]})
        row["detections"] = [Detection(tuple(b), "presidio", 1.0) for b in unique]
    return report


def case_frame(case: Any) -> np.ndarray:
    """The 8-bit pixels of a case's file (bench/cases.py writes the pixels the boxes were drawn
    on): what the pipeline's line completion reads when it pads, so the scoring's padding reads
    them too. (Scoring on an uninitialised array made the result depend on whatever memory it
    got: the same detections scored 10/11 or 11/11 on the generated 1024² scan.)"""
    import pydicom

    return np.asarray(pydicom.dcmread(io.BytesIO(case.dicom)).pixel_array)


def score(cases: list[Any], rows: list[dict], padding: int) -> dict[str, Any]:
    from model.detector.evaluate import score_image

    scored = [
        score_image(case.truth, case_frame(case), row["detections"], padding)
        for case, row in zip(cases, rows, strict=True)
    ]
    per_image_ms = [statistics.median(row["ms"]) for row in rows]

    def summary(keep: list[bool]) -> dict[str, Any]:
        picked = [s for s, k in zip(scored, keep, strict=True) if k]
        ms = [m for m, k in zip(per_image_ms, keep, strict=True) if k]
        if not picked:
            return {"images": 0}
        phi = sum(s["phi_boxes"] for s in picked)
        return {
            "images": len(picked),
            "ms_median": statistics.median(ms),
            "ms_p95": float(np.percentile(ms, 95)),
            "phi_boxes": phi,
            "phi_found": sum(s["phi_found"] for s in picked),
            "recall": sum(s["phi_found"] for s in picked) / phi if phi else None,
            "false_regions": sum(len(s["false_regions"]) for s in picked),
            "false_per_image": sum(len(s["false_regions"]) for s in picked) / len(picked),
        }

    real = [c.truth.package != "generated" for c in cases]
    return {
        "all": summary([True] * len(cases)),
        "real": summary(real),
        "generated": summary([not r for r in real]),
        "per_image": [
            {
                "name": s["image"],
                "ms": round(m, 1),
                "phi": f"{s['phi_found']}/{s['phi_boxes']}",
                "false": len(s["false_regions"]),
                "stages": row.get("stages"),
            }
            for s, m, row in zip(scored, per_image_ms, rows, strict=True)
        ],
    }


def print_report(report: dict[str, Any]) -> None:
    ours, theirs = report["ours"], report.get("presidio")
    print(f"load average at start {report['load_start']}, at end {report['load_end']}")
    print(f"ours: {report['detector']}; presidio: {report.get('presidio_engine', 'not run')}")
    print(f"repeats per image: ours {report['repeat']}, presidio {report['presidio_repeat']}")
    print()
    print(
        f"{'image':<48}{'ours ms':>9}{'phi':>7}{'false':>6}"
        f"  {'presidio ms':>11}{'phi':>7}{'false':>6}"
    )
    for i, row in enumerate(ours["per_image"]):
        line = f"{row['name'][:47]:<48}{row['ms']:>9.0f}{row['phi']:>7}{row['false']:>6}"
        if theirs:
            other = theirs["per_image"][i]
            line += f"  {other['ms']:>11.0f}{other['phi']:>7}{other['false']:>6}"
        print(line)
    print()
    names = list(ours["per_image"][0]["stages"] or {})
    print("ours, by step (ms, median of repeats): " + ", ".join(names))
    for row in ours["per_image"]:
        cells = " ".join(f"{row['stages'][k]:>8.1f}" for k in names)
        print(f"  {row['name'][:46]:<46}{cells}")
    print()
    print(f"{'set':<10}{'system':<10}{'median ms':>10}{'p95 ms':>10}{'recall':>16}", end="")
    print(f"{'false/img':>10}")
    for part in ("real", "generated", "all"):
        if not ours[part]["images"]:
            continue
        for label, block in (("ours", ours), ("presidio", theirs)):
            if not block:
                continue
            s = block[part]
            recall = f"{s['recall']:.3f} ({s['phi_found']}/{s['phi_boxes']})"
            print(
                f"{part:<10}{label:<10}{s['ms_median']:>10.0f}{s['ms_p95']:>10.0f}"
                f"{recall:>16}{s['false_per_image']:>10.2f}"
            )
        if theirs:
            ratio = theirs[part]["ms_median"] / ours[part]["ms_median"]
            print(f"{part:<10}{'ratio':<10}presidio / ours, median: {ratio:.1f}x")
    if theirs:
        ratio = report["ratio_median"]
        recall_ok = ours["all"]["recall"] >= theirs["all"]["recall"]
        print()
        print(
            f"target: >= 10x faster with recall no lower than Presidio's -> "
            f"{ratio:.1f}x faster ({'met' if ratio >= 10 else 'NOT met'}), recall "
            f"{ours['all']['recall']:.3f} vs {theirs['all']['recall']:.3f} "
            f"({'met' if recall_ok else 'NOT met'})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per image, ours")
    parser.add_argument("--presidio-repeat", type=int, default=1, help="runs per image, Presidio")
    parser.add_argument("--sizes", default="512,1024,2048")
    parser.add_argument("--no-real", action="store_true")
    parser.add_argument("--no-presidio", action="store_true")
    parser.add_argument("--json", dest="json_path", type=Path)
    args = parser.parse_args()
    if args.repeat < 1 or args.presidio_repeat < 1:
        parser.error("repeats must be >= 1")
    if not args.no_presidio and not BENCH_PYTHON.exists():
        parser.error(f"{BENCH_PYTHON} is missing: run `make bench` (or pass --no-presidio)")

    _setup_django()
    from django.conf import settings

    from bench.cases import all_cases

    sizes = tuple(int(s) for s in args.sizes.split(",") if s.strip())
    load_start = [round(v, 2) for v in os.getloadavg()]
    cases = all_cases(sizes, real=not args.no_real)
    with tempfile.TemporaryDirectory(prefix="medimg-bench-") as tmp:
        out_dir = Path(tmp)
        paths = []
        for i, case in enumerate(cases):
            paths.append(out_dir / f"{i:02d}.dcm")
            paths[-1].write_bytes(case.dicom)
        manifest = out_dir / "manifest.json"
        manifest.write_text(
            json.dumps(
                {
                    "files": [
                        {"name": c.name, "path": str(p)} for c, p in zip(cases, paths, strict=True)
                    ]
                }
            )
        )
        ours_rows = run_ours(cases, paths, args.repeat, out_dir)
        presidio = None if args.no_presidio else run_presidio(manifest, args.presidio_repeat)

    padding = settings.IMAGING_BOX_PADDING
    report: dict[str, Any] = {
        "detector": f"{settings.IMAGING_DETECTOR} (padding {padding})",
        "repeat": args.repeat,
        "presidio_repeat": args.presidio_repeat if presidio else 0,
        "ours": score(cases, ours_rows, padding),
        "load_start": load_start,
        "load_end": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    if presidio:
        report["presidio_engine"] = f"{presidio['engine']}, spaCy {presidio['spacy_model']}"
        report["presidio"] = score(cases, presidio["results"], padding)
        report["ratio_median"] = (
            report["presidio"]["all"]["ms_median"] / report["ours"]["all"]["ms_median"]
        )
    print_report(report)
    if args.json_path:
        args.json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
