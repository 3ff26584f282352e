"""De-identify DICOM files in a batch, outside the web app, with the upload pipeline's code.

    python manage.py deidentify INPUT... --out DIR [--mapping-plain]
                                [--weights PATH --backend onnx|torch]

INPUT is a DICOM file, a folder (searched recursively) or a zip (its DICOM members). Each
file goes through what a DICOM upload goes through: `validate_upload`, `pipeline_run` (the
configured detector on every frame, each region padded, cropped and sealed with AES-256-GCM,
filled, and a verification pass) and `imaging.vault.identity.dicom_deidentify` (PS3.15 Annex E;
options and the installation secret from settings, so a run gives a file the same UIDs,
pseudonym and date shift as an upload and as any other run with the same MEDIMG_DEID_SECRET).

Written under DIR, named by the remapped SOP Instance UID (nothing of the input's name):
- `<uid>.dcm`: the de-identified DICOM (redacted pixels, de-identified header);
- `<uid>.json`: its report: edition, options, counts of actions by kind, pixel regions;
- `deid-mapping-<run>.json.enc` once per run: for every file, its input path, the original
  identifying values, the date shift, the UID mapping and the sealed pixel regions. Encrypted
  (AES-256-GCM under a fresh data key wrapped by the current KEK, as scans are); with
  `--mapping-plain`, `deid-mapping-<run>.json` in clear instead (the regions stay sealed).

stdout: one JSON line per input, {"input", "output", "report", "regions", "needs_review",
"ms"} or {"input", "error": {"code", "message"}, "ms"}, then {"mapping": path, "files": n}.
A bad file (not DICOM, truncated, no pixel data...) gets its error line and writes nothing;
the others go on and the command exits with status 1.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from engine.crypto import envelope as crypto
from engine.detection import pipeline
from engine.dicom import deid
from engine.errors import ImagingError
from engine.intake.validation import sniff_kind
from imaging.jobs.batch import (
    FileFailed,
    batch_detector,
    failure_record,
    file_decode,
    pipeline_options,
    write_atomic,
)
from imaging.vault.identity import DeidOutcome, dicom_deidentify, identity_document, uid_secret
from imaging.vault.keys import unwrap_data_key, wrap_data_key

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
SNIFF_BYTES = 132
MAPPING_FORMAT = "medimg-deid-mapping/v1"


def _is_dicom_name_or_bytes(name: str, head: bytes) -> bool:
    return Path(name).suffix.lower() in DICOM_SUFFIXES or sniff_kind(head) == "dicom"


def iter_inputs(paths: list[str], *, member_limit: int) -> Iterator[tuple[str, Any]]:
    """(label, loader) per input: files as given, DICOM files in folders and zips.

    A loader returns the bytes or raises FileFailed, so one unreadable input is one error
    line. Zip members larger than `member_limit` are refused unread (a zip bomb stays shut).
    """
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if child.suffix.lower() == ".zip":
                    yield from _zip_members(child, member_limit)
                elif _is_dicom_name_or_bytes(child.name, _head(child)):
                    yield str(child), _reader(child)
        elif path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
            yield from _zip_members(path, member_limit)
        else:
            yield str(path), _reader(path)


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(SNIFF_BYTES)
    except OSError:
        return b""


def _reader(path: Path) -> Any:
    def load() -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise FileFailed("unreadable_file", f"{exc.strerror or exc}") from exc

    return load


def _zip_members(path: Path, limit: int) -> Iterator[tuple[str, Any]]:
    try:
        archive = zipfile.ZipFile(path)
        infos = [i for i in archive.infolist() if not i.is_dir()]
    except (OSError, zipfile.BadZipFile) as exc:
        reason = f"not a readable zip: {exc}"

        def broken() -> bytes:
            raise FileFailed("unreadable_file", reason)

        yield str(path), broken
        return
    for info in sorted(infos, key=lambda i: i.filename):
        if info.filename.startswith("__MACOSX/"):
            continue
        if info.file_size > limit:
            if Path(info.filename).suffix.lower() in DICOM_SUFFIXES:

                def too_large() -> bytes:
                    raise FileFailed("file_too_large", "zip member over UPLOAD_MAX_BYTES")

                yield f"{path}!{info.filename}", too_large
            continue
        with archive.open(info) as member:
            head = member.read(SNIFF_BYTES)
        if not _is_dicom_name_or_bytes(info.filename, head):
            continue

        def load(info: zipfile.ZipInfo = info) -> bytes:
            try:
                with archive.open(info) as member:
                    return member.read(limit + 1)
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                raise FileFailed("unreadable_file", f"zip member unreadable: {exc}") from exc

        yield f"{path}!{info.filename}", load


def uid_mapping(outcome: DeidOutcome) -> dict[str, str]:
    """Original UID -> remapped UID, for every UID the file had replaced."""
    secret = uid_secret()
    mapping: dict[str, str] = {}
    for record in outcome.removed_values.values():
        if record.get("vr") != "UI" or record.get("element") is None:
            continue
        for uid in str(record["display"]).split("\\"):
            if uid.strip():
                mapping[uid.strip()] = deid.remap_uid(uid, secret)
    return mapping


class Command(BaseCommand):
    help = "De-identify DICOM files (PS3.15 Annex E, pixels redacted); one JSON line per file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or zips")
        parser.add_argument("--out", required=True, type=Path, help="output folder")
        parser.add_argument(
            "--mapping-plain",
            action="store_true",
            help="write the identity mapping in clear (default: encrypted under the KEK)",
        )
        parser.add_argument(
            "--weights", default=None, help="detector weights file (YOLO detector only)"
        )
        parser.add_argument(
            "--backend", choices=("onnx", "torch"), default=None, help="detector backend"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        out_dir: Path = options["out"]
        if out_dir.exists() and not out_dir.is_dir():
            raise CommandError(f"--out {out_dir} is not a folder")
        detector = batch_detector(options["weights"], options["backend"])
        inputs = list(iter_inputs(options["inputs"], member_limit=settings.UPLOAD_MAX_BYTES))
        if not inputs:
            raise CommandError("no DICOM files found in the inputs")

        run = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
        data_key = crypto.new_data_key()
        used: set[str] = set()
        entries: dict[str, Any] = {}
        failed = 0
        for number, (label, load) in enumerate(inputs):
            record, entry = self._one(
                label, load, out_dir, used, detector=detector, data_key=data_key,
                scan_ref=f"deidentify/{run}/{number}",
            )  # fmt: skip
            if entry is not None:
                entries[Path(record["output"]).name] = entry
            failed += "error" in record
            self.stdout.write(json.dumps(record, sort_keys=True))
        if entries:
            mapping = self._write_mapping(
                out_dir, run, entries, data_key=data_key, plain=options["mapping_plain"]
            )
            self.stdout.write(json.dumps({"mapping": str(mapping), "files": len(entries)}))
        if failed:
            raise CommandError(f"{failed} of {len(inputs)} files could not be de-identified")

    def _one(
        self,
        label: str,
        load: Any,
        out_dir: Path,
        used: set[str],
        *,
        detector: pipeline.Detector,
        data_key: bytes,
        scan_ref: str,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        started = time.perf_counter()
        try:
            data = load()
            image = file_decode(Path(label.split("!")[-1]).name, data)
            if image.kind != "dicom":
                raise FileFailed("not_dicom", f"This is a {image.kind.upper()} file, not DICOM.")
            result = pipeline.pipeline_run(
                image=image,
                data_key=data_key,
                scan_ref=scan_ref,
                detector=detector,
                # The settings an upload's processing runs with (the verification scope, the
                # cine settings, an ultrasound's data regions): the same redaction.
                **pipeline_options(image),
            )
            outcome = dicom_deidentify(
                data,
                result.redacted_pixels,
                pixels_clean=not result.needs_review,
                regions=len(result.regions),
            )
            name = self._name(outcome.sop_instance_uid or scan_ref.rsplit("/", 1)[-1], used)
            regions = [
                {
                    "frame": r.box.frame,
                    "class": r.box.label,
                    "confidence": round(r.box.confidence, 4),
                    "box": list(r.box.coords),
                }
                for r in result.regions
            ]
            report = {
                "output": f"{name}.dcm",
                **outcome.report,
                "needs_review": result.needs_review,
                "regions": regions,
                "ms": round((time.perf_counter() - started) * 1000.0, 1),
            }
            write_atomic(out_dir / f"{name}.dcm", outcome.data)
            write_atomic(out_dir / f"{name}.json", json.dumps(report, indent=2).encode() + b"\n")
        except ImagingError as exc:
            return failure_record(label, exc.code, exc.message, started), None
        except FileFailed as exc:
            return failure_record(label, exc.code, exc.message, started), None
        except pipeline.DetectionError as exc:
            return failure_record(label, "detection_failed", str(exc), started), None
        except (OSError, ValueError) as exc:
            return failure_record(label, "write_failed", str(exc), started), None
        entry = {
            "input": label,
            "scan_ref": scan_ref,
            "uids": uid_mapping(outcome),
            "identity": identity_document(outcome),
            "regions": [
                {
                    "index": r.index,
                    "frame": r.box.frame,
                    "box": list(r.box.coords),
                    "dtype": r.dtype,
                    "channels": r.channels,
                    "ciphertext": base64.b64encode(r.ciphertext).decode("ascii"),
                }
                for r in result.regions
            ],
        }
        record = {
            "input": label,
            "output": str(out_dir / f"{name}.dcm"),
            "report": str(out_dir / f"{name}.json"),
            "regions": len(result.regions),
            "needs_review": result.needs_review,
            "ms": report["ms"],
        }
        return record, entry

    @staticmethod
    def _name(uid: str, used: set[str]) -> str:
        """The remapped SOP Instance UID; the same file twice in a run gets `-2`, `-3`..."""
        name, counter = uid, 2
        while name in used:
            name = f"{uid}-{counter}"
            counter += 1
        used.add(name)
        return name

    @staticmethod
    def _write_mapping(
        out_dir: Path, run: str, entries: dict[str, Any], *, data_key: bytes, plain: bool
    ) -> Path:
        document = json.dumps(
            {"format": MAPPING_FORMAT, "run": run, "files": entries}, indent=2, sort_keys=True
        ).encode()
        if plain:
            path = out_dir / f"deid-mapping-{run}.json"
            write_atomic(path, document + b"\n")
            return path
        ref = f"deidentify/{run}"
        wrapped = wrap_data_key(data_key, scan_ref=ref)
        envelope = {
            "format": MAPPING_FORMAT,
            "run": run,
            "scan_ref": ref,
            "kek_id": wrapped.kek_id,
            "wrapped_key": base64.b64encode(wrapped.blob).decode("ascii"),
            "ciphertext": base64.b64encode(
                crypto.encrypt_blob(data_key, document, aad=crypto.identity_aad(scan_ref=ref))
            ).decode("ascii"),
        }
        path = out_dir / f"deid-mapping-{run}.json.enc"
        write_atomic(path, json.dumps(envelope, indent=2).encode() + b"\n")
        return path


def mapping_open(path: Path) -> dict[str, Any]:
    """A mapping file written by this command, decrypted (for tools and tests)."""
    envelope = json.loads(path.read_text())
    if "ciphertext" not in envelope:
        document: dict[str, Any] = envelope
        return document
    ref = envelope["scan_ref"]
    data_key = unwrap_data_key(
        crypto.WrappedKey(envelope["kek_id"], base64.b64decode(envelope["wrapped_key"])),
        scan_ref=ref,
    )
    plaintext = crypto.decrypt_blob(
        data_key, base64.b64decode(envelope["ciphertext"]), aad=crypto.identity_aad(scan_ref=ref)
    )
    opened: dict[str, Any] = json.loads(plaintext)
    return opened
