"""Writes for scans: upload, processing, restore and region decryption.

Ordering rules that keep a crash harmless:
- upload: encrypted file on storage (atomic), THEN the row, THEN (on commit) the task. A
  failed write leaves no row; a failed commit removes the file.
- processing: all new files written under fresh names first, then regions, fingerprint and
  status in one transaction (old regions deleted in it), then the previous run's files are
  removed on commit. Running it twice, or after a crash half-way, gives one set of regions.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import chain
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.session_keys import SealContext, unseal_from
from audit.models import Action, Outcome
from audit.services import audit_record
from engine.crypto import envelope as crypto
from engine.detection import pipeline
from engine.errors import CryptoError, ImagingError
from imaging.models import FailureReason, Fingerprint, Region, Scan, ScanFormat, ScanStatus
from imaging.vault.storage import storage_delete, storage_read, storage_write
from medimg.errors import ApplicationError
from patients.models import Patient

logger = logging.getLogger(__name__)

RESTORE_FORMATS = ("png", "jpeg", "dicom")
# Header, key id, nonce and tag of a sealed upload (accounts.keyexchange), with room to spare.
SEAL_OVERHEAD = 256


class ProcessingFailure(Exception):
    """A permanent processing failure: retrying cannot help, the scan is marked failed."""

    def __init__(self, reason: FailureReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


def _restore_failed() -> ApplicationError:
    # One answer for every integrity failure (tampered nonce, ciphertext, tag, context or
    # wrapped key; lost key): it tells a client nothing about which check failed.
    return ApplicationError(
        "restore_failed",
        "The stored image failed its integrity check and cannot be restored. "
        "The event has been logged.",
        status_code=500,
    )


# --- Upload ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Accepted:
    name: str
    size: int
    image: Any  # engine.intake.validation.DecodedImage


def upload_limits() -> dict[str, int]:
    """The limits by kind (settings) as validate_upload takes them."""
    return {
        "max_bytes": settings.UPLOAD_MAX_BYTES,
        "max_dicom_bytes": settings.UPLOAD_DICOM_MAX_BYTES,
        "max_pixels": settings.UPLOAD_MAX_PIXELS,
        "max_decoded_bytes": settings.UPLOAD_MAX_DECODED_BYTES,
    }


def _read_upload(
    upload: UploadedFile, *, seal: SealContext | None = None, patient_id: str = ""
) -> _Accepted:
    from engine.intake.validation import limit_for, sniff_kind, too_large, validate_upload

    name = (upload.name or "upload")[-255:]
    size = int(upload.size or 0)
    # The limit is the kind's (JPEG/PNG or DICOM), known from the first bytes; a sealed body
    # is opaque until opened, so it gets the larger one, plus its seal.
    upload.seek(0)
    kind = None if seal is not None else sniff_kind(upload.read(132))
    limits = upload_limits()
    limit = limit_for(
        kind, max_bytes=limits["max_bytes"], max_dicom_bytes=limits["max_dicom_bytes"]
    )
    limit += SEAL_OVERHEAD if seal is not None else 0
    # Refuse by the declared size before reading anything into memory.
    if size > limit:
        raise too_large(size, limit, kind)
    upload.seek(0)
    data = upload.read(limit + 1)
    if seal is not None:
        data = unseal_from(seal, data, purpose="upload", patient=patient_id, name=name)
    image = validate_upload(name=name, data=data, **limits)
    return _Accepted(name=name, size=len(data), image=image)


def _read_uploads(
    upload: UploadedFile, *, seal: SealContext | None = None, patient_id: str = ""
) -> Iterator[_Accepted]:
    """One uploaded file: an image, or a zip of a series whose every member goes through
    the same validator (engine.intake.archive for the archive's own limits). A refused member
    refuses the upload with its code, naming the member. Sealed uploads are single images.

    Lazily, one decoded file at a time: nothing here keeps a decoded image once it is
    yielded (see _originals_store)."""
    from engine.intake.archive import is_zip, zip_members_iter
    from engine.intake.validation import validate_upload

    upload.seek(0)
    head = upload.read(4)
    upload.seek(0)
    if seal is not None or not is_zip(head):
        yield _read_upload(upload, seal=seal, patient_id=patient_id)
        return
    limit = settings.UPLOAD_ARCHIVE_MAX_BYTES
    too_large = ApplicationError(
        "archive_too_large", "The archive is larger than the upload limit.", status_code=413
    )
    if int(upload.size or 0) > limit:
        raise too_large
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise too_large
    members = zip_members_iter(
        data,
        max_members=settings.UPLOAD_ARCHIVE_MAX_MEMBERS,
        max_total_bytes=settings.UPLOAD_ARCHIVE_MAX_UNCOMPRESSED,
        # Each member then meets its own kind's limit in validate_upload.
        max_member_bytes=max(settings.UPLOAD_MAX_BYTES, settings.UPLOAD_DICOM_MAX_BYTES),
    )
    for member in members:  # Inflated one at a time, each let go once validated.
        try:
            image = validate_upload(name=member.name, data=member.data, **upload_limits())
        except ImagingError as refusal:
            raise ImagingError(refusal.code, f"{member.name}: {refusal.message}") from None
        yield _Accepted(name=member.name[-255:], size=len(member.data), image=image)
        del image, member  # Not held while the next member decodes.


def _decoded_bytes(scan: Scan) -> int:
    itemsize = np.dtype(scan.pixel_dtype or "uint8").itemsize
    return scan.frames * scan.height * scan.width * scan.channels * itemsize


def _pixels_digest(pixels: np.ndarray) -> str:
    """What the restored image must hash to: dtype, shape and every pixel."""
    digest = hashlib.sha256()
    digest.update(f"{pixels.dtype.str}|{tuple(pixels.shape)}|".encode())
    # Frame by frame: the same bytes as the whole array's, without building it (a cine's
    # frames are decoded one at a time, see validation.FrameStack).
    for frame in pixels:
        digest.update(np.ascontiguousarray(frame).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class _Original:
    """An upload stored encrypted, with what its row needs: not its pixels."""

    uid: uuid.UUID
    name: str
    size: int
    kind: str
    shape: tuple[int, ...]
    dtype: str
    pixels_sha256: str
    path: str
    wrapped_key: bytes
    key_id: str


def _originals_store(accepted: Iterable[_Accepted], *, written: list[str]) -> list[_Original]:
    """Validate, encrypt and write the files one at a time, within the request's budget.

    Each decoded image is let go before the next file is decoded, so a request of many large
    images (four 60-megapixel PNGs held 6.1 GB when all were decoded first) costs the memory
    of one. What the files decode to in all is held to UPLOAD_MAX_DECODED_BYTES: over it,
    decoded_too_large (413). The caller deletes `written` if anything fails later.
    """
    budget = settings.UPLOAD_MAX_DECODED_BYTES
    decoded = 0
    originals = []
    for one in accepted:
        decoded += int(one.image.pixels.nbytes)
        if decoded > budget:
            raise ImagingError(
                "decoded_too_large",
                f"The files of this upload decode to more than the {budget:,} bytes one "
                "request may hold: send them in several uploads.",
            )
        originals.append(_original_store(one, written=written))
        del one  # Before the next file is decoded.
    return originals


def _original_store(accepted: _Accepted, *, written: list[str]) -> _Original:
    image = accepted.image
    uid = uuid.uuid4()
    data_key = crypto.new_data_key()
    wrapped = crypto.wrap_data_key(data_key, scan_ref=str(uid))
    blob = crypto.encrypt_blob(
        data_key, image.clean_bytes, aad=crypto.original_aad(scan_ref=str(uid))
    )
    # The file first: if this raises, no row is ever created that points at nothing.
    try:
        path = storage_write(f"scans/{uid}/original.enc", blob)
    except OSError:
        logger.exception("storing upload for scan %s failed", uid)
        raise ApplicationError(
            "storage_unavailable",
            "The image could not be stored. Nothing was saved; please try again.",
            status_code=503,
        ) from None
    written.append(path)
    pixels: np.ndarray = image.pixels
    return _Original(
        uid=uid,
        name=accepted.name,
        size=accepted.size,
        kind=image.kind,
        shape=tuple(int(n) for n in pixels.shape),
        dtype=str(pixels.dtype),
        pixels_sha256=_pixels_digest(pixels),
        path=path,
        wrapped_key=wrapped.blob,
        key_id=wrapped.kek_id,
    )


def _scan_create(*, patient: Patient, original: _Original, uploaded_by: Any) -> Scan:
    shape = original.shape
    return Scan.objects.create(
        patient=patient,
        uploaded_by=uploaded_by,
        uid=original.uid,
        original_filename=original.name,
        format=ScanFormat(original.kind),
        size_bytes=original.size,
        frames=shape[0],
        height=shape[1],
        width=shape[2],
        channels=shape[3] if len(shape) == 4 else 1,
        pixel_dtype=original.dtype,
        pixels_sha256=original.pixels_sha256,
        original_path=original.path,
        wrapped_key=original.wrapped_key,
        key_id=original.key_id,
    )


def scan_upload(
    *,
    patient: Patient,
    uploads: Sequence[UploadedFile],
    uploaded_by: Any,
    request: HttpRequest | None = None,
    seal: SealContext | None = None,
) -> list[Scan]:
    """Validate every file, store each encrypted, and queue processing after commit.

    All or nothing: one refused file refuses the whole request, and nothing is stored.
    Caller has checked that `uploaded_by` may see `patient`. With `seal`, every file is a
    body sealed under the client's session key and is opened first.
    """
    if not uploads:
        raise ApplicationError("no_files", "Attach at least one image file.")
    # Lazily: each file is decoded, checked and written before the next is read.
    read = partial(_read_uploads, seal=seal, patient_id=str(patient.pk))
    accepted = chain.from_iterable(map(read, uploads))
    return _scans_store(
        patient_factory=lambda: patient, accepted=accepted, uploaded_by=uploaded_by, request=request
    )[1]


def patient_create_with_images(
    *,
    images: Sequence[UploadedFile],
    created_by: Any,
    request: HttpRequest | None = None,
    **fields: Any,
) -> tuple[Patient, list[Scan]]:
    """Create a patient and its first scans in one transaction: both or neither.

    The images are validated before the record is created, so a bad file leaves no patient.
    """
    from patients.services import patient_create

    accepted = chain.from_iterable(map(_read_uploads, images))
    return _scans_store(
        patient_factory=lambda: patient_create(**fields, created_by=created_by, request=request),
        accepted=accepted,
        uploaded_by=created_by,
        request=request,
    )


def _scans_store(
    *,
    patient_factory: Callable[[], Patient],
    accepted: Iterable[_Accepted],
    uploaded_by: Any,
    request: HttpRequest | None,
) -> tuple[Patient, list[Scan]]:
    written: list[str] = []
    try:
        # The files first, every one, outside the transaction: a refused file refuses the
        # request before any row exists, and no write lock is held while images decode.
        originals = _originals_store(accepted, written=written)
        with transaction.atomic():
            patient = patient_factory()
            scans = [
                _scan_create(patient=patient, original=o, uploaded_by=uploaded_by)
                for o in originals
            ]
            for scan in scans:
                audit_record(
                    action=Action.SCAN_UPLOADED,
                    actor=uploaded_by,
                    target=scan,
                    request=request,
                    details={
                        "patient": patient.pk,
                        "format": scan.format,
                        "size": scan.size_bytes,
                        "frames": scan.frames,
                    },
                )
                _process_after_commit(scan.id)
    except BaseException:
        storage_delete(*written)
        raise
    return patient, scans


# --- Processing -----------------------------------------------------------------------------


def _process_after_commit(scan_id: int) -> None:
    """Queue processing once the transaction commits (in-process mode: run it then).

    robust: a broker outage must not turn a committed upload into a 500 (the scan stays
    "uploaded" and `scans_requeue` picks it up), nor, in-process, a processing error (the
    task has already failed the scan with its reason). A lambda and not functools.partial:
    Django names a failing robust hook by its __qualname__, which a partial lacks, and that
    AttributeError was the 500.
    """
    from imaging.tasks import process_scan

    transaction.on_commit(lambda: process_scan.delay(scan_id=scan_id), robust=True)


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


def _redacted_pixels_aad(scan_ref: str) -> bytes:
    # The redacted array is not secret, but restore trusts it: sealing it under the scan's
    # key means a changed file fails restore instead of producing a wrong image.
    return f"medimg/redacted-pixels/v1\n{scan_ref}".encode()


def _redacted_dataset_aad(scan_ref: str) -> bytes:
    return f"medimg/redacted-dataset/v1\n{scan_ref}".encode()


def redacted_pixels_unseal(blob: bytes, *, data_key: bytes, scan_ref: str) -> np.ndarray:
    """The stored redacted array: sealed frame by frame (engine.crypto.sealed_frames), or as one
    blob (scans processed before that). CryptoError on any integrity failure."""
    from engine.crypto.sealed_frames import is_sealed_frames, unseal_frames

    aad = _redacted_pixels_aad(scan_ref)
    if is_sealed_frames(blob):
        return unseal_frames(blob, data_key, aad=aad)
    try:
        return crypto.unpack_array(crypto.decrypt_blob(data_key, blob, aad=aad))
    except ValueError:
        raise CryptoError() from None


class _OutputWriter:
    """The processed files of one run, written as frames come out of the pipeline: each
    frame's redacted and grid PNGs go to storage at once, its redacted pixels are sealed into
    a temporary file (and kept raw in another, for the DICOM output and the QC statistics),
    so a cine's frames are never all in memory here."""

    def __init__(self, *, scan: Scan, image: Any, data_key: bytes, written: list[str]) -> None:
        import tempfile

        from engine.crypto.sealed_frames import SealedFramesWriter

        self.scan, self.image, self.data_key, self.written = scan, image, data_key, written
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
            aad=_redacted_pixels_aad(self.scan_ref),
            shape=shape,
            dtype=self.dtype,
        )

    def put(self, name: str, data: bytes) -> str:
        path = storage_write(f"{self.base}/{name}", data)
        self.written.append(path)
        return path

    def frame(self, output: pipeline.FrameOutput) -> None:
        from engine.pixels.restoration import encode_image

        index = output.index
        for kind, frame in (("redacted", output.redacted_display), ("grid", output.grid)):
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
        self.raw_file.write(pixels.tobytes())

    def redacted_pixels(self) -> np.ndarray:
        """Every redacted frame, mapped from the temporary file (read as it is used)."""
        self.raw_file.flush()
        return np.memmap(self.raw_file, dtype=self.dtype, mode="r", shape=self.shape)

    def finish(self, *, needs_review: bool, regions: int) -> dict[str, Any]:
        import tempfile

        from engine.crypto.sealed_frames import FileFrames
        from imaging.vault.storage import storage_write_file

        self.sealed.close()
        path = storage_write_file(f"{self.base}/redacted-pixels.enc", self.sealed_file)
        self.written.append(path)
        deidentified, identity = None, b""
        if self.scan.format == ScanFormat.DICOM:
            from imaging.vault.identity import dicom_deidentify, identity_seal

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
                    self.data_key, plain, sealed, aad=_redacted_dataset_aad(self.scan_ref)
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


def _write_outputs(
    *, scan: Scan, image: Any, result: pipeline.PipelineResult, data_key: bytes, written: list[str]
) -> dict[str, Any]:
    """Every file of `result` (whole arrays: review edits rebuild them so)."""
    writer = _OutputWriter(scan=scan, image=image, data_key=data_key, written=written)
    try:
        for index, grid in enumerate(result.grid_display):
            writer.frame(
                pipeline.FrameOutput(
                    index, result.redacted_pixels[index], result.redacted_display[index], grid
                )
            )
        return writer.finish(needs_review=result.needs_review, regions=len(result.regions))
    finally:
        writer.close()


def _scan_files(scan: Scan) -> list[str]:
    paths = [scan.redacted_path, scan.redacted_pixels_path, scan.grid_path]
    for names in (scan.frame_paths or {}).values():
        paths.extend(names)
    return sorted({p for p in paths if p})


def _nearest_duplicate(scan: Scan, phash: str) -> tuple[int | None, int | None]:
    from engine.pixels.metrics import hamming

    best: tuple[int | None, int | None] = (None, None)
    limit = settings.IMAGING_DUPLICATE_MAX_DISTANCE
    candidates = Fingerprint.objects.exclude(scan_id=scan.id).values_list(
        "scan_id", "perceptual_hash"
    )
    for other_id, other_hash in candidates.iterator(chunk_size=2000):
        distance = int(hamming(phash, other_hash))
        if distance <= limit and (best[1] is None or distance < best[1]):
            best = (other_id, distance)
    return best


def scan_process(*, scan_id: int, detector: pipeline.Detector | None = None) -> Scan | None:
    """Run the pipeline for one scan. Transient errors (OSError, database) propagate for the
    task to retry; permanent ones mark the scan failed. Safe to run any number of times."""
    from engine.intake.validation import validate_upload

    started = time.perf_counter()
    scan = _scan_claim(scan_id)
    if scan is None:
        return None
    scan_ref = str(scan.uid)
    timings: dict[str, float] = {}
    written: list[str] = []
    try:
        with pipeline.timed(timings, "load_ms"):
            blob = storage_read(scan.original_path)
            try:
                data_key = crypto.unwrap_data_key(bytes(scan.wrapped_key), scan_ref=scan_ref)
                plaintext = crypto.decrypt_blob(
                    data_key, blob, aad=crypto.original_aad(scan_ref=scan_ref)
                )
            except CryptoError:
                raise ProcessingFailure(FailureReason.DECRYPT_FAILED) from None
        with pipeline.timed(timings, "decode_ms"):
            try:
                image = validate_upload(
                    name=scan.original_filename,
                    data=plaintext,
                    max_bytes=max(len(plaintext), settings.UPLOAD_MAX_BYTES),
                    max_pixels=max(
                        scan.width * scan.height * scan.frames, settings.UPLOAD_MAX_PIXELS
                    ),
                    # The worker's memory is what the budget protects (a deflated data set
                    # is inflated against it); a scan accepted under a larger one still fits.
                    max_decoded_bytes=max(_decoded_bytes(scan), settings.UPLOAD_MAX_DECODED_BYTES),
                )
            except ImagingError:
                raise ProcessingFailure(FailureReason.DECODE_FAILED) from None
            # What is stored must decode to what was uploaded, or no restore could ever
            # give the upload back: better to fail now, loudly, than later at a bedside.
            if _pixels_digest(image.pixels) != scan.pixels_sha256:
                raise ProcessingFailure(FailureReason.DECODE_FAILED)
        # Frame by frame: each processed frame is written out as soon as it is done.
        writer = _OutputWriter(scan=scan, image=image, data_key=data_key, written=written)

        def sink(output: pipeline.FrameOutput) -> None:
            with pipeline.timed(timings, "store_ms"):
                writer.frame(output)

        try:
            result = pipeline.pipeline_run(
                image=image,
                data_key=data_key,
                scan_ref=scan_ref,
                detector=detector,
                classes=settings.IMAGING_REDACT_CLASSES,
                padding=settings.IMAGING_BOX_PADDING,
                verify_rounds=settings.IMAGING_VERIFY_ROUNDS,
                verify_scope=settings.IMAGING_VERIFY_SCOPE,
                timings=timings,
                sink=sink,
                reuse_static=settings.IMAGING_CINE_REUSE,
                change_threshold=settings.IMAGING_CINE_CHANGE_THRESHOLD,
                data_regions=_data_regions(scan, image),
            )
            if image.notes:
                # What decoding or rendering worked around: the scan's processing notes.
                result.metrics["notes"] = list(image.notes)
            with pipeline.timed(timings, "store_ms"):
                paths = writer.finish(needs_review=result.needs_review, regions=len(result.regions))
            with pipeline.timed(timings, "qc_ms"):
                qc = _qc_statistics(scan, image, writer.redacted_pixels())
        finally:
            writer.close()
        timings["total_ms"] = (time.perf_counter() - started) * 1000.0
        return _scan_complete(scan_id=scan_id, result=result, paths=paths, written=written, qc=qc)
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


def _data_regions(scan: Scan, image: Any) -> list[tuple[int, int, int, int]]:
    """An ultrasound's data regions (engine.dicom.ultrasound): ink outside them is annotation."""
    if scan.format != ScanFormat.DICOM:
        return []
    from engine.dicom.io import read_dataset
    from engine.dicom.ultrasound import ultrasound_regions

    header = read_dataset(image.clean_bytes, stop_before_pixels=True)
    return [region.box for region in ultrasound_regions(header)]


def _qc_statistics(scan: Scan, image: Any, redacted_pixels: np.ndarray) -> dict[str, Any]:
    """QC statistics of the redacted pixels (engine.pixels.qc); never fails the scan."""
    from engine.dicom.io import read_dataset
    from engine.pixels.qc import image_statistics

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
) -> Scan:
    with transaction.atomic():
        scan = Scan.objects.select_for_update().get(pk=scan_id)
        if scan.status == ScanStatus.COMPLETED:
            # Another run finished first; ours is redundant.
            transaction.on_commit(partial(storage_delete, *written))
            return scan
        previous_files = _scan_files(scan)
        # Delete-and-rewrite: whatever an interrupted run left behind is replaced, never added to.
        Region.objects.filter(scan=scan).delete()
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
        Fingerprint.objects.create(
            scan=scan,
            average_hash=result.fingerprint.average_hash,
            perceptual_hash=result.fingerprint.perceptual_hash,
            color_histogram=result.fingerprint.color_histogram,
        )
        duplicate_id, distance = _nearest_duplicate(scan, result.fingerprint.perceptual_hash)
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
        deid_fields = _scan_set_deidentified(scan, paths)
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


def _scan_set_deidentified(scan: Scan, paths: dict[str, Any]) -> list[str]:
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


def scans_requeue(*, older_than_seconds: int = 600) -> list[int]:
    """Enqueue scans stuck in uploaded/processing (a lost message or a dead worker); those
    already tried IMAGING_MAX_ATTEMPTS times are failed (too_many_attempts) instead."""
    from imaging.tasks import process_scan

    cutoff = timezone.now() - timezone.timedelta(seconds=older_than_seconds)
    stuck = Scan.objects.filter(
        status__in=[ScanStatus.UPLOADED, ScanStatus.PROCESSING], updated_at__lt=cutoff
    )
    spent = stuck.filter(attempts__gte=settings.IMAGING_MAX_ATTEMPTS)
    for scan_id in list(spent.values_list("id", flat=True)):
        scan_mark_failed(scan_id=scan_id, reason=FailureReason.TOO_MANY_ATTEMPTS)
    ids = list(
        stuck.filter(attempts__lt=settings.IMAGING_MAX_ATTEMPTS).values_list("id", flat=True)
    )
    for scan_id in ids:
        process_scan.delay(scan_id=scan_id)
    return ids


def scans_reprocess(*, scan_ids: Sequence[int], actor: Any = None) -> list[int]:
    """Put failed or stuck scans back to "uploaded" and queue them after commit. A person
    decided to try again: the attempt count starts afresh."""
    with transaction.atomic():
        scans = list(
            Scan.objects.select_for_update()
            .filter(pk__in=scan_ids)
            .exclude(status=ScanStatus.COMPLETED)
        )
        for scan in scans:
            scan.status = ScanStatus.UPLOADED
            scan.failure_reason = ""
            scan.attempts = 0
            scan.save(update_fields=["status", "failure_reason", "attempts", "updated_at"])
            audit_record(
                action=Action.ADMIN_CHANGE,
                actor=actor,
                target=scan,
                details={"change": "requeued"},
            )
            _process_after_commit(scan.id)
    return [scan.id for scan in scans]


# --- Restore --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    content: bytes
    content_type: str
    filename: str


def scan_restore_pixels(*, scan: Scan) -> np.ndarray:
    """The exact uploaded pixels (original dtype), or CryptoError on any integrity failure."""
    from engine.pixels.restoration import paste_regions

    scan_ref = str(scan.uid)
    data_key = crypto.unwrap_data_key(bytes(scan.wrapped_key), scan_ref=scan_ref)
    redacted = redacted_pixels_unseal(
        storage_read(scan.redacted_pixels_path), data_key=data_key, scan_ref=scan_ref
    )
    pieces = [
        (
            region.frame,
            region.box,
            pipeline.open_region(
                ciphertext=bytes(region.ciphertext),
                data_key=data_key,
                scan_ref=scan_ref,
                index=region.index,
                frame=region.frame,
                box=region.box,
            ),
        )
        for region in scan.regions.all()
    ]
    restored = paste_regions(redacted, pieces)
    # Belt and braces: the result must be the upload, bit for bit, or nobody sees it.
    if _pixels_digest(restored) != scan.pixels_sha256:
        raise CryptoError()
    return restored


def _audited(
    *,
    action: Action,
    actor: Any,
    target: Any,
    request: HttpRequest | None,
    details: dict[str, Any],
    work: Callable[[], Rendered],
) -> Rendered:
    try:
        rendered = work()
    except (CryptoError, ImagingError, ValueError, OSError):
        logger.exception("integrity failure on %s %s", action, getattr(target, "pk", "?"))
        audit_record(
            action=action,
            actor=actor,
            target=target,
            outcome=Outcome.FAILURE,
            request=request,
            details={**details, "error": "restore_failed"},
        )
        raise _restore_failed() from None
    audit_record(action=action, actor=actor, target=target, request=request, details=details)
    return rendered


def _refusals_audited(
    check: Callable[[], None],
    *,
    action: Action,
    actor: Any,
    target: Any,
    request: HttpRequest | None,
    details: dict[str, Any],
) -> None:
    """Run the pre-checks; a refusal (bad format, not ready) is audited before it is raised."""
    try:
        check()
    except ApplicationError as refusal:
        audit_record(
            action=action,
            actor=actor,
            target=target,
            outcome=Outcome.REFUSED,
            request=request,
            details={**details, "error": refusal.code},
        )
        raise


def _require_completed(scan: Scan) -> None:
    if scan.status != ScanStatus.COMPLETED:
        raise ApplicationError(
            "scan_not_ready", "The scan has not finished processing.", status_code=409
        )


def _frame_index(scan: Scan, frame: int) -> int:
    if not 0 <= frame < scan.frames:
        raise ApplicationError("invalid_frame", f"frame must be between 0 and {scan.frames - 1}.")
    return frame


def scan_restore(
    *,
    scan: Scan,
    actor: Any,
    fmt: str = "png",
    enhance: bool = False,
    frame: int = 0,
    request: HttpRequest | None = None,
    window: Any = None,
    reason: str = "",
) -> Rendered:
    """Decrypt every region, paste them back and render. Audited whatever happens.

    `reason` (why the original is needed) goes into the audit details; with
    MEDIMG_RESTORE_REASON_REQUIRED a restore without one is refused (reason_required).

    `window` (an `imaging.vault.redacted.WindowRequest`) windows a DICOM rendering of the RESTORED
    pixels; invalid_window for JPEG/PNG, format=dicom, or a value the image cannot take."""
    from engine.pixels.restoration import apply_clahe, encode_image
    from imaging.vault.redacted import WindowRequest

    window = window if window is not None else WindowRequest()
    details: dict[str, Any] = {"format": fmt, "enhance": enhance, "frame": frame}
    if not window.empty:
        details["window"] = {"name": window.window, "wc": window.centre, "ww": window.width}
    reason = reason.strip()
    if reason:
        details["reason"] = reason

    def check() -> None:
        if settings.MEDIMG_RESTORE_REASON_REQUIRED and not reason:
            raise ApplicationError(
                "reason_required", "Give a reason for restoring the original image."
            )
        if fmt not in RESTORE_FORMATS:
            raise ApplicationError("invalid_format", "format must be png, jpeg or dicom.")
        if fmt == "dicom" and scan.format != ScanFormat.DICOM:
            raise ApplicationError("invalid_format", "format=dicom is only for DICOM uploads.")
        if fmt == "dicom" and enhance:
            raise ApplicationError("invalid_format", "enhance applies to png and jpeg only.")
        _require_completed(scan)
        _frame_index(scan, frame)
        if not window.empty and (scan.format != ScanFormat.DICOM or fmt == "dicom"):
            raise ApplicationError(
                "invalid_window", "Windows apply to png or jpeg renderings of DICOM images."
            )

    _refusals_audited(
        check,
        action=Action.SCAN_RESTORED,
        actor=actor,
        target=scan,
        request=request,
        details=details,
    )

    def work() -> Rendered:
        pixels = scan_restore_pixels(scan=scan)
        stem = f"scan-{scan.pk}-restored"
        if fmt == "dicom":
            scan_ref = str(scan.uid)
            data_key = crypto.unwrap_data_key(bytes(scan.wrapped_key), scan_ref=scan_ref)
            original = crypto.decrypt_blob(
                data_key,
                storage_read(scan.original_path),
                aad=crypto.original_aad(scan_ref=scan_ref),
            )
            return Rendered(original, "application/dicom", f"{stem}.dcm")
        image = _display_frame(scan, pixels, frame, window=window, actor=actor, request=request)
        if enhance:
            image = apply_clahe(image)
        suffix = "jpg" if fmt == "jpeg" else "png"
        return Rendered(encode_image(image, fmt), f"image/{fmt}", f"{stem}.{suffix}")

    return _audited(
        action=Action.SCAN_RESTORED,
        actor=actor,
        target=scan,
        request=request,
        details=details,
        work=work,
    )


def _display_frame(
    scan: Scan, pixels: np.ndarray, frame: int, *, window: Any, actor: Any, request: Any
) -> np.ndarray:
    """One frame as an image a PNG can hold exactly (JPEG/PNG) or a rendering (DICOM)."""
    from engine.pixels.rendering import render_frame_uint8
    from imaging.vault.redacted import scan_header, scan_window

    if scan.format != ScanFormat.DICOM:
        return pixels[frame]
    header = scan_header(scan)
    try:
        choice = scan_window(scan, header, window)
    except ApplicationError as refusal:
        audit_record(
            action=Action.SCAN_RESTORED,
            actor=actor,
            target=scan,
            outcome=Outcome.REFUSED,
            request=request,
            details={"frame": frame, "error": refusal.code},
        )
        raise
    return render_frame_uint8(header, pixels[frame], index=frame, window=choice)


def _dicom_render(scan: Scan, pixels: np.ndarray) -> np.ndarray:
    """A DICOM crop rendered with the image's default window (no overlays: a crop does not
    sit where the overlay plane does)."""
    from engine.pixels.rendering import render_frame_uint8
    from imaging.vault.redacted import scan_header

    return render_frame_uint8(scan_header(scan), pixels, overlays=False)


def region_decrypt(*, region: Region, actor: Any, request: HttpRequest | None = None) -> Rendered:
    """One region's original pixels as PNG. Audited whatever happens."""
    from engine.pixels.restoration import encode_image

    scan = region.scan
    details = {"scan": scan.pk, "index": region.index}
    _refusals_audited(
        partial(_require_completed, scan),
        action=Action.REGION_DECRYPTED,
        actor=actor,
        target=region,
        request=request,
        details=details,
    )

    def work() -> Rendered:
        scan_ref = str(scan.uid)
        data_key = crypto.unwrap_data_key(bytes(scan.wrapped_key), scan_ref=scan_ref)
        crop = pipeline.open_region(
            ciphertext=bytes(region.ciphertext),
            data_key=data_key,
            scan_ref=scan_ref,
            index=region.index,
            frame=region.frame,
            box=region.box,
        )
        # JPEG/PNG crops are their exact pixels; DICOM crops are rendered like the image.
        image = _dicom_render(scan, crop) if scan.format == ScanFormat.DICOM else crop
        return Rendered(
            encode_image(image, "png"),
            "image/png",
            f"scan-{scan.pk}-region-{region.index}.png",
        )

    return _audited(
        action=Action.REGION_DECRYPTED,
        actor=actor,
        target=region,
        request=request,
        details=details,
        work=work,
    )


def access_refused_record(
    *, action: Action, actor: Any, target_type: str, target_id: Any, request: HttpRequest | None
) -> None:
    """A refused restore or region decryption is audited under its own action too."""
    audit_record(
        action=action,
        actor=actor,
        target_type=target_type,
        target_id=str(target_id),
        outcome=Outcome.REFUSED,
        request=request,
    )
