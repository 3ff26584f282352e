"""Imaging refusals with codes, and the one crypto failure.

`ImagingError` is what validation (and the services above it) raise for a file the client
should fix; the DRF handler renders it as `{"error": {"code", "message"}}`. Its status is
400, except `file_too_large` and `decoded_too_large`, which are 413.

`CryptoError` is deliberately NOT an ApplicationError: a blob that fails to decrypt is a
server-side integrity problem (tampering, wrong key, lost key), so it must surface as a
generic 500 and be logged, never as a message that tells a client what went wrong.
"""

from __future__ import annotations

from rest_framework import status

from medimg.errors import ApplicationError

# code -> the message a clinician sees when the caller gives none.
MESSAGES: dict[str, str] = {
    "file_too_large": "The file is larger than the upload limit.",
    "empty_file": "The file is empty.",
    "unsupported_format": "Only JPEG, PNG and DICOM images are accepted.",
    "corrupt_image": "The image could not be decoded: the file is damaged or incomplete.",
    "too_many_pixels": "The image has more pixels than the limit allows.",
    "no_pixel_data": (
        "The DICOM file holds no image (a report, key object selection, presentation state, "
        "RT object or waveform): only images can be de-identified here."
    ),
    # Small files that would cost a great deal to parse or decode (engine.intake.guards).
    "dicom_too_deep": "The DICOM file nests sequences deeper than the limit allows.",
    "too_many_elements": "The DICOM file holds more data elements than the limit allows.",
    "decoded_too_large": "The upload decodes to more data than the limit allows.",
    "inconsistent_image": "The compressed image data does not match the size in its header.",
}


class ImagingError(ApplicationError):
    """A refused image. `code` is one of MESSAGES' keys."""

    def __init__(self, code: str, message: str | None = None) -> None:
        if code not in MESSAGES:
            raise ValueError(f"unknown imaging error code {code!r}")
        status_code = (
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
            if code in ("file_too_large", "decoded_too_large")
            else status.HTTP_400_BAD_REQUEST
        )
        super().__init__(code, message or MESSAGES[code], status_code=status_code)


class CryptoError(Exception):
    """Decryption failed. One message for every cause, so it helps no attacker."""

    def __init__(self) -> None:
        super().__init__("decryption failed")
