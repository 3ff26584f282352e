"""DICOM de-identification as medimg applies it: the one code path behind a DICOM upload's
processing and `manage.py deidentify`. Plain module, no ORM: bytes and arrays in and out.

    deid_options(*, pixels_clean) -> tuple[str, ...]
    dicom_deidentify(source, redacted_pixels, *, pixels_clean, regions) -> DeidOutcome
    identity_seal(outcome, *, data_key, scan_ref) -> bytes      # AES-256-GCM, purpose "identity"
    identity_open(ciphertext, *, data_key, scan_ref) -> dict    # CryptoError if anything changed
    identity_view(identity) -> dict                             # what a doctor is shown

The header is de-identified by `engine.dicom.deid` (PS3.15 Annex E, Table E.1-1) with the Basic
Profile and the options Retain Longitudinal Temporal Information with Modified Dates and,
once the detector's pass over the pixels left nothing for review on any frame, Clean Pixel
Data (which is what sets BurnedInAnnotation to NO; while the pass still flags the scan it is
YES); Clean Descriptors with DEID_DESCRIPTORS=clean (by default descriptors are removed as the
Basic Profile says); Retain Patient Characteristics and Retain Device Identity come from
settings, Retain Safe Private from DEID_SAFE_PRIVATE. The pixels are written as
DICOM_OUTPUT_SYNTAX says: uncompressed or losslessly compressed, never lossy.

Everything deterministic derives from one installation secret, MEDIMG_DEID_SECRET (a
development secret is generated under KEY_DIR when unset), through HKDF-SHA256 with a purpose
each: the UID remapping and patient pseudonyms, and the date shift. The date shift is one per
patient, keyed by the DICOM Patient ID (Patient's Name when there is none, the Study Instance
UID when there is neither), so every study of a patient moves by the same number of days and
intervals between them are kept. A web upload and the command give the same file the same
UIDs, pseudonym and dates.
"""

from __future__ import annotations

import functools
import io
import json
from collections import Counter
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings

from engine import errors
from engine.crypto import envelope as crypto
from engine.crypto.transfer import hkdf_sha256
from engine.dicom import deid
from engine.dicom import io as dicom
from medimg.keys import load_or_create_dev_key

IDENTITY_VERSION = 1
# How `engine.dicom.deid` action codes are counted in a report.
ACTION_KINDS = {
    "X": "removed",
    "Z": "emptied",
    "D": "replaced_with_dummy",
    "C": "cleaned",
    "U": "uid_remapped",
    "set": "added_or_set",
}
# The identity a doctor sees first, in this order, when the header had it.
PATIENT_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "OtherPatientIDs",
    "PatientAddress",
    "InstitutionName",
    "ReferringPhysicianName",
    "StudyDate",
    "AccessionNumber",
)


@dataclass(frozen=True)
class DeidOutcome:
    data: bytes  # the de-identified DICOM file, with the redacted pixels (b"" if written to `out`)
    removed_values: dict[str, dict[str, Any]]  # engine.dicom.deid's originals: identity, secret
    date_shift_days: int  # part of the identity: it turns shifted dates back into real ones
    pseudonym: str
    report: dict[str, Any]  # no identifying value: edition, options, counts
    study_uid: str  # the remapped UIDs and what else grouping needs
    series_uid: str
    sop_instance_uid: str
    instance_number: int | None
    modality: str
    scanner: str


# --------------------------------------------------------------------------- secrets


def _derive(purpose: str) -> bytes:
    secret = load_or_create_dev_key("MEDIMG_DEID_SECRET", settings.MEDIMG_DEID_SECRET)
    return hkdf_sha256(secret, salt=None, info=f"medimg/deid/{purpose}/v1".encode())


@functools.cache
def _secrets(key_dir: str, configured: str | None) -> tuple[bytes, bytes]:
    # Cached per configuration: tests change settings, processes never do.
    return _derive("uids-and-pseudonyms"), _derive("date-shift")


def uid_secret() -> bytes:
    return _secrets(str(settings.KEY_DIR), settings.MEDIMG_DEID_SECRET)[0]


def date_secret() -> bytes:
    return _secrets(str(settings.KEY_DIR), settings.MEDIMG_DEID_SECRET)[1]


# --------------------------------------------------------------------------- options


def safe_private() -> tuple[Any, ...]:
    """DEID_SAFE_PRIVATE in `engine.dicom.deid`'s form (settings has checked the syntax)."""
    kept: list[Any] = []
    for entry in settings.DEID_SAFE_PRIVATE:
        parts = entry.split(":")
        if len(parts) == 3:
            kept.append((parts[0], int(parts[1], 16), int(parts[2], 16)))
        else:
            kept.append(int(entry, 16))
    return tuple(kept)


def deid_options(*, pixels_clean: bool) -> tuple[str, ...]:
    """The Annex E options applied. Clean Pixel Data only when the pixel pass left nothing
    for a person to check: it is what lets the file say BurnedInAnnotation NO. Clean
    Descriptors only with DEID_DESCRIPTORS=clean: by default descriptors get the Basic
    Profile's action, since free text cannot be cleaned with certainty."""
    dropped = set()
    if not pixels_clean:
        dropped.add("clean_pixel_data")
    if settings.DEID_DESCRIPTORS != "clean":
        dropped.add("clean_descriptors")
    options = [o for o in deid.DEFAULT_OPTIONS if o not in dropped]
    if settings.DEID_RETAIN_PATIENT_CHARACTERISTICS:
        options.append("retain_patient_characteristics")
    if settings.DEID_RETAIN_DEVICE_IDENTITY:
        options.append("retain_device_identity")
    return tuple(options)


def _patient_key(header: Any) -> str:
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID"):
        value = str(header.get(keyword, "") or "").strip()
        if value:
            return f"{keyword}:{value}"
    return ""


# --------------------------------------------------------------------------- de-identify


def dicom_deidentify(
    source: bytes,
    redacted_pixels: Any,
    *,
    pixels_clean: bool,
    regions: int,
    out: IO[bytes] | None = None,
) -> DeidOutcome:
    """`source` (a validated DICOM file) with `redacted_pixels` in place of its pixel data and
    its header de-identified. ImagingError("corrupt_image") for a file the profile cannot
    walk (an element that does not decode).

    The output (DICOM_OUTPUT_SYNTAX, uncompressed or lossless) is built frame by frame: the
    profile runs on the redacted header alone and the pixel data is appended after it one
    frame at a time, each frame encoded on its own for a compressed syntax
    (`redacted_pixels` needs only `shape`, `dtype` and frame indexing), so
    with `out` (a file) a cine's frames are never all in memory; the outcome's `data` is then
    empty and the file is in `out`. The bytes are the same as de-identifying the whole file."""
    header = dicom.read_dataset(source, stop_before_pixels=True)
    days = deid.patient_date_shift(_patient_key(header), date_secret())
    pseudonym = deid.patient_pseudonym(str(header.get("PatientID", "") or ""), uid_secret())
    options = deid_options(pixels_clean=pixels_clean)
    syntax = settings.DICOM_OUTPUT_SYNTAX
    redacted_header = dicom.redacted_header(source, redacted_pixels, syntax=syntax)
    # The Pixel Data element is the file's last: the profile never touches it.
    redacted = redacted_header.data
    try:
        result = deid.deidentify(
            redacted,
            options=options,
            uid_secret=uid_secret(),
            date_shift_days=days,
            safe_private=safe_private(),
            pseudonym=pseudonym,
            pixels_flagged=not pixels_clean,
        )
    except deid.DeidError as exc:
        raise errors.corrupt_image("The DICOM header could not be de-identified.") from exc
    whole = io.BytesIO() if out is None else None
    target = whole if whole is not None else out
    assert target is not None
    target.write(result.data)
    dicom.write_pixel_data(
        target,
        redacted_pixels,
        implicit_vr=redacted_header.implicit_vr,
        encoding=redacted_header.encoding,
        options=redacted_header.options,
    )
    data = whole.getvalue() if whole is not None else b""
    deidentified = dicom.read_dataset(result.data, stop_before_pixels=True)
    instance = deidentified.get("InstanceNumber")
    try:
        instance_number = int(instance) if instance not in (None, "") else None
    except (TypeError, ValueError):
        instance_number = None
    scanner = " ".join(
        str(deidentified.get(k, "") or "").strip()
        for k in ("Manufacturer", "ManufacturerModelName", "DeviceSerialNumber")
    ).strip()
    return DeidOutcome(
        data=data,
        removed_values=result.removed_values,
        date_shift_days=days,
        pseudonym=pseudonym,
        report=deid_report(result, regions=regions, pixels_clean=pixels_clean),
        study_uid=str(deidentified.get("StudyInstanceUID", "") or "")[:64],
        series_uid=str(deidentified.get("SeriesInstanceUID", "") or "")[:64],
        sop_instance_uid=str(deidentified.get("SOPInstanceUID", "") or "")[:64],
        instance_number=instance_number,
        modality=str(deidentified.get("Modality", "") or "")[:16],
        scanner=scanner[:128],
    )


def _is_private(path: str) -> bool:
    return int(path.rsplit(".", 1)[-1][:4], 16) % 2 == 1


def action_counts(actions_applied: dict[str, str]) -> dict[str, int]:
    """Elements changed, by kind; private elements removed are counted on their own."""
    counts: Counter[str] = Counter()
    for path, code in actions_applied.items():
        kind = ACTION_KINDS.get(code, code)
        if code == "X" and _is_private(path):
            kind = "private_removed"
        counts[kind] += 1
    return dict(sorted(counts.items()))


def deid_report(result: deid.DeidResult, *, regions: int, pixels_clean: bool) -> dict[str, Any]:
    """What was done, for the scan's record and the command's report: never a value."""
    _, _, _, edition = deid.load_table()
    names = [deid.OPTION_CODES[o][1] for o in result.options]
    return {
        "standard": "DICOM PS3.15 Annex E, Table E.1-1",
        "edition": edition,
        "profile": deid.BASIC_PROFILE[1],
        "options": list(result.options),
        "method": [f"{edition} Basic Profile", *names],
        "method_codes": [deid.BASIC_PROFILE[0], *(deid.OPTION_CODES[o][0] for o in result.options)],
        "counts": action_counts(result.actions_applied),
        "elements_changed": len(result.actions_applied),
        "pixels": {
            "regions": regions,
            "clean": pixels_clean,
            # NO only once the detector's pass left nothing for review, YES while it did.
            "burned_in_annotation": "NO" if pixels_clean else "YES",
        },
    }


# --------------------------------------------------------------------------- identity


def identity_document(outcome: DeidOutcome) -> dict[str, Any]:
    return {
        "version": IDENTITY_VERSION,
        "removed_values": outcome.removed_values,
        "date_shift_days": outcome.date_shift_days,
        "pseudonym": outcome.pseudonym,
    }


def identity_seal(outcome: DeidOutcome, *, data_key: bytes, scan_ref: str) -> bytes:
    plaintext = json.dumps(identity_document(outcome), sort_keys=True).encode()
    return crypto.encrypt_blob(data_key, plaintext, aad=crypto.identity_aad(scan_ref=scan_ref))


def identity_open(ciphertext: bytes, *, data_key: bytes, scan_ref: str) -> dict[str, Any]:
    plaintext = crypto.decrypt_blob(
        data_key, bytes(ciphertext), aad=crypto.identity_aad(scan_ref=scan_ref)
    )
    document: dict[str, Any] = json.loads(plaintext)
    return document


def identity_view(document: dict[str, Any]) -> dict[str, Any]:
    """The original header values for a doctor: the patient's identity first, then every
    value the profile removed or changed (sequence items by path)."""
    values = [
        {"path": path, "keyword": keyword, "value": display}
        for path, keyword, display in deid.iter_paths(document["removed_values"])
    ]
    top = {v["keyword"]: v["value"] for v in values if "." not in v["path"]}
    return {
        "patient": {k: top[k] for k in PATIENT_KEYWORDS if k in top},
        "pseudonym": document["pseudonym"],
        "date_shift_days": document["date_shift_days"],
        "values": values,
    }
