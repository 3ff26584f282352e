"""A doctor's access to what DICOM de-identification produced and kept back.

    scan_identity(*, scan, actor, request) -> dict          # the original identifying values
    scan_export(*, scan, actor, fmt, request) -> Rendered   # the de-identified DICOM
    patient_export(*, patient, scans, actor, request) -> StreamedZip   # zip, streamed
    study_export(*, patient, study_uid, scans, actor, request) -> StreamedZip   # zip, streamed

Callers have checked the role (doctor) and scoped the scans (`Scan.objects.visible_to`).
Every call is audited, refusals included: identity as scan_restored (details part=identity),
exports as scan_viewed or patient_viewed (details view=export). Exports hold only
de-identified data: the de-identified DICOM (pixels redacted, header per PS3.15 Annex E) or,
for JPEG/PNG scans, the redacted PNG frames, with a manifest of counts and remapped UIDs.
A scan still flagged for review (the detector's second look found text) is not exported until
a technician has reviewed it: its pixels may still show burned-in text.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.http import Http404, HttpRequest

from audit.models import Action, Outcome
from audit.services import audit_record
from engine import errors
from engine.errors import CryptoError, EngineError, ImagingError
from imaging.models import Scan, ScanFormat, ScanStatus
from imaging.services.restore import Rendered, restore_failed
from imaging.vault.derivatives import frame_read
from imaging.vault.identity import identity_open, identity_view
from imaging.vault.keys import open_data_key
from imaging.vault.redacted import open_redacted_dataset
from patients.models import Patient

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("dicom",)
T = TypeVar("T")


def _audit_call(
    work: Callable[[], T],
    *,
    action: Action,
    actor: Any,
    request: HttpRequest | None,
    details: dict[str, Any],
    target: Any = None,
    target_type: str = "",
    target_id: str = "",
) -> T:
    """Run `work`; audit its refusal, its integrity failure or its success."""
    where = {"target": target, "target_type": target_type, "target_id": target_id}
    try:
        result = work()
    except EngineError as refusal:
        audit_record(
            action=action,
            actor=actor,
            outcome=Outcome.REFUSED,
            request=request,
            details={**details, "error": refusal.code},
            **where,
        )
        raise
    except (CryptoError, ImagingError, ValueError, OSError):
        logger.exception("integrity failure on %s %s", action, target_id or target)
        audit_record(
            action=action,
            actor=actor,
            outcome=Outcome.FAILURE,
            request=request,
            details={**details, "error": "restore_failed"},
            **where,
        )
        raise restore_failed() from None
    audit_record(action=action, actor=actor, request=request, details=details, **where)
    return result


def _require_dicom_done(scan: Scan) -> None:
    if scan.status != ScanStatus.COMPLETED:
        raise errors.scan_not_ready()
    if scan.format != ScanFormat.DICOM:
        raise errors.invalid_format("Only DICOM scans have a DICOM header.")


# --- Identity -------------------------------------------------------------------------------


def scan_identity(*, scan: Scan, actor: Any, request: HttpRequest | None = None) -> dict[str, Any]:
    """The header values de-identification removed or changed, decrypted for a doctor."""

    def work() -> dict[str, Any]:
        _require_dicom_done(scan)
        if not scan.identity_ciphertext:
            raise errors.identity_unavailable()
        document = identity_open(
            bytes(scan.identity_ciphertext), data_key=open_data_key(scan), scan_ref=str(scan.uid)
        )
        return {"scan": scan.pk, **identity_view(document)}

    return _audit_call(
        work,
        action=Action.SCAN_RESTORED,
        actor=actor,
        request=request,
        target=scan,
        details={"part": "identity"},
    )


# --- Export ---------------------------------------------------------------------------------


def _export_refusal(scan: Scan) -> EngineError | None:
    """Why the scan may not leave as research data; None when it may."""
    if scan.status != ScanStatus.COMPLETED:
        return errors.scan_not_ready()
    if scan.needs_review and scan.reviewed_at is None:
        return errors.needs_review()
    return None


def _deidentified_dicom(scan: Scan) -> bytes:
    return open_redacted_dataset(scan)


def scan_export(
    *, scan: Scan, actor: Any, fmt: str = "dicom", request: HttpRequest | None = None
) -> Rendered:
    """The de-identified DICOM of one scan (redacted pixels, Annex E header)."""

    def work() -> Rendered:
        if fmt not in EXPORT_FORMATS:
            raise errors.invalid_format("format must be dicom.")
        if scan.format != ScanFormat.DICOM:
            raise errors.invalid_format("format=dicom is only for DICOM uploads.")
        refusal = _export_refusal(scan)
        if refusal:
            raise refusal
        return Rendered(
            _deidentified_dicom(scan), "application/dicom", f"scan-{scan.pk}-deidentified.dcm"
        )

    return _audit_call(
        work,
        action=Action.SCAN_VIEWED,
        actor=actor,
        request=request,
        target=scan,
        details={"view": "export", "format": fmt},
    )


@dataclass(frozen=True)
class StreamedZip:
    """A zip handed out while it is written: one member in memory at a time."""

    chunks: Iterator[bytes]
    content_type: str
    filename: str


class _Sink:
    """Write-only: keeps what the zip writer wrote until the generator hands it out.

    No tell() or seek(), so zipfile writes a streaming zip (data descriptors)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _zip_plan(scans: Sequence[Scan]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What goes into the zip, and what is left out and why.

    Every file is read and, for DICOM, decrypted once here, so a tampered or missing file
    fails the request before a byte is sent (and is audited as a failure); the stream then
    reads each again, one at a time."""
    entries: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for scan in scans:
        refusal = _export_refusal(scan)
        if refusal:
            skipped.append({"scan": scan.pk, "reason": refusal.code})
            continue
        if scan.format == ScanFormat.DICOM:
            # Named by the remapped UIDs only: no file name or header value of the upload.
            name = f"{scan.study_uid or 'study'}/{scan.series_uid or 'series'}/"
            name += f"scan-{scan.pk}.dcm"
            _deidentified_dicom(scan)
            files: list[tuple[str, Scan, int | None]] = [(name, scan, None)]
        else:
            files = []
            for index in range(len((scan.frame_paths or {}).get("redacted") or [])):
                # Checked against the scan's digest: never another scan's picture in the zip.
                frame_read(scan, "redacted", index)
                files.append((f"images/scan-{scan.pk}-frame-{index}.png", scan, index))
        entries.append(
            {
                "scan": scan.pk,
                "format": scan.format,
                "files": files,
                "study_uid": scan.study_uid,
                "series_uid": scan.series_uid,
                "instance_number": scan.instance_number,
                "modality": scan.modality,
                "deidentification": scan.deid_report,
            }
        )
    if not entries:
        raise errors.nothing_to_export()
    return entries, skipped


def _zip_chunks(entries: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> Iterator[bytes]:
    sink = _Sink()
    # The sink has write and flush only (no tell or seek: a streaming zip); typeshed's
    # overloads ask for a seekable file.
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:  # type: ignore[call-overload]
        for entry in entries:
            for name, scan, frame in entry["files"]:
                data = (
                    _deidentified_dicom(scan)
                    if frame is None
                    else frame_read(scan, "redacted", frame)
                )
                archive.writestr(name, data)
                yield sink.drain()
        manifest = {
            "scans": [{**e, "files": [file[0] for file in e["files"]]} for e in entries],
            "skipped": skipped,
        }
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
    yield sink.drain()


def _zip(scans: Sequence[Scan], filename: str) -> tuple[StreamedZip, list[int], list[int]]:
    entries, skipped = _zip_plan(scans)
    stream = StreamedZip(_zip_chunks(entries, skipped), "application/zip", filename)
    return stream, [e["scan"] for e in entries], [s["scan"] for s in skipped]


def patient_export(
    *,
    patient: Patient,
    scans: Sequence[Scan],
    actor: Any,
    request: HttpRequest | None = None,
) -> StreamedZip:
    """A zip of the patient's de-identified scans, streamed. It names nothing of the patient."""
    details: dict[str, Any] = {"view": "export", "format": "zip"}

    def work() -> StreamedZip:
        stream, included, skipped = _zip(scans, "patient-export.zip")
        details.update(scans=included, skipped=skipped)
        return stream

    return _audit_call(
        work,
        action=Action.PATIENT_VIEWED,
        actor=actor,
        request=request,
        target=patient,
        details=details,
    )


def study_export(
    *,
    patient: Patient,
    study_uid: str,
    scans: Sequence[Scan],
    actor: Any,
    request: HttpRequest | None = None,
) -> StreamedZip:
    """A zip of one patient's scans of one study, de-identified and streamed (`study_uid` is
    the remapped UID). Caller passes `scans_for_study_export` for the same patient."""
    if any(scan.patient_id != patient.pk for scan in scans):
        # A study UID is not a patient boundary: never let a caller mix patients in one zip.
        raise ValueError("study_export: every scan must belong to `patient`")
    details: dict[str, Any] = {"view": "export", "format": "zip", "patient": patient.pk}

    def work() -> StreamedZip:
        stream, included, skipped = _zip(scans, "study-export.zip")
        details.update(scans=included, skipped=skipped)
        return stream

    return _audit_call(
        work,
        action=Action.SCAN_VIEWED,
        actor=actor,
        request=request,
        target_type="study",
        target_id=study_uid,
        details=details,
    )


# --- Reads ----------------------------------------------------------------------------------


def scans_for_patient_export(*, user: Any, patient: Patient) -> list[Scan]:
    return list(
        Scan.objects.visible_to(user)
        .filter(patient=patient)
        .defer("identity_ciphertext")
        .order_by("study_uid", "series_uid", "instance_number", "id")
    )


def scans_for_study_export(*, user: Any, patient: Patient, study_uid: str) -> list[Scan]:
    """`patient`'s scans of the study that `user` may see; Http404 when there are none.

    Scoped by patient as well as by UID: two patients' scans can carry one study UID (a
    merged or mislabelled study), and an export for one must never carry the other."""
    scans = list(
        Scan.objects.visible_to(user)
        .filter(patient=patient, study_uid=study_uid)
        .exclude(study_uid="")
        .defer("identity_ciphertext")
        .order_by("series_uid", "instance_number", "id")
    )
    if not scans:
        raise Http404("No such study.")
    return scans
