"""Benchmark the processing pipeline: per-stage and total ms per image, and throughput.

    python manage.py bench_pipeline                      # 512², 1024², 2048² + real images
    python manage.py bench_pipeline --sizes 256 --repeat 2 --workers 1 --no-real --json out.json

Each image goes through what the worker does, minus the storage and database writes:
decode and validate, a fresh data key wrapped by the KEK, detect, encrypt each region,
fill, grid, fingerprints, metrics, verification, and the PNG encodings that get stored.
Throughput runs the same work on 1 and 2 threads (the detector and the codecs release the
GIL for most of their time), so it shows what a second worker process would add on this
machine without loading a second model.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import import_string

from engine.crypto import envelope as crypto
from engine.detection import pipeline
from engine.intake.validation import validate_upload
from engine.pixels.restoration import encode_image
from imaging.vault.keys import new_scan_key

STAGES = (
    "decode_ms",
    "key_ms",
    "detect_ms",
    "encrypt_ms",
    "redact_ms",
    "grid_ms",
    "fingerprint_ms",
    "metrics_ms",
    "verify_ms",
    "encode_ms",
    "store_ms",
    "total_ms",
)


@dataclass(frozen=True)
class BenchImage:
    name: str
    data: bytes


def generated_image(size: int, seed: int = 0) -> BenchImage:
    """A size×size RGB scan-like image with burned-in text lines, as PNG."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 70 + 50 * np.sin(xx / (size / 14)) * np.cos(yy / (size / 9))
    grey = np.clip(base + rng.normal(0, 10, (size, size)), 0, 200).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    try:
        import cv2

        scale = max(size / 512, 0.4)
        for i, text in enumerate(("DOE^JANE  MRN 0012345", "DOB 1970-01-01  ST MARY HOSP")):
            cv2.putText(
                rgb,
                text,
                (int(12 * scale), int((30 + 28 * i) * scale)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.7 * scale,
                (255, 255, 255),
                max(2, int(2 * scale)),
                cv2.LINE_8,  # Hard-edged ink, as burned-in annotations are.
            )
    except ImportError:  # pragma: no cover - opencv is a requirement
        pass
    return BenchImage(f"generated-{size}", encode_image(rgb, "png"))


def real_images() -> list[BenchImage]:
    """The real test images that ship in PyPI packages (deid-data ultrasounds, pydicom)."""
    found: list[BenchImage] = []
    try:
        import deid_data

        folder = Path(deid_data.__file__).parent / "data" / "ultrasounds"
        for path in sorted(folder.glob("*.dcm")):
            found.append(BenchImage(f"deid-data/{path.name}", path.read_bytes()))
    except ImportError:
        pass
    try:
        from pydicom.data import get_testdata_file

        for name in ("CT_small.dcm", "MR_small.dcm", "US1_J2KR.dcm"):
            test_file = get_testdata_file(name)
            if isinstance(test_file, str):
                found.append(BenchImage(f"pydicom/{name}", Path(test_file).read_bytes()))
    except Exception:  # noqa: BLE001 - test data is optional for a benchmark
        pass
    return found


def run_once(image: BenchImage, detector: pipeline.Detector) -> dict[str, float]:
    """One image through the worker's steps; returns stage timings in ms."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with pipeline.timed(timings, "decode_ms"):
        decoded = validate_upload(
            name=image.name,
            data=image.data,
            max_bytes=max(len(image.data), settings.UPLOAD_MAX_BYTES),
            max_pixels=settings.UPLOAD_MAX_PIXELS,
        )
    with pipeline.timed(timings, "key_ms"):
        data_key, _ = new_scan_key(image.name)
    result = pipeline.pipeline_run(
        image=decoded,
        data_key=data_key,
        scan_ref=image.name,
        detector=detector,
        classes=settings.IMAGING_REDACT_CLASSES,
        padding=settings.IMAGING_BOX_PADDING,
        verify_rounds=settings.IMAGING_VERIFY_ROUNDS,
        verify_scope=settings.IMAGING_VERIFY_SCOPE,
        timings=timings,
    )
    with pipeline.timed(timings, "encode_ms"):
        outputs = {
            "original.enc": crypto.encrypt_blob(data_key, image.data, aad=b"bench-original"),
            "redacted-pixels.enc": crypto.encrypt_blob(
                data_key, crypto.pack_array(result.redacted_pixels), aad=b"bench"
            ),
        }
        for i, frame in enumerate(result.redacted_display):
            outputs[f"redacted-{i:04d}.png"] = encode_image(frame, "png")
        for i, frame in enumerate(result.grid_display):
            outputs[f"grid-{i:04d}.png"] = encode_image(frame, "png")
    # Written and synced like the storage layer does, then thrown away.
    with pipeline.timed(timings, "store_ms"), tempfile.TemporaryDirectory() as folder:
        for name, data in outputs.items():
            with open(os.path.join(folder, name), "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
    timings["total_ms"] = (time.perf_counter() - start) * 1000.0
    timings["regions"] = float(len(result.regions))
    return timings


def summarise(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        values = np.asarray([s.get(stage, 0.0) for s in samples], dtype=np.float64)
        out[stage] = {
            "median": round(float(np.median(values)), 2),
            "p95": round(float(np.percentile(values, 95)), 2),
        }
    return out


def throughput(
    images: list[BenchImage], detector: pipeline.Detector, workers: int, rounds: int
) -> float:
    """Images per second processing `images` `rounds` times on `workers` threads."""
    work = [img for _ in range(rounds) for img in images]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda img: run_once(img, detector), work))
    elapsed = time.perf_counter() - start
    return round(len(work) / elapsed, 3) if elapsed > 0 else 0.0


class Command(BaseCommand):
    help = "Benchmark the imaging pipeline per stage, and its throughput on 1 and 2 workers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sizes", default="512,1024,2048", help="Square sizes, comma list.")
        parser.add_argument("--repeat", type=int, default=5, help="Runs per image.")
        parser.add_argument("--workers", default="1,2", help="Worker counts for throughput.")
        parser.add_argument("--rounds", type=int, default=2, help="Passes per throughput run.")
        parser.add_argument("--no-real", action="store_true", help="Skip the real images.")
        parser.add_argument(
            "--detector", default=None, help="Dotted path of the detector (default: setting)."
        )
        parser.add_argument("--json", dest="json_path", default=None, help="Also write JSON.")
        parser.add_argument(
            "--cine",
            default=None,
            help="Instead: generated cines of these frame counts (e.g. 30,100,300), each in its "
            "own process, for time and peak RSS (bench/cine.py).",
        )
        parser.add_argument("--cine-size", default="1024x768", help="Cine frame WxH.")
        parser.add_argument(
            "--cine-dicom",
            action="store_true",
            help="Also write the de-identified DICOM copy (still built from the whole array).",
        )
        parser.add_argument("--cine-child", default=None, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["cine_child"]:
            self._cine_child(options)
            return
        if options["cine"]:
            self._cine(options)
            return
        try:
            sizes = [int(s) for s in options["sizes"].split(",") if s.strip()]
            workers = [int(w) for w in options["workers"].split(",") if w.strip()]
        except ValueError:
            raise CommandError("--sizes and --workers are comma-separated integers") from None
        if options["repeat"] < 1 or any(w < 1 for w in workers) or any(s < 16 for s in sizes):
            raise CommandError("--repeat and --workers must be >= 1, sizes >= 16")
        detector: Callable[[np.ndarray], Any] = import_string(
            options["detector"] or settings.IMAGING_DETECTOR
        )

        images = [generated_image(size, seed=i) for i, size in enumerate(sizes)]
        if not options["no_real"]:
            images += real_images()
        # Warm up: the model loads once per process, which is not per-image cost.
        run_once(images[0], detector)

        rows: list[dict[str, Any]] = []
        for image in images:
            samples = [run_once(image, detector) for _ in range(options["repeat"])]
            rows.append(
                {
                    "image": image.name,
                    "bytes": len(image.data),
                    "regions": int(samples[-1]["regions"]),
                    "stages": summarise(samples),
                }
            )
        rates = {str(w): throughput(images, detector, w, options["rounds"]) for w in workers}
        report = {
            "detector": options["detector"] or settings.IMAGING_DETECTOR,
            "repeat": options["repeat"],
            "images": rows,
            "images_per_second": rates,
        }
        self._print_table(report)
        text = json.dumps(report, indent=2)
        self.stdout.write(text)
        if options["json_path"]:
            Path(options["json_path"]).write_text(text + "\n")

    def _print_table(self, report: dict[str, Any]) -> None:
        columns = [s.removesuffix("_ms") for s in STAGES]
        header = f"{'image':<34}{'reg':>4} " + "".join(f"{c:>16}" for c in columns)
        self.stdout.write("ms per image, median / p95")
        self.stdout.write(header)
        for row in report["images"]:
            cells = "".join(
                f"{row['stages'][s]['median']:>8.1f}/{row['stages'][s]['p95']:<7.1f}"
                for s in STAGES
            )
            self.stdout.write(f"{row['image'][:33]:<34}{row['regions']:>4} {cells}")
        for count, rate in report["images_per_second"].items():
            self.stdout.write(f"throughput with {count} worker(s): {rate} images/s")

    # --- Cines: one process per cine, so each peak RSS is that cine's alone. ---------------

    def _cine(self, options: dict[str, Any]) -> None:
        import subprocess
        import sys

        from bench.cine import cine_dicom

        try:
            counts = [int(c) for c in options["cine"].split(",") if c.strip()]
            width, height = (int(v) for v in options["cine_size"].lower().split("x"))
        except ValueError:
            raise CommandError("--cine is a comma list of counts, --cine-size WxH") from None
        rows = []
        with tempfile.TemporaryDirectory() as folder:
            single = Path(folder) / "cine-1.dcm"
            single.write_bytes(cine_dicom(1, height, width))
            for count in counts:
                path = Path(folder) / f"cine-{count}.dcm"
                path.write_bytes(cine_dicom(count, height, width))
                command = [
                    sys.executable,
                    str(Path(settings.BASE_DIR) / "manage.py"),
                    "bench_pipeline",
                    "--cine-child",
                    f"{single},{path}",
                    *(["--cine-dicom"] if options["cine_dicom"] else []),
                    *(["--detector", options["detector"]] if options["detector"] else []),
                ]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                row["bytes"] = path.stat().st_size
                rows.append(row)
                path.unlink()
        self.stdout.write(
            f"{'frames':>6} {'file MB':>8} {'1 frame s':>10} {'cine s':>8} {'ratio':>6} "
            f"{'detector calls':>15} {'groups':>7} {'peak RSS MiB':>13} {'1-frame RSS':>12} "
            f"{'1 frame CPU s':>14} {'cine CPU s':>11} {'CPU ratio':>10}"
        )
        for row in rows:
            cine = row["cine"]
            one = row["one_frame"]
            ratio = cine["timings"]["total_ms"] / one["timings"]["total_ms"]
            self.stdout.write(
                f"{cine['frames']:>6} {row['bytes'] / 2**20:>8.1f} "
                f"{one['timings']['total_ms'] / 1000:>10.2f} "
                f"{cine['timings']['total_ms'] / 1000:>8.2f} "
                f"{ratio:>6.1f} {cine['detector_calls']:>15} {cine['region_groups']:>7} "
                f"{cine['peak_rss_mib']:>13.0f} {one['peak_rss_mib']:>12.0f} "
                f"{one['timings']['cpu_ms'] / 1000:>14.2f} "
                f"{cine['timings']['cpu_ms'] / 1000:>11.2f} "
                f"{cine['timings']['cpu_ms'] / one['timings']['cpu_ms']:>10.1f}"
            )
        text = json.dumps(rows, indent=2)
        self.stdout.write(text)
        if options["json_path"]:
            Path(options["json_path"]).write_text(text + "\n")

    def _cine_child(self, options: dict[str, Any]) -> None:
        from bench.cine import process_cine

        detector = import_string(options["detector"] or settings.IMAGING_DETECTOR)
        single, path = options["cine_child"].split(",")
        one = Path(single).read_bytes()
        process_cine(one, detector)  # Warm up: the model loads once per process.
        one_frame = process_cine(one, detector)
        cine = process_cine(Path(path).read_bytes(), detector, with_dicom=options["cine_dicom"])
        self.stdout.write(json.dumps({"one_frame": one_frame, "cine": cine}))
