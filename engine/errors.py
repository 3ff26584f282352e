"""The project's one error vocabulary: every refusal's code, and one constructor per family.

A refusal is an `EngineError(code, message, status)`: something the client can act on. The
DRF handler (medimg.errors) renders it as `{"error": {"code", "message"}}` with its status.
Code raises through the constructors below (`raise errors.scan_not_ready()`), so a code, its
status and its usual wording are written once. `status` is a plain int (http.HTTPStatus):
the engine knows no web framework.

`ImagingError` is the family of a refused file (intake: validation, DICOM parsing, guards):
each code has a default message a clinician understands (MESSAGES).

`CryptoError` is deliberately NOT an EngineError: a blob that fails to decrypt is a
server-side integrity problem (tampering, wrong key, lost key), so it must surface as a
generic 500 and be logged, never as a message that tells a client what went wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from http import HTTPStatus


class ErrorCode(StrEnum):
    """Every error code the project sends to a client (`{"error": {"code": ...}}`)."""

    # Requests in general (medimg.errors renders DRF's own failures with these too).
    INVALID = "invalid"
    SERVER_ERROR = "server_error"
    PERMISSION_DENIED = "permission_denied"
    NOT_AUTHENTICATED = "not_authenticated"
    FORBIDDEN = "forbidden"
    # Accounts: registration, roles, two-factor login, lockout.
    USERNAME_TAKEN = "username_taken"
    INVALID_PASSWORD = "invalid_password"
    ROLE_NOT_ALLOWED = "role_not_allowed"
    INVALID_ROLE = "invalid_role"
    CANNOT_DEMOTE_SELF = "cannot_demote_self"
    CANNOT_DEACTIVATE_SELF = "cannot_deactivate_self"
    OTP_INVALID = "otp_invalid"
    OTP_REQUIRED = "otp_required"
    OTP_ENROLMENT_REQUIRED = "otp_enrolment_required"
    LOCKED_OUT = "locked_out"
    # Key exchange and sealed transfers.
    INVALID_EXCHANGE = "invalid_exchange"
    INVALID_GROUP = "invalid_group"
    INVALID_PUBLIC_KEY = "invalid_public_key"
    SEAL_REQUIRED = "seal_required"
    INVALID_SEAL_HEADER = "invalid_seal_header"
    SESSION_KEY_EXPIRED = "session_key_expired"
    INVALID_SEAL_NONCE = "invalid_seal_nonce"
    SEAL_REPLAYED = "seal_replayed"
    INVALID_SEALED_BODY = "invalid_sealed_body"
    # Patients.
    INVALID_PATIENT_ID = "invalid_patient_id"
    INVALID_NAME = "invalid_name"
    INVALID_AGE = "invalid_age"
    INVALID_NOTE = "invalid_note"
    INVALID_TEXT = "invalid_text"
    PATIENT_EXISTS = "patient_exists"
    INVALID_DEPARTMENTS = "invalid_departments"
    INVALID_CARE_TEAM = "invalid_care_team"
    # A refused file (ImagingError).
    FILE_TOO_LARGE = "file_too_large"
    EMPTY_FILE = "empty_file"
    UNSUPPORTED_FORMAT = "unsupported_format"
    CORRUPT_IMAGE = "corrupt_image"
    TOO_MANY_PIXELS = "too_many_pixels"
    NO_PIXEL_DATA = "no_pixel_data"
    DICOM_TOO_DEEP = "dicom_too_deep"
    TOO_MANY_ELEMENTS = "too_many_elements"
    DECODED_TOO_LARGE = "decoded_too_large"
    INCONSISTENT_IMAGE = "inconsistent_image"
    # Uploads and archives.
    NO_FILES = "no_files"
    INVALID_ARCHIVE = "invalid_archive"
    EMPTY_ARCHIVE = "empty_archive"
    ARCHIVE_TOO_MANY_FILES = "archive_too_many_files"
    ARCHIVE_TOO_LARGE = "archive_too_large"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    # Scans: viewing, restoring, exporting.
    SCAN_NOT_READY = "scan_not_ready"
    NEEDS_REVIEW = "needs_review"
    INVALID_FRAME = "invalid_frame"
    INVALID_WINDOW = "invalid_window"
    INVALID_FORMAT = "invalid_format"
    INVALID_SIZE = "invalid_size"
    INVALID_K = "invalid_k"
    REASON_REQUIRED = "reason_required"
    RESTORE_FAILED = "restore_failed"
    IDENTITY_UNAVAILABLE = "identity_unavailable"
    NOTHING_TO_EXPORT = "nothing_to_export"
    # Review of detected regions.
    BOX_OUT_OF_BOUNDS = "box_out_of_bounds"
    INVALID_LABEL = "invalid_label"
    REVIEW_FAILED = "review_failed"
    NO_REMOVAL_PENDING = "no_removal_pending"
    REMOVAL_ALREADY_REQUESTED = "removal_already_requested"
    REVIEW_CONFIRMED = "review_confirmed"
    LEFTOVERS_UNRESOLVED = "leftovers_unresolved"
    LEFTOVER_RESOLVED = "leftover_resolved"
    # Segmentation.
    UNKNOWN_MODEL = "unknown_model"
    MODEL_DISABLED = "model_disabled"
    INVALID_SPACING = "invalid_spacing"
    NOT_A_SERIES = "not_a_series"
    SEGMENTATION_NOT_READY = "segmentation_not_ready"
    NO_DICOM_SEG = "no_dicom_seg"
    NOT_A_VOLUME = "not_a_volume"
    # Emergency (break-glass) access (patients.emergency).
    REASON_TOO_SHORT = "reason_too_short"
    CONFIRMATION_REQUIRED = "confirmation_required"
    PATIENT_NOT_FOUND = "patient_not_found"
    ACCESS_NOT_NEEDED = "access_not_needed"
    TOO_MANY_REQUESTS = "too_many_requests"


class EngineError(Exception):
    """A refusal the client can act on: a code, a message for people, an HTTP status."""

    def __init__(
        self, code: ErrorCode | str, message: str, status: int = HTTPStatus.BAD_REQUEST
    ) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)  # ValueError for a code not in the vocabulary
        self.message = message
        self.status_code = int(status)


# --- A refused file -------------------------------------------------------------------------

# code -> the message a clinician sees when the caller gives none.
MESSAGES: dict[str, str] = {
    ErrorCode.FILE_TOO_LARGE: "The file is larger than the upload limit.",
    ErrorCode.EMPTY_FILE: "The file is empty.",
    ErrorCode.UNSUPPORTED_FORMAT: "Only JPEG, PNG and DICOM images are accepted.",
    ErrorCode.CORRUPT_IMAGE: ("The image could not be decoded: the file is damaged or incomplete."),
    ErrorCode.TOO_MANY_PIXELS: "The image has more pixels than the limit allows.",
    ErrorCode.NO_PIXEL_DATA: (
        "The DICOM file holds no image (a report, key object selection, presentation state, "
        "RT object or waveform): only images can be de-identified here."
    ),
    # Small files that would cost a great deal to parse or decode (engine.dicom.guards).
    ErrorCode.DICOM_TOO_DEEP: "The DICOM file nests sequences deeper than the limit allows.",
    ErrorCode.TOO_MANY_ELEMENTS: ("The DICOM file holds more data elements than the limit allows."),
    ErrorCode.DECODED_TOO_LARGE: "The upload decodes to more data than the limit allows.",
    ErrorCode.INCONSISTENT_IMAGE: (
        "The compressed image data does not match the size in its header."
    ),
}
_TOO_LARGE = frozenset({ErrorCode.FILE_TOO_LARGE, ErrorCode.DECODED_TOO_LARGE})


class ImagingError(EngineError):
    """A refused file. `code` is one of MESSAGES' keys; 413 for the too-large ones, else 400."""

    def __init__(self, code: ErrorCode | str, message: str | None = None) -> None:
        if code not in MESSAGES:
            raise ValueError(f"unknown imaging error code {code!r}")
        status = (
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE if code in _TOO_LARGE else HTTPStatus.BAD_REQUEST
        )
        super().__init__(code, message or MESSAGES[code], status)

    def naming(self, name: str) -> ImagingError:
        """The same refusal with the file's name in front (a member of an archive)."""
        return ImagingError(self.code, f"{name}: {self.message}")


def file_too_large(message: str | None = None) -> ImagingError:
    return ImagingError(ErrorCode.FILE_TOO_LARGE, message)


def empty_file() -> ImagingError:
    return ImagingError(ErrorCode.EMPTY_FILE)


def unsupported_format(message: str | None = None) -> ImagingError:
    return ImagingError(ErrorCode.UNSUPPORTED_FORMAT, message)


def corrupt_image(message: str | None = None) -> ImagingError:
    return ImagingError(ErrorCode.CORRUPT_IMAGE, message)


def too_many_pixels(message: str | None = None) -> ImagingError:
    return ImagingError(ErrorCode.TOO_MANY_PIXELS, message)


def no_pixel_data(message: str | None = None) -> ImagingError:
    return ImagingError(ErrorCode.NO_PIXEL_DATA, message)


def dicom_too_deep(message: str | None = None) -> ImagingError:
    return ImagingError(ErrorCode.DICOM_TOO_DEEP, message)


def too_many_elements(message: str | None = None) -> ImagingError:
    return ImagingError(ErrorCode.TOO_MANY_ELEMENTS, message)


def decoded_too_large(message: str | None = None) -> ImagingError:
    return ImagingError(ErrorCode.DECODED_TOO_LARGE, message)


def inconsistent_image(message: str | None = None) -> ImagingError:
    return ImagingError(ErrorCode.INCONSISTENT_IMAGE, message)


# --- Requests in general --------------------------------------------------------------------


def invalid(message: str) -> EngineError:
    return EngineError(ErrorCode.INVALID, message)


def permission_denied(message: str) -> EngineError:
    return EngineError(ErrorCode.PERMISSION_DENIED, message, HTTPStatus.FORBIDDEN)


# --- Accounts -------------------------------------------------------------------------------


def username_taken() -> EngineError:
    return EngineError(ErrorCode.USERNAME_TAKEN, "That username is not available.")


def role_not_allowed() -> EngineError:
    return EngineError(
        ErrorCode.ROLE_NOT_ALLOWED,
        "Administrator accounts cannot be requested; an administrator creates them.",
    )


def invalid_role(message: str) -> EngineError:
    return EngineError(ErrorCode.INVALID_ROLE, message)


def cannot_demote_self() -> EngineError:
    return EngineError(ErrorCode.CANNOT_DEMOTE_SELF, "You cannot change your own role.")


def cannot_deactivate_self() -> EngineError:
    return EngineError(ErrorCode.CANNOT_DEACTIVATE_SELF, "You cannot deactivate your own account.")


def otp_invalid() -> EngineError:
    return EngineError(ErrorCode.OTP_INVALID, "That code is not right. Try again.")


def otp_required(message: str) -> EngineError:
    return EngineError(ErrorCode.OTP_REQUIRED, message)


# --- Key exchange and sealed transfers ------------------------------------------------------


def invalid_exchange() -> EngineError:
    return EngineError(
        ErrorCode.INVALID_EXCHANGE,
        "Unknown, expired or already used exchange id. Start a new exchange.",
    )


def invalid_group(groups: Iterable[str]) -> EngineError:
    return EngineError(ErrorCode.INVALID_GROUP, f"group must be one of: {', '.join(groups)}.")


def invalid_public_key(message: str) -> EngineError:
    return EngineError(ErrorCode.INVALID_PUBLIC_KEY, message)


def seal_required(header: str, nonce_header: str) -> EngineError:
    return EngineError(
        ErrorCode.SEAL_REQUIRED,
        f"This server sends originals to API clients only sealed: run a key exchange and send "
        f"{header} and {nonce_header}.",
    )


def invalid_seal_header(header: str) -> EngineError:
    return EngineError(
        ErrorCode.INVALID_SEAL_HEADER,
        f"{header} must be a session key id (32 lower-case hex characters).",
    )


def not_authenticated(message: str) -> EngineError:
    return EngineError(ErrorCode.NOT_AUTHENTICATED, message, HTTPStatus.UNAUTHORIZED)


def session_key_expired() -> EngineError:
    return EngineError(
        ErrorCode.SESSION_KEY_EXPIRED,
        "That session key is unknown or has expired. Run a new key exchange.",
        HTTPStatus.UNAUTHORIZED,
    )


def invalid_seal_nonce(nonce_header: str) -> EngineError:
    return EngineError(
        ErrorCode.INVALID_SEAL_NONCE,
        f"A sealed request needs {nonce_header}: 32 lower-case hex characters "
        "(16 random bytes), new for every request.",
    )


def seal_replayed(nonce_header: str) -> EngineError:
    return EngineError(
        ErrorCode.SEAL_REPLAYED,
        f"That {nonce_header} was already used with this session key: a replayed request is "
        "refused. Send a new nonce.",
        HTTPStatus.CONFLICT,
    )


def invalid_sealed_body() -> EngineError:
    return EngineError(
        ErrorCode.INVALID_SEALED_BODY,
        "The sealed body does not open with this session key and context.",
    )


# --- Patients -------------------------------------------------------------------------------


def invalid_patient_id(message: str) -> EngineError:
    return EngineError(ErrorCode.INVALID_PATIENT_ID, message)


def invalid_name(message: str) -> EngineError:
    return EngineError(ErrorCode.INVALID_NAME, message)


def invalid_age(age_max: int) -> EngineError:
    return EngineError(ErrorCode.INVALID_AGE, f"The age must be a number from 0 to {age_max}.")


def note_too_long(code: ErrorCode | str, max_length: int) -> EngineError:
    """invalid_note (a patient's note) or invalid_text (a doctor's note)."""
    return EngineError(code, f"The note must be at most {max_length} characters.")


def invalid_text(message: str) -> EngineError:
    return EngineError(ErrorCode.INVALID_TEXT, message)


def patient_exists(patient_id: str) -> EngineError:
    return EngineError(
        ErrorCode.PATIENT_EXISTS,
        f"A patient with id {patient_id!r} already exists.",
        HTTPStatus.CONFLICT,
    )


def patient_exists_elsewhere() -> EngineError:
    """The id is a record the caller may not see: say only that it exists, not where."""
    return EngineError(
        ErrorCode.PATIENT_EXISTS,
        "A patient record with this id already exists, but you do not have access to it. "
        "Ask a colleague in the patient's department to add your department or you to the "
        "record, or use emergency access if the patient needs care now.",
        HTTPStatus.CONFLICT,
    )


def invalid_departments(message: str) -> EngineError:
    return EngineError(ErrorCode.INVALID_DEPARTMENTS, message)


def invalid_care_team() -> EngineError:
    return EngineError(
        ErrorCode.INVALID_CARE_TEAM, "Only active technicians and doctors can be on a care team."
    )


# --- Uploads and archives -------------------------------------------------------------------


def no_files() -> EngineError:
    return EngineError(ErrorCode.NO_FILES, "Attach at least one image file.")


def invalid_archive(message: str) -> EngineError:
    return EngineError(ErrorCode.INVALID_ARCHIVE, message)


def empty_archive() -> EngineError:
    return EngineError(ErrorCode.EMPTY_ARCHIVE, "The archive holds no image files.")


def archive_too_many_files(max_members: int) -> EngineError:
    return EngineError(
        ErrorCode.ARCHIVE_TOO_MANY_FILES, f"The archive holds more than {max_members} files."
    )


def archive_too_large(message: str) -> EngineError:
    return EngineError(ErrorCode.ARCHIVE_TOO_LARGE, message, HTTPStatus.REQUEST_ENTITY_TOO_LARGE)


def storage_unavailable() -> EngineError:
    return EngineError(
        ErrorCode.STORAGE_UNAVAILABLE,
        "The image could not be stored. Nothing was saved; please try again.",
        HTTPStatus.SERVICE_UNAVAILABLE,
    )


# --- Scans ----------------------------------------------------------------------------------


def scan_not_ready() -> EngineError:
    return EngineError(
        ErrorCode.SCAN_NOT_READY, "The scan has not finished processing.", HTTPStatus.CONFLICT
    )


def needs_review() -> EngineError:
    return EngineError(
        ErrorCode.NEEDS_REVIEW,
        "The detector asked for a review of this scan's pixels; review it first.",
        HTTPStatus.CONFLICT,
    )


def invalid_frame_number() -> EngineError:
    """A frame number as people count them (from 1) that is not a whole number from 1."""
    return EngineError(ErrorCode.INVALID_FRAME, "The frame number is a whole number from 1.")


def invalid_frame(top: int | None) -> EngineError:
    """Frame numbers run from 0 to `top`; None when the value given is not a whole number."""
    if top is None:
        return EngineError(ErrorCode.INVALID_FRAME, "frame must be a whole number.")
    return EngineError(ErrorCode.INVALID_FRAME, f"frame must be between 0 and {top}.")


def invalid_window(message: str) -> EngineError:
    return EngineError(ErrorCode.INVALID_WINDOW, message)


def invalid_format(message: str) -> EngineError:
    return EngineError(ErrorCode.INVALID_FORMAT, message)


def invalid_size(sizes: Iterable[int]) -> EngineError:
    return EngineError(ErrorCode.INVALID_SIZE, f"size must be one of {', '.join(map(str, sizes))}.")


def invalid_k(max_k: int) -> EngineError:
    return EngineError(ErrorCode.INVALID_K, f"k must be between 2 and {max_k}.")


def reason_required() -> EngineError:
    return EngineError(ErrorCode.REASON_REQUIRED, "Give a reason for restoring the original image.")


def restore_failed(message: str) -> EngineError:
    return EngineError(ErrorCode.RESTORE_FAILED, message, HTTPStatus.INTERNAL_SERVER_ERROR)


def identity_unavailable() -> EngineError:
    return EngineError(
        ErrorCode.IDENTITY_UNAVAILABLE,
        "This scan was processed before its header identity was kept.",
        HTTPStatus.CONFLICT,
    )


def nothing_to_export() -> EngineError:
    return EngineError(
        ErrorCode.NOTHING_TO_EXPORT,
        "No scan here is processed and cleared for export.",
        HTTPStatus.CONFLICT,
    )


# --- Review ---------------------------------------------------------------------------------


def box_out_of_bounds(width: int, height: int) -> EngineError:
    return EngineError(
        ErrorCode.BOX_OUT_OF_BOUNDS,
        f"The box must lie inside the {width} × {height} image, with x1 < x2 and y1 < y2.",
    )


def invalid_label() -> EngineError:
    return EngineError(
        ErrorCode.INVALID_LABEL, "label must be lower-case letters, digits or _ (at most 32)."
    )


def review_failed() -> EngineError:
    return EngineError(
        ErrorCode.REVIEW_FAILED,
        "The stored image failed its integrity check; the regions were not changed.",
        HTTPStatus.INTERNAL_SERVER_ERROR,
    )


def no_removal_pending() -> EngineError:
    return EngineError(
        ErrorCode.NO_REMOVAL_PENDING,
        "No removal of this region is waiting for a decision.",
        HTTPStatus.CONFLICT,
    )


def removal_already_requested() -> EngineError:
    return EngineError(
        ErrorCode.REMOVAL_ALREADY_REQUESTED,
        "A removal of this region is already waiting for a doctor.",
        HTTPStatus.CONFLICT,
    )


def review_confirmed() -> EngineError:
    return EngineError(
        ErrorCode.REVIEW_CONFIRMED,
        "The review of this image is confirmed: the removal request now waits for a doctor "
        "and can no longer be undone here.",
        HTTPStatus.CONFLICT,
    )


def leftovers_unresolved(count: int) -> EngineError:
    noun = "detection" if count == 1 else "detections"
    return EngineError(
        ErrorCode.LEFTOVERS_UNRESOLVED,
        f"{count} leftover {noun} of the verification pass still to resolve: add a region "
        "over each, or dismiss it with a reason, before confirming.",
        HTTPStatus.CONFLICT,
    )


def dismiss_reason_required(minimum: int) -> EngineError:
    return EngineError(
        ErrorCode.REASON_REQUIRED,
        f"Type why this detection is not identifying text (at least {minimum} characters).",
    )


def leftover_resolved() -> EngineError:
    return EngineError(
        ErrorCode.LEFTOVER_RESOLVED,
        "This leftover detection is already resolved.",
        HTTPStatus.CONFLICT,
    )


# --- Classifiers ----------------------------------------------------------------------------


def unknown_classifier(classifier_id: object) -> EngineError:
    return EngineError(
        ErrorCode.UNKNOWN_MODEL, f"No active classifier has the id {classifier_id!r}."
    )


def classifier_disabled() -> EngineError:
    return EngineError(ErrorCode.MODEL_DISABLED, "This classifier is not active.")


# --- Segmentation ---------------------------------------------------------------------------


def unknown_model(name: str) -> EngineError:
    return EngineError(ErrorCode.UNKNOWN_MODEL, f"No enabled segmentation model is named {name!r}.")


def model_disabled() -> EngineError:
    return EngineError(ErrorCode.MODEL_DISABLED, "This segmentation model is disabled.")


def invalid_spacing() -> EngineError:
    return EngineError(
        ErrorCode.INVALID_SPACING,
        "pixel_spacing_mm is [row, column] in mm, each above 0 and below 100.",
    )


def not_a_series() -> EngineError:
    return EngineError(
        ErrorCode.NOT_A_SERIES,
        "Only a DICOM image whose series has two or more completed single-frame "
        "slices of one size can be segmented as a series.",
    )


def segmentation_not_ready() -> EngineError:
    return EngineError(
        ErrorCode.SEGMENTATION_NOT_READY,
        "The segmentation has not finished.",
        HTTPStatus.CONFLICT,
    )


def no_dicom_seg() -> EngineError:
    return EngineError(
        ErrorCode.NO_DICOM_SEG,
        "This segmentation has no DICOM SEG: the input was not DICOM, or a multi-frame "
        "image without patient geometry.",
        HTTPStatus.NOT_FOUND,
    )


def not_a_volume() -> EngineError:
    return EngineError(
        ErrorCode.NOT_A_VOLUME,
        "This segmentation covers one image: the 3D view needs a series segmented as one "
        "volume, or a multi-frame image.",
        HTTPStatus.NOT_FOUND,
    )


# --- Emergency access ------------------------------------------------------------------------


def reason_too_short(minimum: int) -> EngineError:
    return EngineError(
        ErrorCode.REASON_TOO_SHORT,
        f"Type the clinical reason for emergency access (at least {minimum} characters).",
    )


def confirmation_required() -> EngineError:
    return EngineError(
        ErrorCode.CONFIRMATION_REQUIRED,
        "Confirm that you have read the warning: emergency access is recorded and reviewed.",
    )


def patient_not_found() -> EngineError:
    return EngineError(
        ErrorCode.PATIENT_NOT_FOUND,
        "No patient has this id. Check the hospital number (it must match exactly).",
        HTTPStatus.NOT_FOUND,
    )


def access_not_needed(message: str | None = None) -> EngineError:
    return EngineError(
        ErrorCode.ACCESS_NOT_NEEDED,
        message or "You can already see this patient: no emergency access is needed.",
        HTTPStatus.CONFLICT,
    )


def too_many_requests(limit: int) -> EngineError:
    return EngineError(
        ErrorCode.TOO_MANY_REQUESTS,
        f"Too many emergency access requests: at most {limit} an hour. Try again later, or "
        "ask a colleague of the patient's department.",
        HTTPStatus.TOO_MANY_REQUESTS,
    )


class CryptoError(Exception):
    """Decryption failed. One message for every cause, so it helps no attacker."""

    def __init__(self) -> None:
        super().__init__("decryption failed")
