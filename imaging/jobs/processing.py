"""The worker's side of a scan: processing an upload (decrypt, decode, detect, seal, redact,
store), completing it or marking it failed, and the duplicate search. imaging.tasks calls it;
it never enqueues (imaging.services.processing does).

Ordering rule that keeps a crash harmless: all new files written under fresh names first, then
regions, fingerprint and status in one transaction (old regions deleted in it), then the
previous run's files are removed on commit. Running it twice, or after a crash half-way, gives
one set of regions.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
import time
from collections.abc import Iterable
from datetime import timedelta
from functools import partial
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet, Value
from django.db.models.functions import Substr
from django.utils import timezone

from audit.models import Action, Outcome
from audit.services import audit_record
from engine.crypto import envelope as crypto
from engine.crypto.sealed_frames import FileFrames, SealedFramesWriter
from engine.detection import pipeline
from engine.dicom.io import read_dataset
from engine.errors import CryptoError, ImagingError
from engine.intake.validation import validate_upload
from engine.pixels.metrics import hamming
from engine.pixels.qc import image_statistics
from engine.pixels.rendering import shown_as_stored
from engine.pixels.restoration import encode_image
from imaging.jobs.batch import image_scanner, pipeline_options
from imaging.jobs.detector import default_detector, detector_identity
from imaging.models import (
    PHASH_PIECE_CHARS,
    PHASH_PIECES,
    FailureReason,
    Fingerprint,
    LeftoverDetection,
    Region,
    Scan,
    ScanFormat,
    ScanStatus,
)
from imaging.vault.identity import dicom_deidentify, identity_seal
from imaging.vault.keys import open_data_key, open_original
from imaging.vault.pixels import DigestingImage
from imaging.vault.storage import storage_delete, storage_write, storage_write_file

logger = logging.getLogger(__name__)


class ProcessingFailure(Exception):
    """A permanent processing failure: retrying cannot help, the scan is marked failed."""

    def __init__(self, reason: FailureReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


def _decoded_bytes(scan: Scan) -> int:
    itemsize = np.dtype(scan.pixel_dtype or "uint8").itemsize
    return scan.frames * scan.height * scan.width * scan.channels * itemsize


def _scan_claim(scan_id: int) -> Scan | None:
    """Mark the scan processing; None when it is gone, already completed (idempotent), or
    out of attempts (then it is failed: too_many_attempts)."""
    with transaction.atomic():
        scan = Scan.objects.select_for_update().filter(pk=scan_id).first()
        if scan is None or scan.status == ScanStatus.COMPLETED:
            return None
        if scan.attempts >= settings.IMAGING_MAX_ATTEMPTS:
            # Every run so far ended without a verdict (a worker killed for memory, say);
            # a message redelivered after that kill must not start another.
            scan_mark_failed(scan_id=scan_id, reason=FailureReason.TOO_MANY_ATTEMPTS)
            return None
        scan.status = ScanStatus.PROCESSING
        scan.failure_reason = ""
        scan.attempts += 1
        scan.save(update_fields=["status", "failure_reason", "attempts", "updated_at"])
        return scan


class _OutputWriter:
    """The processed files of one run, written as frames come out of the pipeline: each
    frame's redacted and grid PNGs go to storage at once, its redacted pixels are sealed into
    a temporary file (and kept raw in another, for the DICOM output and the QC statistics),
    so a cine's frames are never all in memory here."""

    def __init__(
        self, *, scan: Scan, image: Any, data_key: bytes, written: list[str], defer: bool = False
    ) -> None:
        self.scan, self.image, self.data_key, self.written = scan, image, data_key, written
        self.defer = defer
        self.deferred = 0
        self.scan_ref = str(scan.uid)
        # A fresh token per run: a re-run never overwrites files a committed row points at.
        self.base = f"scans/{scan.uid}/run-{secrets.token_hex(4)}"
        self.paths: dict[str, list[str]] = {"redacted": [], "grid": []}
        self.digests: dict[str, list[str]] = {"redacted": [], "grid": []}
        shape = tuple(int(v) for v in image.pixels.shape)
        self.shape, self.dtype = shape, np.dtype(image.pixels.dtype)
        # Both are closed (and so removed) by close(), whatever happens to the run.
        self.sealed_file = tempfile.TemporaryFile()  # noqa: SIM115
        self.raw_file = tempfile.TemporaryFile()  # noqa: SIM115
        self.sealed = SealedFramesWriter(
            self.sealed_file,
            data_key,
            aad=crypto.redacted_pixels_aad(scan_ref=self.scan_ref),
            shape=shape,
            dtype=self.dtype,
        )

    def put(self, name: str, data: bytes) -> str:
        path = storage_write(f"{self.base}/{name}", data)
        self.written.append(path)
        return path

    def frame(self, output: pipeline.FrameOutput) -> None:
        index = output.index
        plain = (
            index > 0
            and self.defer
            and shown_as_stored(output.redacted_pixels, output.redacted_display)
        )
        for kind in ("redacted", "grid"):
            if plain and (kind == "redacted" or not output.has_leftovers):
                # Drawn on first request from the sealed redacted pixels and the regions
                # (imaging.vault.derivatives), then stored and bound like these.
                self.digests[kind].append("")
                self.paths[kind].append("")
                self.deferred += 1
                continue
            frame = output.redacted_display if kind == "redacted" else output.grid
            data = encode_image(frame, "png")
            # The plain PNGs are bound to this scan, kind and frame by a digest on the row.
            self.digests[kind].append(
                crypto.derivative_digest(
                    self.data_key, data, scan_ref=self.scan_ref, kind=kind, frame=index
                )
            )
            self.paths[kind].append(self.put(f"{kind}-{index:04d}.png", data))
        pixels = np.ascontiguousarray(output.redacted_pixels, dtype=self.dtype)
        self.sealed.add(pixels)
        self.raw_file.write(pixels.data.cast("B"))  # No copy of the frame.

    def finish(self, *, needs_review: bool, regions: int) -> dict[str, Any]:
        self.sealed.close()
        path = storage_write_file(f"{self.base}/redacted-pixels.enc", self.sealed_file)
        self.written.append(path)
        deidentified, identity = None, b""
        if self.scan.format == ScanFormat.DICOM:
            # The redacted pixels under a de-identified header (PS3.15 Annex E). Sealed all
            # the same: it is what exports hand out, and restore renders with its header.
            # Written frame by frame into a temporary file and encrypted from it in chunks
            # (the same blob as crypto.encrypt_blob), so a cine's copy is never in memory.
            with tempfile.TemporaryFile() as plain, tempfile.TemporaryFile() as sealed:
                try:
                    deidentified = dicom_deidentify(
                        self.image.clean_bytes,
                        FileFrames(self.raw_file, shape=self.shape, dtype=self.dtype),
                        pixels_clean=not needs_review,
                        regions=regions,
                        out=plain,
                    )
                except ImagingError:
                    raise ProcessingFailure(FailureReason.DECODE_FAILED) from None
                identity = identity_seal(
                    deidentified, data_key=self.data_key, scan_ref=self.scan_ref
                )
                crypto.encrypt_blob_file(
                    self.data_key,
                    plain,
                    sealed,
                    aad=crypto.redacted_dataset_aad(scan_ref=self.scan_ref),
                )
                redacted_path = storage_write_file(f"{self.base}/redacted.dcm.enc", sealed)
                self.written.append(redacted_path)
        else:
            redacted_path = self.paths["redacted"][0]
        return {
            "redacted_path": redacted_path,
            "redacted_pixels_path": path,
            "grid_path": self.paths["grid"][0],
            "frame_paths": {"redacted": self.paths["redacted"], "grid": self.paths["grid"]},
            "frame_digests": self.digests,
            "deidentified": deidentified,
            "identity_ciphertext": identity,
        }

    def close(self) -> None:
        self.sealed_file.close()
        self.raw_file.close()


def outputs_write(
    *,
    scan: Scan,
    image: Any,
    frames: Iterable[pipeline.FrameOutput],
    needs_review: bool,
    regions: int,
    data_key: bytes,
    written: list[str],
) -> dict[str, Any]:
    """Every processed file of `scan` from whole frames (review edits rebuild them so): the
    same files and seals as processing writes frame by frame, under a fresh run name.
    `regions` is how many regions the pixels redact (the de-identified header records it).
    Each path written is appended to `written`, for the caller to delete if it fails later;
    the result is what `scan_set_deidentified` and the scan's path fields take."""
    writer = _OutputWriter(scan=scan, image=image, data_key=data_key, written=written)
    try:
        for output in frames:
            writer.frame(output)
        return writer.finish(needs_review=needs_review, regions=regions)
    finally:
        writer.close()


def scan_files(scan: Scan) -> list[str]:
    paths = [scan.redacted_path, scan.redacted_pixels_path, scan.grid_path]
    for names in (scan.frame_paths or {}).values():
        paths.extend(names)
    return sorted({p for p in paths if p})


class _Literal(Value):
    """A whole number written into the SQL rather than bound: SQLite uses an expression index
    (the hash pieces' `SUBSTR("perceptual_hash", 1, 2)`) only for the same literal expression."""

    # Django's own as_sql methods return a list of parameters, as this does; the stubs say tuple.
    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:  # type: ignore[override]
        return str(int(self.value)), []


def _phash_groups(limit: int) -> list[list[int]]:
    """The hash pieces split into `limit` + 1 groups of consecutive pieces."""
    cut = [PHASH_PIECES * j // (limit + 1) for j in range(limit + 2)]
    return [list(range(cut[j], cut[j + 1])) for j in range(limit + 1)]


def duplicate_candidates(phash: str, *, limit: int) -> QuerySet[Fingerprint]:
    """The fingerprints that may lie within Hamming distance `limit` of `phash`, read through
    the hash-piece indexes (imaging.models.Fingerprint): two 64-bit hashes at most `limit`
    bits apart agree exactly on at least one of `limit` + 1 groups of pieces, since at most
    `limit` groups hold a differing bit. Every fingerprint when no such filter exists (a
    limit of PHASH_PIECES or more, or a hash of another length)."""
    fingerprints = Fingerprint.objects.all()
    if limit >= PHASH_PIECES or len(phash) != PHASH_PIECES * PHASH_PIECE_CHARS:
        return fingerprints
    pieces = {
        f"piece{i}": Substr(
            "perceptual_hash",
            _Literal(1 + PHASH_PIECE_CHARS * i),
            _Literal(PHASH_PIECE_CHARS),
        )
        for i in range(PHASH_PIECES)
    }
    agree = Q()
    for group in _phash_groups(limit):
        agree |= Q(
            **{
                f"piece{i}": phash[PHASH_PIECE_CHARS * i : PHASH_PIECE_CHARS * (i + 1)]
                for i in group
            }
        )
    return fingerprints.annotate(**pieces).filter(agree)


def nearest_duplicate(*, phash: str, exclude_scan_id: int) -> tuple[int | None, int | None]:
    """(scan id, distance) of the fingerprint nearest `phash` within
    IMAGING_DUPLICATE_MAX_DISTANCE bits, the lowest scan id on a tie; (None, None) if none.
    Only the candidates the indexes give are measured, and no lock is held while it runs."""
    limit = settings.IMAGING_DUPLICATE_MAX_DISTANCE
    candidates = (
        duplicate_candidates(phash, limit=limit)
        .exclude(scan_id=exclude_scan_id)
        .order_by("scan_id")
        .values_list("scan_id", "perceptual_hash")
    )
    best: tuple[int | None, int | None] = (None, None)
    for other_id, other_hash in candidates.iterator(chunk_size=2000):
        distance = int(hamming(phash, other_hash))
        if distance <= limit and (best[1] is None or distance < best[1]):
            best = (other_id, distance)
    return best


class _FramesRefused(Exception):
    """A frame that validation left to the pipeline's pass did not decode or render."""


def _scan_run(
    scan: Scan,
    plaintext: bytes,
    data_key: bytes,
    detector: pipeline.Detector | None,
    timings: dict[str, float],
    written: list[str],
    *,
    check_frames: bool,
) -> tuple[pipeline.PipelineResult, dict[str, Any], dict[str, Any], Any]:
    """Validate, run the pipeline with its outputs written frame by frame, and take the QC
    statistics: (result, paths, qc, image). Paths written go into `written`."""
    scan_ref = str(scan.uid)
    with pipeline.timed(timings, "decode_ms"):
        try:
            decoded = validate_upload(
                name=scan.original_filename,
                data=plaintext,
                max_bytes=max(len(plaintext), settings.UPLOAD_MAX_BYTES),
                max_pixels=max(scan.width * scan.height * scan.frames, settings.UPLOAD_MAX_PIXELS),
                # The worker's memory is what the budget protects (a deflated data set
                # is inflated against it); a scan accepted under a larger one still fits.
                max_decoded_bytes=max(_decoded_bytes(scan), settings.UPLOAD_MAX_DECODED_BYTES),
                check_frames=check_frames,
            )
        except ImagingError:
            raise ProcessingFailure(FailureReason.DECODE_FAILED) from None
    # The pixels are hashed as the pipeline reads them (pixels_digest's bytes).
    image = DigestingImage(decoded)
    # Frame by frame: each processed frame is written out as soon as it is done.
    # A cine's later frames whose display is their pixels get their PNGs on request.
    writer = _OutputWriter(scan=scan, image=image, data_key=data_key, written=written, defer=True)

    def sink(output: pipeline.FrameOutput) -> None:
        with pipeline.timed(timings, "store_ms"):
            writer.frame(output)

    try:
        try:
            result = pipeline.pipeline_run(
                image=image,
                data_key=data_key,
                scan_ref=scan_ref,
                detector=detector or default_detector(),
                timings=timings,
                sink=sink,
                **pipeline_options(image),
            )
        except ImagingError:
            if check_frames:
                raise ProcessingFailure(FailureReason.DECODE_FAILED) from None
            raise _FramesRefused() from None
        # What is stored must decode to what was uploaded, or no restore could ever give
        # the upload back: better to fail now, loudly, than later at a bedside.
        with pipeline.timed(timings, "decode_ms"):
            if image.digest() != scan.pixels_sha256:
                raise ProcessingFailure(FailureReason.DECODE_FAILED)
        if writer.deferred:
            result.metrics["display_pngs_deferred"] = writer.deferred
        if image.notes:
            # What decoding or rendering worked around: the scan's processing notes.
            result.metrics["notes"] = list(image.notes)
        scanner = image_scanner(image)
        if scanner:
            # Where the admin's scanner-rule suggestions find the scan's scanner model.
            result.metrics["scanner"] = scanner
        with pipeline.timed(timings, "store_ms"):
            paths = writer.finish(needs_review=result.needs_review, regions=len(result.regions))
        with pipeline.timed(timings, "qc_ms"):
            # Read back one frame at a time (pread, not a memory map: see FileFrames).
            qc = _qc_statistics(
                scan, image, FileFrames(writer.raw_file, shape=writer.shape, dtype=writer.dtype)
            )
    finally:
        writer.close()
    return result, paths, qc, image


def scan_process(*, scan_id: int, detector: pipeline.Detector | None = None) -> Scan | None:
    """Run the pipeline for one scan. Transient errors (OSError, database) propagate for the
    task to retry; permanent ones mark the scan failed. Safe to run any number of times."""
    started = time.perf_counter()
    scan = _scan_claim(scan_id)
    if scan is None:
        return None
    timings: dict[str, float] = {}
    written: list[str] = []
    try:
        with pipeline.timed(timings, "load_ms"):
            try:
                data_key = open_data_key(scan)
                plaintext = open_original(scan, data_key=data_key)
            except CryptoError:
                raise ProcessingFailure(FailureReason.DECRYPT_FAILED) from None
        # Each frame is decoded once: validation checks the header and the first frame, the
        # pipeline's pass decodes (and so checks) every other frame and hashes it against
        # the upload's digest. A frame refused in that pass (or one only the whole-array
        # decoders read) sends the scan through full validation first, as at upload.
        try:
            result, paths, qc, image = _scan_run(
                scan, plaintext, data_key, detector, timings, written, check_frames=False
            )
        except _FramesRefused:
            storage_delete(*written)
            written.clear()
            result, paths, qc, image = _scan_run(
                scan, plaintext, data_key, detector, timings, written, check_frames=True
            )
        timings["total_ms"] = (time.perf_counter() - started) * 1000.0
        # Which detector made the regions (name, version, weights SHA-256): scan.metrics.
        result.metrics["model"] = detector_identity(detector)
        # Other scans' fingerprints are read before the scan's row is locked, not under it.
        duplicate = nearest_duplicate(
            phash=result.fingerprint.perceptual_hash, exclude_scan_id=scan_id
        )
        return _scan_complete(
            scan_id=scan_id,
            result=result,
            paths=paths,
            written=written,
            qc=qc,
            duplicate=duplicate,
        )
    except pipeline.DetectionError:
        # Not retried: a missing model or a crashing detector needs a person; the admin
        # requeues the scans once it is fixed.
        logger.exception("detector failed on scan %s", scan_id)
        storage_delete(*written)
        return scan_mark_failed(scan_id=scan_id, reason=FailureReason.DETECTION_FAILED)
    except ProcessingFailure as failure:
        storage_delete(*written)
        return scan_mark_failed(scan_id=scan_id, reason=failure.reason)
    except BaseException:
        storage_delete(*written)
        raise


def _qc_statistics(scan: Scan, image: Any, redacted_pixels: Any) -> dict[str, Any]:
    """QC statistics of the redacted pixels (engine.pixels.qc); never fails the scan."""
    try:
        header = None
        if scan.format == ScanFormat.DICOM:
            header = read_dataset(image.clean_bytes, stop_before_pixels=True)
        return image_statistics(redacted_pixels, ds=header)
    except Exception:  # Statistics are a report, not a reason to lose the scan.
        logger.exception("QC statistics failed for scan %s", scan.pk)
        return {"error": "qc_failed"}


def _scan_complete(
    *,
    scan_id: int,
    result: pipeline.PipelineResult,
    paths: dict[str, Any],
    written: list[str],
    qc: dict[str, Any] | None = None,
    duplicate: tuple[int | None, int | None] = (None, None),
) -> Scan:
    with transaction.atomic():
        scan = Scan.objects.select_for_update().get(pk=scan_id)
        if scan.status == ScanStatus.COMPLETED:
            # Another run finished first; ours is redundant.
            transaction.on_commit(partial(storage_delete, *written))
            return scan
        previous_files = scan_files(scan)
        # Delete-and-rewrite: whatever an interrupted run left behind is replaced, never added to.
        Region.objects.filter(scan=scan).delete()
        LeftoverDetection.objects.filter(scan=scan).delete()
        Fingerprint.objects.filter(scan=scan).delete()
        Region.objects.bulk_create(
            Region(
                scan=scan,
                index=r.index,
                frame=r.box.frame,
                label=r.box.label,
                confidence=r.box.confidence,
                x1=r.box.x0,
                y1=r.box.y0,
                x2=r.box.x1,
                y2=r.box.y1,
                ciphertext=r.ciphertext,
                dtype=r.dtype,
                channels=r.channels,
                pixel_entropy=r.pixel_entropy,
                ciphertext_entropy=r.ciphertext_entropy,
            )
            for r in result.regions
        )
        LeftoverDetection.objects.bulk_create(
            LeftoverDetection(
                scan=scan,
                frame=b.frame,
                label=b.label,
                confidence=float(b.confidence),
                x1=b.x0,
                y1=b.y0,
                x2=b.x1,
                y2=b.y1,
            )
            for b in result.leftovers
        )
        Fingerprint.objects.create(
            scan=scan,
            average_hash=result.fingerprint.average_hash,
            perceptual_hash=result.fingerprint.perceptual_hash,
            color_histogram=result.fingerprint.color_histogram,
        )
        duplicate_id, distance = duplicate
        timings = result.timings
        scan.status = ScanStatus.COMPLETED
        scan.failure_reason = ""
        scan.needs_review = result.needs_review
        scan.possible_duplicate = duplicate_id is not None
        scan.duplicate_of_id = duplicate_id
        scan.redacted_path = paths["redacted_path"]
        scan.redacted_pixels_path = paths["redacted_pixels_path"]
        scan.grid_path = paths["grid_path"]
        scan.frame_paths = paths["frame_paths"]
        scan.frame_digests = paths["frame_digests"]
        scan.metrics = {
            **result.metrics,
            "duplicate_distance": distance,
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
        scan.detection_ms = timings.get("detect_ms")
        scan.encryption_ms = timings.get("encrypt_ms")
        scan.total_ms = timings.get("total_ms")
        scan.processed_at = timezone.now()
        if qc is not None:
            scan.qc = qc
        deid_fields = scan_set_deidentified(scan, paths)
        scan.save(
            update_fields=[
                *deid_fields,
                "status",
                "failure_reason",
                "needs_review",
                "possible_duplicate",
                "duplicate_of",
                "redacted_path",
                "redacted_pixels_path",
                "grid_path",
                "frame_paths",
                "frame_digests",
                "metrics",
                "detection_ms",
                "encryption_ms",
                "total_ms",
                "processed_at",
                "qc",
                "updated_at",
            ]
        )
        audit_record(
            action=Action.SCAN_PROCESSED,
            target=scan,
            details={
                "regions": len(result.regions),
                "needs_review": scan.needs_review,
                "possible_duplicate": scan.possible_duplicate,
                "attempt": scan.attempts,
            },
        )
        stale = [p for p in previous_files if p not in set(written)]
        transaction.on_commit(partial(storage_delete, *stale))
    return scan


def scan_set_deidentified(scan: Scan, paths: dict[str, Any]) -> list[str]:
    """The de-identification's results on the scan (DICOM only): the removed identifying
    values (sealed under the scan's data key), the report and the grouping fields."""
    outcome = paths.get("deidentified")
    if outcome is None:
        return []
    scan.identity_ciphertext = paths["identity_ciphertext"]
    scan.deid_report = outcome.report
    scan.study_uid = outcome.study_uid
    scan.series_uid = outcome.series_uid
    scan.instance_number = outcome.instance_number
    scan.modality = outcome.modality
    scan.scanner = outcome.scanner
    return [
        "identity_ciphertext",
        "deid_report",
        "study_uid",
        "series_uid",
        "instance_number",
        "modality",
        "scanner",
    ]


def scan_mark_failed(*, scan_id: int, reason: FailureReason | str) -> Scan | None:
    """Record a permanent failure (once; a completed scan is never downgraded)."""
    with transaction.atomic():
        scan = Scan.objects.select_for_update().filter(pk=scan_id).first()
        if scan is None or scan.status in (ScanStatus.COMPLETED, ScanStatus.FAILED):
            return scan
        scan.status = ScanStatus.FAILED
        scan.failure_reason = str(reason)
        scan.save(update_fields=["status", "failure_reason", "updated_at"])
        audit_record(
            action=Action.SCAN_FAILED,
            outcome=Outcome.FAILURE,
            target=scan,
            details={"reason": str(reason), "attempt": scan.attempts},
        )
        return scan


def scans_stuck(*, older_than_seconds: int | None = None) -> list[int]:
    """The ids of scans stuck in uploaded/processing for longer than `older_than_seconds`
    (IMAGING_STUCK_AFTER_SECONDS when None: a lost message or a dead worker) that may run
    again; those already tried IMAGING_MAX_ATTEMPTS times are failed here (too_many_attempts)
    instead. The caller enqueues the ids."""
    if older_than_seconds is None:
        older_than_seconds = settings.IMAGING_STUCK_AFTER_SECONDS
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    stuck = Scan.objects.filter(
        status__in=[ScanStatus.UPLOADED, ScanStatus.PROCESSING], updated_at__lt=cutoff
    )
    spent = stuck.filter(attempts__gte=settings.IMAGING_MAX_ATTEMPTS)
    for scan_id in list(spent.values_list("id", flat=True)):
        scan_mark_failed(scan_id=scan_id, reason=FailureReason.TOO_MANY_ATTEMPTS)
    ids = list(
        stuck.filter(attempts__lt=settings.IMAGING_MAX_ATTEMPTS).values_list("id", flat=True)
    )
    # Requeued now: the next sweep waits a whole stuck time again before sending them once
    # more. Otherwise a queue longer than that time (a backlog, not a loss) was sent again on
    # every sweep and grew by its own length each time.
    Scan.objects.filter(pk__in=ids, status__in=[ScanStatus.UPLOADED, ScanStatus.PROCESSING]).update(
        updated_at=timezone.now()
    )
    return ids
