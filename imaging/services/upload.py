"""Uploads: read and validate the files, store each original encrypted, create the scans
(with a new patient, for patient_create_with_images) and queue their processing on commit.

Ordering rule that keeps a crash harmless: encrypted file on storage (atomic), THEN the row,
THEN (on commit) the task. A failed write leaves no row; a failed commit removes the file.
"""

from __future__ import annotations

import logging
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

from accounts.session_keys import SealContext, unseal_from
from audit.models import Action
from audit.services import audit_record
from engine import errors
from engine.errors import ImagingError
from engine.intake.archive import is_zip, zip_members_iter
from engine.intake.validation import limit_for, sniff_kind, too_large, validate_upload
from imaging.models import Scan, ScanFormat
from imaging.services.processing import scan_process_on_commit
from imaging.vault.keys import new_scan_key, seal_original
from imaging.vault.pixels import pixels_digest
from imaging.vault.storage import storage_delete, storage_write
from patients.models import Patient
from patients.services import patient_create, patient_id_check_free

logger = logging.getLogger(__name__)

# Header, key id, nonce and tag of a sealed upload (accounts.keyexchange), with room to spare.
SEAL_OVERHEAD = 256


@dataclass(frozen=True)
class _Accepted:
    name: str
    size: int
    image: Any  # engine.intake.validation.DecodedImage


def upload_limits() -> dict[str, Any]:
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
    upload.seek(0)
    head = upload.read(4)
    upload.seek(0)
    if seal is not None or not is_zip(head):
        yield _read_upload(upload, seal=seal, patient_id=patient_id)
        return
    limit = settings.UPLOAD_ARCHIVE_MAX_BYTES
    too_large = errors.archive_too_large("The archive is larger than the upload limit.")
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
            raise refusal.naming(member.name) from None
        yield _Accepted(name=member.name[-255:], size=len(member.data), image=image)
        del image, member  # Not held while the next member decodes.


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
            raise errors.decoded_too_large(
                f"The files of this upload decode to more than the {budget:,} bytes one "
                "request may hold: send them in several uploads.",
            )
        originals.append(_original_store(one, written=written))
        del one  # Before the next file is decoded.
    return originals


def _original_store(accepted: _Accepted, *, written: list[str]) -> _Original:
    image = accepted.image
    uid = uuid.uuid4()
    data_key, wrapped = new_scan_key(str(uid))
    blob = seal_original(data_key, image.clean_bytes, scan_ref=str(uid))
    # The file first: if this raises, no row is ever created that points at nothing.
    try:
        path = storage_write(f"scans/{uid}/original.enc", blob)
    except OSError:
        logger.exception("storing upload for scan %s failed", uid)
        raise errors.storage_unavailable() from None
    written.append(path)
    pixels: np.ndarray = image.pixels
    return _Original(
        uid=uid,
        name=accepted.name,
        size=accepted.size,
        kind=image.kind,
        shape=tuple(int(n) for n in pixels.shape),
        dtype=str(pixels.dtype),
        pixels_sha256=pixels_digest(pixels),
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
        raise errors.no_files()
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
    # Before the transaction: a refused id's audit event must not be rolled back with it.
    patient_id_check_free(
        patient_id=str(fields.get("id", "")), created_by=created_by, request=request
    )
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
                scan_process_on_commit(scan.id)
    except BaseException:
        storage_delete(*written)
        raise
    return patient, scans
