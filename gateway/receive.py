"""An instance received over DICOM (C-STORE or STOW-RS) goes through the upload service.

    instance_receive(*, data, uploaded_by, source, request=None) -> Scan

The bytes are handed, as one file, to the same service the API's upload uses
(imaging.services.upload): validation, encrypted storage, de-identification, detection and
regions follow from there. The patient is the one with the dataset's Patient ID, created
(as `uploaded_by`) when there is none yet, in the sending peer's department
(`DicomPeer.department`, else `DICOM_DEFAULT_DEPARTMENT`, else the upload user's
departments); an existing patient joins that department. A refused dataset raises
Refused with the DICOM status to answer and stores nothing; every instance, accepted or not,
is audited (dicom_received) without any header value.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import DatabaseError, IntegrityError, transaction
from django.http import HttpRequest
from django.utils.crypto import salted_hmac
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from accounts.models import Department
from audit.models import Action, Outcome
from audit.services import audit_record
from engine.errors import EngineError, ErrorCode, ImagingError
from gateway.models import DicomPeer, ReceivedInstance
from imaging.models import Scan
from imaging.services.upload import patient_create_with_images, scan_upload
from patients.models import Patient
from patients.services import patient_join_department, validate_patient_id

logger = logging.getLogger(__name__)

# The gateway's audit actions (kept under these names for the gateway's callers and tests).
ACTION_ASSOCIATION = Action.DICOM_ASSOCIATION
ACTION_RECEIVED = Action.DICOM_RECEIVED
ACTION_FORWARDED = Action.DICOM_FORWARDED

RECEIVED_SALT = "medimg.gateway.received-instance"

# DICOM C-STORE statuses (PS3.4 B.2.3)
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_UNABLE_TO_PROCESS = 0xC001


@dataclass
class Refused(Exception):
    """A dataset the gateway will not store: `status` is the DICOM status to answer with."""

    status: int
    code: str

    def __str__(self) -> str:
        return f"{self.code} (0x{self.status:04X})"


def _patient_name(value: Any) -> str:
    name = re.sub(r"\s+", " ", str(value or "").replace("^", " ")).strip()
    return name[:200] if name and name.isprintable() else "Unknown"


def _patient_age(value: Any) -> int | None:
    match = re.fullmatch(r"(\d{3})Y", str(value or "").strip())
    if match is None or int(match.group(1)) > 150:
        return None
    return int(match.group(1))


def _header(data: bytes) -> Any:
    try:
        return dcmread(io.BytesIO(data), stop_before_pixels=True, force=False)
    except (InvalidDicomError, ValueError, EOFError, OSError, TypeError, KeyError):
        raise Refused(STATUS_CANNOT_UNDERSTAND, "unreadable_dataset") from None


def peer_department(peer: DicomPeer | None) -> Department | None:
    """The department a peer's patients are filed in: the peer's own, else the one named by
    DICOM_DEFAULT_DEPARTMENT, else None (the upload user's departments). A setting that names
    no department refuses the instance (0xA700: the peer retries once an admin fixes it),
    rather than filing patients where nobody expects them."""
    if peer is None:
        return None
    if peer.department_id is not None:
        return peer.department
    slug = settings.DICOM_DEFAULT_DEPARTMENT
    if not slug:
        return None
    department = Department.objects.filter(slug=slug).first()
    if department is None:
        logger.error("DICOM_DEFAULT_DEPARTMENT names no department: %r", slug)
        raise Refused(STATUS_OUT_OF_RESOURCES, "unknown_default_department")
    return department


def _store(
    *,
    data: bytes,
    header: Any,
    uploaded_by: Any,
    department: Department | None,
    request: HttpRequest | None,
) -> Scan:
    try:
        patient_id = validate_patient_id(str(header.get("PatientID", "") or "").strip())
    except EngineError:
        raise Refused(STATUS_CANNOT_UNDERSTAND, "invalid_patient_id") from None
    name = "dicom-gateway.dcm"  # Never a header value: file names are shown and logged.
    # Found by its Patient ID, else created; a patient created at the same moment by
    # another association makes the creation fail with patient_exists: then it is found.
    for _ in range(2):
        upload = SimpleUploadedFile(name, data, content_type="application/dicom")
        patient = Patient.objects.filter(pk=patient_id).first()
        if patient is not None:
            scan = scan_upload(
                patient=patient, uploads=[upload], uploaded_by=uploaded_by, request=request
            )[0]
            if department is not None:
                # The peer's department imaged the patient: its staff see and review the
                # images (the care follows the patient; docs/access.md).
                patient_join_department(
                    patient=patient,
                    department=department,
                    actor=uploaded_by,
                    via="dicom",
                    request=request,
                )
            return scan
        try:
            _, scans = patient_create_with_images(
                images=[upload],
                created_by=uploaded_by,
                request=request,
                departments=[department] if department is not None else None,
                id=patient_id,
                name=_patient_name(header.get("PatientName")),
                age=_patient_age(header.get("PatientAge")),
            )
            return scans[0]
        except EngineError as refusal:
            if refusal.code != ErrorCode.PATIENT_EXISTS:
                raise
    raise Refused(STATUS_UNABLE_TO_PROCESS, "patient_exists")


def received_hash(sop_instance_uid: str) -> str:
    """The keyed hash an instance's SOP Instance UID (as sent) is remembered by."""
    if not sop_instance_uid:
        raise Refused(STATUS_CANNOT_UNDERSTAND, "no_sop_instance_uid")
    return salted_hmac(RECEIVED_SALT, sop_instance_uid, algorithm="sha256").hexdigest()


def _received_claim(sop_hash: str) -> Scan | None:
    """None when this instance is new (it is now claimed: the caller stores it); the scan it
    was stored as when it came before. Refused (0xA700, the peer retries later) while another
    association is still storing the same instance."""
    try:
        with transaction.atomic():
            ReceivedInstance.objects.create(sop_hash=sop_hash)
        return None
    except IntegrityError:
        pass
    earlier = ReceivedInstance.objects.filter(sop_hash=sop_hash).select_related("scan").first()
    if earlier is None or earlier.scan is None:
        raise Refused(STATUS_OUT_OF_RESOURCES, "being_stored")
    return earlier.scan


def instance_receive(
    *,
    data: bytes,
    uploaded_by: Any,
    source: dict[str, Any],
    request: HttpRequest | None = None,
    peer: DicomPeer | None = None,
) -> Scan:
    """Store one received Part 10 file as a scan; Refused (audited) when it is refused.

    From a DICOM peer, the patient is filed in the peer's department (peer_department);
    otherwise (STOW-RS) in the uploading user's departments.

    `source` names where it came from for the audit log (protocol, peer AE title, address).
    An instance received before (same SOP Instance UID) is answered with its scan and not
    stored again (audited with duplicate=True).
    """
    try:
        if uploaded_by is None:
            raise Refused(STATUS_OUT_OF_RESOURCES, "no_upload_user")
        header = _header(data)
        sop_hash = received_hash(str(header.get("SOPInstanceUID", "") or ""))
        earlier = _received_claim(sop_hash)
        if earlier is None:
            try:
                scan = _store(
                    data=data,
                    header=header,
                    uploaded_by=uploaded_by,
                    department=peer_department(peer),
                    request=request,
                )
            except BaseException:
                ReceivedInstance.objects.filter(sop_hash=sop_hash, scan=None).delete()
                raise
            ReceivedInstance.objects.filter(sop_hash=sop_hash).update(scan=scan)
        else:
            scan = earlier
            source = {**source, "duplicate": True}
    except Refused as refusal:
        _audit_refusal(refusal, uploaded_by=uploaded_by, source=source, request=request)
        raise
    except ImagingError as refusal:
        mapped = Refused(STATUS_DOES_NOT_MATCH_SOP_CLASS, refusal.code)
        _audit_refusal(mapped, uploaded_by=uploaded_by, source=source, request=request)
        raise mapped from None
    except EngineError as refusal:
        status = STATUS_OUT_OF_RESOURCES if refusal.status_code >= 500 else 0
        status = status or (
            STATUS_OUT_OF_RESOURCES if refusal.status_code == 413 else STATUS_CANNOT_UNDERSTAND
        )
        mapped = Refused(status, refusal.code)
        _audit_refusal(mapped, uploaded_by=uploaded_by, source=source, request=request)
        raise mapped from None
    except (DatabaseError, OSError) as exc:
        logger.exception("storing a received instance failed")
        mapped = Refused(STATUS_OUT_OF_RESOURCES, type(exc).__name__)
        _audit_refusal(mapped, uploaded_by=uploaded_by, source=source, request=request)
        raise mapped from None
    audit_record(
        action=ACTION_RECEIVED,
        actor=uploaded_by,
        target=scan,
        request=request,
        details={**source, "status": STATUS_SUCCESS},
    )
    return scan


def _audit_refusal(
    refusal: Refused, *, uploaded_by: Any, source: dict[str, Any], request: HttpRequest | None
) -> None:
    try:
        audit_record(
            action=ACTION_RECEIVED,
            actor=uploaded_by,
            outcome=Outcome.REFUSED,
            target_type="scan",
            request=request,
            details={**source, "status": refusal.status, "error": refusal.code},
        )
    except DatabaseError:
        logger.exception("auditing a refused instance failed")
