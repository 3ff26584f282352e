"""DICOM: read safely, decode pixels, write redacted pixel data back.

Interface (stable):

    read_dataset(data, *, stop_before_pixels=False) -> pydicom.Dataset   # ImagingError if bad
    geometry(ds) -> Geometry(frames, rows, columns, samples)
    decode_pixels(ds) -> np.ndarray            # frames first: (F, H, W) or (F, H, W, C)
    pixels_photometric(ds) -> str              # photometric interpretation OF decode_pixels
    write_redacted_dataset(ds_bytes, redacted_pixels) -> bytes

"The decoded pixels" of a DICOM (what `decode_pixels` returns, what the pipeline crops and
redacts, and what restore gives back pixel for pixel) are pydicom's default decoding of the
stored values, frames first, in the stored dtype (uint8/int8/uint16/int16/uint32/int32):
- no modality LUT, no windowing, no MONOCHROME1 inversion (those are display-only);
- PALETTE COLOR stays palette indices (the palette is applied only when rendering);
- YBR_FULL, YBR_FULL_422, YBR_ICT, YBR_RCT are converted to RGB by pydicom on decoding, so
  `pixels_photometric` says "RGB" and `write_redacted_dataset` writes PhotometricInterpretation
  RGB for them;
- compressed transfer syntaxes are decoded with pydicom's own RLE decoder and the pylibjpeg
  plugins (JPEG, JPEG-LS, JPEG 2000).

Rendering for display and detection (modality LUT, VOI LUT and windows, MONOCHROME1,
palette, overlays) is `imaging.rendering`: this module only reads, decodes and writes.

`write_redacted_dataset` keeps every element of the source dataset except the pixel data
and the elements that describe its encoding. The pixel data is written uncompressed: the
transfer syntax stays as it was for uncompressed little-endian sources and becomes Explicit VR
Little Endian for compressed or big-endian ones. PhotometricInterpretation is that of the
decoded pixels (RGB for YBR sources), PlanarConfiguration 0, BitsAllocated follows the dtype.
The 128-byte preamble is written as zeros: nothing but a DICOM reader should use it.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset
from pydicom.filereader import data_element_generator
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, ExplicitVRLittleEndian

from imaging.errors import ImagingError

PREAMBLE_BYTES = 128
DICOM_MAGIC = b"DICM"

# Starts of executables and archives: a preamble that is one makes the file a polyglot
# (a DICOM that is also a runnable program or an archive), which no scanner writes.
EXECUTABLE_MAGICS = (
    b"MZ",  # Windows PE / DOS
    b"\x7fELF",  # Linux and most Unix
    b"\xfe\xed\xfa\xce",  # Mach-O 32-bit
    b"\xfe\xed\xfa\xcf",  # Mach-O 64-bit
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",  # Mach-O universal / Java class
    b"#!",  # script with an interpreter line
    b"PK\x03\x04",  # ZIP (jar, docx, ...)
)


@dataclass(frozen=True)
class Geometry:
    frames: int
    rows: int
    columns: int
    samples: int

    @property
    def pixel_count(self) -> int:
        return self.frames * self.rows * self.columns


def has_dicom_magic(data: bytes) -> bool:
    return (
        len(data) >= PREAMBLE_BYTES + 4 and data[PREAMBLE_BYTES : PREAMBLE_BYTES + 4] == DICOM_MAGIC
    )


def preamble_is_executable(data: bytes) -> bool:
    preamble = data[:PREAMBLE_BYTES]
    return any(preamble.startswith(magic) for magic in EXECUTABLE_MAGICS)


def read_dataset(data: bytes, *, stop_before_pixels: bool = False) -> FileDataset:
    """Parse a DICOM Part 10 file from bytes. Never guesses (no `force=True`).

    unsupported_format: no "DICM" at offset 128, an executable/archive preamble, no transfer
    syntax, or data after the pixel data other than trailing padding (a polyglot);
    corrupt_image: truncated anywhere, or anything pydicom cannot parse.
    """
    if not has_dicom_magic(data):
        raise ImagingError("unsupported_format", "This is not a DICOM Part 10 file.")
    if preamble_is_executable(data):
        raise ImagingError(
            "unsupported_format", "The DICOM preamble holds a program: refused as a polyglot."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels)
            # Parse every element now, so a damaged header fails here and not later.
            for _element in ds.iterall():
                pass
    except ImagingError:
        raise
    except Exception as exc:  # pydicom raises many types for a damaged file.
        raise ImagingError("corrupt_image", "The DICOM file could not be parsed.") from exc
    if _file_meta_end(data) is None:
        raise ImagingError("corrupt_image", "The DICOM file is incomplete.")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if not syntax:
        raise ImagingError("unsupported_format", "The DICOM file names no transfer syntax.")
    if not UID(str(syntax)).is_transfer_syntax:  # Found by the fuzzer: pydicom raises on it.
        raise ImagingError("unsupported_format", "The DICOM file names an unknown transfer syntax.")
    structure = element_structure(data, UID(str(syntax)))
    if structure == "trailing":
        raise ImagingError(
            "unsupported_format", "The DICOM file has data after its pixels: refused as a polyglot."
        )
    if structure != "complete":
        raise ImagingError("corrupt_image", "The DICOM file is incomplete.")
    return ds


_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}


def _file_meta_end(data: bytes) -> int | None:
    """Offset where the dataset starts: after the group 0002 elements (explicit VR LE)."""
    pos = PREAMBLE_BYTES + 4
    while pos + 8 <= len(data):
        group, _element = struct.unpack("<HH", data[pos : pos + 4])
        if group != 0x0002:
            return pos
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(data):
                return None
            (length,) = struct.unpack("<I", data[pos + 8 : pos + 12])
            pos += 12
        else:
            (length,) = struct.unpack("<H", data[pos + 6 : pos + 8])
            pos += 8
        if length == _UNDEFINED or pos + length > len(data):
            return None
        pos += length
    return pos if pos == len(data) else None


_PIXEL_DATA_TAG = 0x7FE00010
_TRAILING_PADDING_TAG = 0xFFFCFFFC


def element_structure(data: bytes, syntax: UID) -> str:
    """ "complete", "truncated" or "trailing" (something after the pixel data).

    pydicom reads a truncated file without complaint (a short last value, a half tag), so a
    file cut anywhere would otherwise pass as a smaller, valid-looking dataset. After the
    pixel data only Data Set Trailing Padding (FFFC,FFFC) may follow; anything else there is
    how a second file (an archive, a script) gets hidden behind an image.
    """
    start = _file_meta_end(data)
    if start is None:
        return "truncated"
    if syntax.is_deflated:
        return "complete"  # The zlib stream is checked when pydicom inflates it.
    fp = io.BytesIO(data)
    fp.seek(start)
    end = start
    after_pixels = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for element in data_element_generator(
                fp, syntax.is_implicit_VR, syntax.is_little_endian, defer_size=None
            ):
                length = getattr(element, "length", _UNDEFINED)
                value = getattr(element, "value", None)
                if length != _UNDEFINED and isinstance(value, bytes) and len(value) != length:
                    return "truncated"
                if after_pixels and int(element.tag) != _TRAILING_PADDING_TAG:
                    return "trailing"
                after_pixels = after_pixels or int(element.tag) == _PIXEL_DATA_TAG
                end = fp.tell()
    except Exception:  # EOF inside a sequence or an item: truncated.
        return "truncated"
    if end != len(data):
        # A partial element header at the end: cut short, or junk too short to parse.
        return "trailing" if after_pixels and len(data) - end >= 8 else "truncated"
    return "complete"


def is_complete(data: bytes, syntax: UID) -> bool:
    return element_structure(data, syntax) == "complete"


def geometry(ds: Dataset) -> Geometry:
    """Frames, rows, columns and samples from the header (no pixel decoding)."""
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        rows = int(ds.Rows)
        columns = int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel") or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImagingError("corrupt_image", "The DICOM image size is missing or invalid.") from exc
    if min(frames, rows, columns, samples) < 1:
        raise ImagingError("corrupt_image", "The DICOM image size is missing or invalid.")
    return Geometry(frames=frames, rows=rows, columns=columns, samples=samples)


def pixels_photometric(ds: Dataset) -> str:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    return "RGB" if photometric.startswith("YBR") else photometric


def decode_pixels(ds: Dataset) -> np.ndarray:
    """The decoded pixels, frames first (see the module docstring). corrupt_image on failure."""
    if "PixelData" not in ds:
        raise ImagingError("unsupported_format", "The DICOM file holds no pixel data.")
    shape = geometry(ds)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = ds.pixel_array
    except Exception as exc:  # Truncated or undecodable pixel data.
        raise ImagingError("corrupt_image", "The DICOM pixel data could not be decoded.") from exc
    if shape.frames == 1:
        array = array[np.newaxis, ...]
    expected: tuple[int, ...] = (shape.frames, shape.rows, shape.columns)
    if shape.samples > 1:
        expected += (shape.samples,)
    if array.shape != expected:
        raise ImagingError("corrupt_image", "The DICOM pixel data does not match its size.")
    # Big-endian sources decode to big-endian dtypes: give every caller the native order.
    return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("="), copy=False))


def _is_uncompressed_little_endian(syntax: UID) -> bool:
    return bool(
        not syntax.is_compressed
        and syntax.is_little_endian
        and not syntax.is_deflated
        and syntax.is_transfer_syntax
    )


def write_redacted_dataset(ds_bytes: bytes, redacted_pixels: np.ndarray) -> bytes:
    """`ds_bytes` with its pixel data replaced by `redacted_pixels` (same shape and dtype as
    `decode_pixels` of it). Raises ImagingError for a bad source, ValueError for a mismatch."""
    ds = read_dataset(ds_bytes)
    shape = geometry(ds)
    expected: tuple[int, ...] = (shape.frames, shape.rows, shape.columns)
    if shape.samples > 1:
        expected += (shape.samples,)
    if tuple(redacted_pixels.shape) != expected:
        raise ValueError(f"redacted pixels are {redacted_pixels.shape}, the dataset is {expected}")
    if redacted_pixels.dtype.kind not in "ui" or redacted_pixels.dtype.itemsize > 4:
        raise ValueError(f"unsupported pixel dtype {redacted_pixels.dtype}")

    source_syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    syntax = (
        source_syntax if _is_uncompressed_little_endian(source_syntax) else ExplicitVRLittleEndian
    )
    ds.file_meta.TransferSyntaxUID = syntax

    little = redacted_pixels.astype(redacted_pixels.dtype.newbyteorder("<"), copy=False)
    data = np.ascontiguousarray(little).tobytes()
    if len(data) % 2:
        data += b"\x00"  # DICOM values have even length.
    bits_allocated = redacted_pixels.dtype.itemsize * 8
    # Encapsulation and compressed-frame tables describe the old encoding: drop them.
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            del ds[keyword]
    ds.PixelData = data
    ds["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"
    ds["PixelData"].is_undefined_length = False
    ds.PhotometricInterpretation = pixels_photometric(ds)
    ds.BitsAllocated = bits_allocated
    if int(ds.get("BitsStored") or 0) > bits_allocated or int(ds.get("BitsStored") or 0) < 1:
        ds.BitsStored = bits_allocated
    ds.HighBit = int(ds.BitsStored) - 1
    ds.PixelRepresentation = 1 if redacted_pixels.dtype.kind == "i" else 0
    if shape.samples > 1:
        ds.PlanarConfiguration = 0

    ds.preamble = b"\x00" * PREAMBLE_BYTES
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # force_encoding: a big-endian source is re-encoded as little endian here.
        dcmwrite(
            out,
            ds,
            little_endian=True,
            implicit_vr=syntax.is_implicit_VR,
            force_encoding=True,
        )
    return out.getvalue()
