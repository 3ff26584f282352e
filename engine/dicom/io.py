"""DICOM: read safely, decode pixels, write redacted pixel data back.

Interface (stable):

    read_dataset(data, *, stop_before_pixels=False) -> pydicom.Dataset   # ImagingError if bad
    geometry(ds) -> Geometry(frames, rows, columns, samples)
    decode_pixels(ds) -> np.ndarray            # frames first: (F, H, W) or (F, H, W, C)
    pixels_photometric(ds) -> str              # photometric interpretation OF decode_pixels
    write_redacted_dataset(ds_bytes, redacted_pixels) -> bytes
    write_redacted_dataset_to(out, ds_bytes, redacted_pixels)   # the same, into a file
    redacted_header(ds_bytes, redacted_pixels) -> RedactedHeader | None  # up to Pixel Data
    write_pixel_data(out, redacted_pixels, implicit_vr=...)     # then the pixels, by frame

"The decoded pixels" of a DICOM (what `decode_pixels` returns, what the pipeline crops and
redacts, and what restore gives back pixel for pixel) are pydicom's default decoding of the
stored values, frames first, in the stored dtype (uint8/int8/uint16/int16/uint32/int32):
- no modality LUT, no windowing, no MONOCHROME1 inversion (those are display-only);
- PALETTE COLOR stays palette indices (the palette is applied only when rendering);
- YBR_FULL, YBR_FULL_422, YBR_ICT, YBR_RCT are converted to RGB by pydicom on decoding, so
  `pixels_photometric` says "RGB" and `write_redacted_dataset` writes PhotometricInterpretation
  RGB for them;
- compressed transfer syntaxes are decoded with pydicom's own RLE decoder and its plugins
  (pylibjpeg: JPEG, JPEG-LS, JPEG 2000; GDCM from python-gdcm; Pillow), each tried in turn;
  what every plugin refuses (12-bit JPEG Extended, which pydicom's GDCM plugin turns down)
  goes to GDCM's own reader (`decoded_by_fallback` says so).

Rendering for display and detection (modality LUT, VOI LUT and windows, MONOCHROME1,
palette, overlays) is `engine.pixels.rendering`: this module only reads, decodes and writes.

`write_redacted_dataset` keeps every element of the source dataset except the pixel data,
the elements that describe its encoding, and every element after the pixel data (vendors'
private groups there, such as GE's 7FE1 movie group, can hold the unredacted frames again;
signatures and trailing padding belong to the old file). The pixel data is written uncompressed: the
transfer syntax stays as it was for uncompressed little-endian sources and becomes Explicit VR
Little Endian for compressed or big-endian ones; or, with `syntax="rle"`, `"jpeg-ls"` or
`"jpeg2000"` (settings.DICOM_OUTPUT_SYNTAX), losslessly compressed, each frame encoded on its
own by pydicom's encoder and encapsulated as `Dataset.compress` does. Never lossy: a lossy source
(JPEG baseline, JPEG-LS near-lossless, lossy JPEG 2000, MPEG) is decoded and its redacted
pixels written without further loss, keeping Lossy Image Compression "01" (set, with its
method, when the source did not say so). PhotometricInterpretation is that of the
decoded pixels (RGB for YBR sources), PlanarConfiguration 0, BitsAllocated follows the dtype.
The 128-byte preamble is written as zeros: nothing but a DICOM reader should use it.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset
from pydicom.filereader import data_element_generator
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    HEVCM10P51,
    HEVCMP51,
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    MPEG2MPHL,
    MPEG2MPML,
    MPEG4HP41,
    MPEG4HP41BD,
    MPEG4HP42STEREO,
    MPEG4HP422D,
    MPEG4HP423D,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from engine import errors
from engine.dicom import guards as intake_guards
from engine.errors import ImagingError

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
# Other formats a reader finds at the start of a file (a PDF reader looks in the first 1 KiB,
# a browser sniffs HTML): in the preamble they make the file one of those too.
FOREIGN_PREAMBLE_MAGICS = (
    b"%PDF-",
    b"<!doctype html",
    b"<html",
    b"<script",
    b"<svg",
    b"<?xml",
)
# What may not begin the value of an element after the pixel data: another file stored in a
# private element that closes the file is a second file glued on, not vendor data.
# Only magics of four bytes or more: two (MZ, #!) turn up by chance in binary vendor data.
FOREIGN_VALUE_MAGICS = (
    *(magic for magic in EXECUTABLE_MAGICS if len(magic) >= 4),
    b"MZ\x90\x00",  # the DOS header every PE linker writes
    b"#!/",
    b"PK\x05\x06",
    *FOREIGN_PREAMBLE_MAGICS,
)
ZIP_END_RECORD = b"PK\x05\x06"
ZIP_END_SEARCH = 22 + 0xFFFF  # The end record and the longest comment a ZIP can have.


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


def looks_like_bare_dataset(data: bytes) -> bool:
    """A data set written without preamble, DICM and file meta (what some archives and old
    tools keep): it starts with a group 0002 or 0008 tag in either byte order. Never read:
    without its meta the transfer syntax would be a guess."""
    return len(data) >= 8 and data[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def preamble_is_executable(data: bytes) -> bool:
    preamble = data[:PREAMBLE_BYTES]
    return any(preamble.startswith(magic) for magic in EXECUTABLE_MAGICS)


def preamble_is_foreign(data: bytes) -> bool:
    """A program, an archive, a PDF or markup in the preamble (leading blanks ignored)."""
    preamble = data[:PREAMBLE_BYTES]
    start = preamble.lstrip(b" \t\r\n\x00").lower()
    return preamble_is_executable(data) or any(
        start.startswith(magic.lower()) for magic in FOREIGN_PREAMBLE_MAGICS
    )


def is_zip_too(data: bytes) -> bool:
    """True when a ZIP reader would open the file: readers look for the end-of-central-
    directory record from the end, so a ZIP glued after (or hidden in the last element of) a
    DICOM file is found however well the DICOM part parses. Exact: the record's comment must
    reach the last byte, which no chance byte pattern in pixel data does."""
    start = max(0, len(data) - ZIP_END_SEARCH)
    at = data.rfind(ZIP_END_RECORD, start)
    while at >= 0:
        if at + 22 <= len(data):
            (comment,) = struct.unpack("<H", data[at + 20 : at + 22])
            if at + 22 + comment == len(data):
                return True
        at = data.rfind(ZIP_END_RECORD, start, at)
    return False


def read_dataset(
    data: bytes, *, stop_before_pixels: bool = False, max_inflated_bytes: int | None = None
) -> FileDataset:
    """Parse a DICOM Part 10 file from bytes. Never guesses (no `force=True`).

    unsupported_format: no "DICM" at offset 128, no transfer syntax, or a polyglot: a
    preamble that is a program, archive, PDF or markup, a ZIP that a ZIP reader would find
    from the end, or bytes after the pixel data that are not well-formed data elements;
    corrupt_image: truncated anywhere, or anything pydicom cannot parse.

    Elements after the pixel data are legal DICOM and are accepted (see element_structure).

    Before pydicom parses anything deeply, `engine.dicom.guards` walks the elements:
    dicom_too_deep, too_many_elements, and decoded_too_large for a deflated data set that
    inflates past max_inflated_bytes (intake_guards.MAX_INFLATED_BYTES when None).
    """
    if not has_dicom_magic(data):
        raise errors.unsupported_format("This is not a DICOM Part 10 file.")
    if preamble_is_foreign(data):
        raise errors.unsupported_format(
            "The DICOM preamble holds a program or another file format: refused as a polyglot.",
        )
    if is_zip_too(data):
        raise errors.unsupported_format(
            "The DICOM file is also a ZIP archive: refused as a polyglot."
        )
    intake_guards.dicom_structure_check(data, max_inflated_bytes=max_inflated_bytes)
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
        raise errors.corrupt_image("The DICOM file could not be parsed.") from exc
    if _file_meta_end(data) is None:
        raise errors.corrupt_image("The DICOM file is incomplete.")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if not syntax:
        raise errors.unsupported_format("The DICOM file names no transfer syntax.")
    if not UID(str(syntax)).is_transfer_syntax:  # Found by the fuzzer: pydicom raises on it.
        raise errors.unsupported_format("The DICOM file names an unknown transfer syntax.")
    structure = element_structure(data, UID(str(syntax)))
    if structure == "trailing":
        raise errors.unsupported_format(
            "The DICOM file has bytes after its pixels that are not DICOM data elements: "
            "refused as a polyglot.",
        )
    if structure != "complete":
        raise errors.corrupt_image("The DICOM file is incomplete.")
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
    """ "complete", "truncated" or "trailing" (bytes after the pixel data that are no DICOM).

    pydicom reads a truncated file without complaint (a short last value, a half tag), so a
    file cut anywhere would otherwise pass as a smaller, valid-looking dataset.

    A DICOM data set is a sequence of data elements, and any element may follow Pixel Data:
    vendors' private groups (GE's 7FE1 movie group, Philips' E029, CB0D), Digital Signatures
    and Data Set Trailing Padding (FFFC,FFFC) are all legal there, and so are zero bytes
    padding the file to a block. What is refused after the pixel data is what a second file
    glued on looks like to a DICOM parser: tags that stop ascending (PS3.5 7.1: a data set's
    tags ascend, and FFFC,FFFC is the last), a VR that is no VR in an explicit-VR syntax, or
    an element whose value starts like a program, an archive, a PDF or markup.
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
    previous = -1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for element in data_element_generator(
                fp, syntax.is_implicit_VR, syntax.is_little_endian, defer_size=None
            ):
                tag = int(element.tag)
                length = getattr(element, "length", _UNDEFINED)
                value = getattr(element, "value", None)
                if length != _UNDEFINED and isinstance(value, bytes) and len(value) != length:
                    return "truncated"
                if after_pixels:
                    if tag == 0 and not data[end:].strip(b"\x00"):
                        return "complete"  # Zero bytes to the end: padding to a block.
                    if not _well_formed_after_pixels(element, previous, syntax):
                        return "trailing"
                previous = tag
                after_pixels = after_pixels or tag == _PIXEL_DATA_TAG
                end = fp.tell()
    except Exception:  # EOF inside a sequence or an item: truncated.
        return "truncated"
    if end != len(data):
        # A partial element header at the end: cut short, or junk too short to parse.
        return "trailing" if after_pixels and len(data) - end >= 8 else "truncated"
    return "complete"


def _well_formed_after_pixels(element: Any, previous: int, syntax: UID) -> bool:
    if int(element.tag) <= previous:
        return False
    if not syntax.is_implicit_VR and getattr(element, "VR", None) is None:
        return False  # pydicom found no VR where the syntax puts one: not an element.
    value = getattr(element, "value", None)
    if isinstance(value, bytes):
        head = value[:32].lstrip(b" \t\r\n").lower()
        return not any(head.startswith(magic.lower()) for magic in FOREIGN_VALUE_MAGICS)
    return True


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
        raise errors.corrupt_image("The DICOM image size is missing or invalid.") from exc
    if min(frames, rows, columns, samples) < 1:
        raise errors.corrupt_image("The DICOM image size is missing or invalid.")
    return Geometry(frames=frames, rows=rows, columns=columns, samples=samples)


def pixels_photometric(ds: Dataset) -> str:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    return "RGB" if photometric.startswith("YBR") else photometric


def decode_pixels(ds: Dataset) -> np.ndarray:
    """The decoded pixels, frames first (see the module docstring). corrupt_image on failure."""
    if "PixelData" not in ds:
        raise errors.unsupported_format("The DICOM file holds no pixel data.")
    shape = geometry(ds)
    # A single JPEG colour frame the fast way too (the same pixels, see _jpeg_ybr_frame).
    fast = _jpeg_ybr_frame(ds, 0, shape) if shape.frames == 1 else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = fast[np.newaxis] if fast is not None else ds.pixel_array
    except Exception as exc:  # Truncated or undecodable pixel data.
        decoded = _gdcm_decode(ds, shape)
        if decoded is None:
            raise errors.corrupt_image("The DICOM pixel data could not be decoded.") from exc
        array = decoded
    if shape.frames == 1 and array.ndim == (3 if shape.samples > 1 else 2):
        array = array[np.newaxis, ...]
    expected: tuple[int, ...] = (shape.frames, shape.rows, shape.columns)
    if shape.samples > 1:
        expected += (shape.samples,)
    if array.shape != expected:
        raise errors.corrupt_image("The DICOM pixel data does not match its size.")
    # Big-endian sources decode to big-endian dtypes: give every caller the native order.
    return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("="), copy=False))


def decode_frame(ds: Dataset, index: int) -> np.ndarray:
    """Frame `index` alone, as `decode_pixels(ds)[index]` gives it, decoding only that frame
    (pydicom's per-frame decoding): a cine is read without holding all its frames.
    corrupt_image when it does not decode to the frame's size."""
    from pydicom.pixels import pixel_array

    shape = geometry(ds)
    array = _jpeg_ybr_frame(ds, index, shape)
    if array is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                array = pixel_array(ds, index=index)
        except Exception as exc:  # Truncated or undecodable frame.
            raise errors.corrupt_image("The DICOM pixel data could not be decoded.") from exc
    expected: tuple[int, ...] = (shape.rows, shape.columns)
    if shape.samples > 1:
        expected += (shape.samples,)
    if array.shape != expected:
        raise errors.corrupt_image("The DICOM pixel data does not match its size.")
    return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("="), copy=False))


_JPEG_8BIT = (JPEGBaseline8Bit, UID("1.2.840.10008.1.2.4.51"))
_YBR_FULL = ("YBR_FULL", "YBR_FULL_422")


def _jpeg_ybr_frame(ds: Dataset, index: int, shape: Geometry) -> np.ndarray | None:
    """Frame `index` of an 8-bit JPEG colour DICOM stored as YBR_FULL(_422), the way most
    ultrasound cines are, decoded fast: libjpeg-turbo (Pillow) on the frame's bytes without
    colour conversion (as pydicom's Pillow plugin does), then `engine.dicom.ybr`'s exact
    table conversion. The same pixels as pydicom's default decoding (GDCM here, then
    pydicom's float32 conversion), at about a fifth of the time. None for anything else, or
    anything unusual (an Adobe colour transform, components named R, G, B, a size or mode
    that is not the header's, a decoding error): the caller then decodes as before."""
    from PIL import Image
    from pydicom.encaps import get_frame

    from engine.dicom.ybr import ybr_full_to_rgb

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if (
        syntax not in _JPEG_8BIT
        or photometric not in _YBR_FULL
        or shape.samples != 3
        or int(ds.get("BitsAllocated", 0) or 0) != 8
        or "ExtendedOffsetTable" in ds
    ):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = get_frame(ds.PixelData, index, number_of_frames=shape.frames)
            image = Image.open(io.BytesIO(data), formats=("JPEG",))
            ids = [layer[0] for layer in getattr(image, "layer", [])]
            if (
                image.mode != "RGB"
                or image.size != (shape.columns, shape.rows)
                or any(str(key).startswith("adobe") for key in image.info)
                or ids in ([82, 71, 66], ["R", "G", "B"])
            ):
                return None
            image.draft("YCbCr", image.size)
            ybr = np.asarray(image)
    except Exception:  # Let pydicom's decoders (and their errors) have it.
        return None
    if ybr.shape != (shape.rows, shape.columns, 3) or ybr.dtype != np.uint8:
        return None
    return ybr_full_to_rgb(ybr)


_GDCM_DTYPES = {"UINT8": "u1", "INT8": "i1", "UINT16": "u2", "INT16": "i2", "UINT32": "u4"}


def decoded_by_fallback(ds: Dataset) -> bool:
    """True when pydicom's own decoders refuse this file and GDCM decoded it."""
    return bool(getattr(ds, "_medimg_gdcm", False))


def _gdcm_decode(ds: Dataset, shape: Geometry) -> np.ndarray | None:
    """GDCM's own reader, for what every pydicom plugin refuses (pydicom's GDCM plugin among
    them: it turns down 12-bit JPEG Extended, which GDCM itself decodes, identically to
    dcmtk's dcmdjpeg on every such corpus file). None when GDCM is missing or fails too.

    Only syntaxes whose decoding needs no colour conversion are taken: monochrome, palette
    and RGB results, in the layout pydicom gives (frames, rows, columns, samples)."""
    try:
        import gdcm
    except ImportError:
        return None
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    if not syntax.is_compressed:
        return None  # Native pixel data pydicom cannot read is damaged, not exotic.
    import os
    import tempfile

    gdcm.Trace.WarningOff()
    gdcm.Trace.ErrorOff()
    handle, path = tempfile.mkstemp(suffix=".dcm")
    try:
        with os.fdopen(handle, "wb") as out, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcmwrite(out, ds, enforce_file_format=False)
        reader = gdcm.ImageReader()
        reader.SetFileName(path)
        if not reader.Read():
            return None
        image = reader.GetImage()
        photometric = image.GetPhotometricInterpretation().GetString().strip()
        if photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB"):
            return None
        dtype = _GDCM_DTYPES.get(image.GetPixelFormat().GetScalarTypeAsString())
        if dtype is None:
            return None
        raw = image.GetBuffer().encode("utf-8", "surrogateescape")
        array = np.frombuffer(raw, dtype=np.dtype(dtype))
        samples = shape.samples
        if array.size != shape.frames * shape.rows * shape.columns * samples:
            return None
        if samples > 1 and image.GetPlanarConfiguration() == 1:
            array = array.reshape(shape.frames, samples, shape.rows, shape.columns)
            array = np.moveaxis(array, 1, -1)
        else:
            tail = (samples,) if samples > 1 else ()
            array = array.reshape(shape.frames, shape.rows, shape.columns, *tail)
    except Exception:  # GDCM raises its own types, or a short buffer.
        return None
    finally:
        os.unlink(path)
    object.__setattr__(ds, "_medimg_gdcm", True)
    return np.array(array, copy=True)


def _is_uncompressed_little_endian(syntax: UID) -> bool:
    return bool(
        not syntax.is_compressed
        and syntax.is_little_endian
        and not syntax.is_deflated
        and syntax.is_transfer_syntax
    )


def write_redacted_dataset(
    ds_bytes: bytes, redacted_pixels: np.ndarray, *, syntax: str = "uncompressed"
) -> bytes:
    """`ds_bytes` with its pixel data replaced by `redacted_pixels` (same shape and dtype as
    `decode_pixels` of it), written uncompressed or, with `syntax` "rle", "jpeg-ls" or
    "jpeg2000", losslessly compressed: never lossy. Raises ImagingError for a bad source,
    ValueError for a mismatch or an unknown `syntax`."""
    out = io.BytesIO()
    write_redacted_dataset_to(out, ds_bytes, redacted_pixels, syntax=syntax)
    return out.getvalue()


def write_redacted_dataset_to(
    out: IO[bytes], ds_bytes: bytes, redacted_pixels: Any, *, syntax: str = "uncompressed"
) -> None:
    """`write_redacted_dataset` into `out`, the pixel data written one frame at a time,
    compressed ones encoded one frame at a time too (`redacted_pixels` needs only `shape`,
    `dtype` and frame indexing, so frames read from a file are never all in memory)."""
    header = redacted_header(ds_bytes, redacted_pixels, syntax=syntax)
    out.write(header.data)
    write_pixel_data(
        out,
        redacted_pixels,
        implicit_vr=header.implicit_vr,
        encoding=header.encoding,
        options=header.options,
    )


@dataclass(frozen=True)
class RedactedHeader:
    data: bytes  # the redacted file up to (not including) its Pixel Data element
    implicit_vr: bool  # the encoding its Pixel Data element is written in
    # A compressed output syntax: each frame is encoded with it (pydicom's encoder for the
    # syntax, with these pixel options) and encapsulated; None: uncompressed.
    encoding: UID | None = None
    options: dict[str, Any] = field(default_factory=dict)


def redacted_header(
    ds_bytes: bytes, redacted_pixels: Any, *, syntax: str = "uncompressed"
) -> RedactedHeader:
    """The file `write_redacted_dataset` writes, up to its Pixel Data element (the last one:
    every element after the pixel data is dropped). `write_pixel_data` appends the rest,
    so a header edited in between (`imaging.vault.identity` de-identifies it) gets the
    pixels without the file ever being parsed or held whole.

    A compressed `syntax` is checked on the first frame: an encoder that refuses the pixels
    (JPEG-LS above 16 bits, say) leaves the file uncompressed, lossless either way."""
    if syntax not in OUTPUT_SYNTAXES:
        raise ValueError(f"unknown output syntax {syntax!r}")
    ds, written = _redacted_dataset(ds_bytes, redacted_pixels)
    target = OUTPUT_SYNTAXES[syntax]
    if target is not None:
        options = _encoding_options(ds, target, redacted_pixels)
        if options is not None:
            ds.file_meta.TransferSyntaxUID = target
            return RedactedHeader(_little_endian_file(ds, target), False, target, options)
    return RedactedHeader(_little_endian_file(ds, written), bool(written.is_implicit_VR))


def _encoding_options(ds: Dataset, target: UID, redacted_pixels: Any) -> dict[str, Any] | None:
    """The encoder's pixel options for one frame of `ds` in `target` (lossless), or None
    when the encoder refuses the first frame; colour JPEG 2000 is set to YBR_RCT in `ds`."""
    from pydicom.pixels import get_encoder
    from pydicom.pixels.utils import as_pixel_options

    photometric = str(ds.get("PhotometricInterpretation", ""))
    if target == JPEG2000Lossless and photometric == "RGB":
        # The reversible colour transform, as PS3.3 wants for colour JPEG 2000 (the US
        # modules enumerate YBR_RCT only): readers get RGB back, exactly.
        ds.PhotometricInterpretation = "YBR_RCT"
    options = as_pixel_options(ds, number_of_frames=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            get_encoder(target).encode(_little_frame(redacted_pixels, 0), **options)
    except Exception:  # each encoder raises its own types for pixels it does not take
        ds.PhotometricInterpretation = photometric
        return None
    return options


def _little_frame(redacted_pixels: Any, index: int) -> np.ndarray:
    frame = np.asarray(redacted_pixels[index])
    return np.ascontiguousarray(frame.astype(frame.dtype.newbyteorder("<"), copy=False))


def _little_endian_file(ds: Dataset, written: UID) -> bytes:
    """The Part 10 file of `ds` in the little-endian encoding of the syntax `written`."""
    ds.preamble = b"\x00" * PREAMBLE_BYTES
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # force_encoding: a big-endian source is re-encoded as little endian here.
        dcmwrite(
            out,
            ds,
            little_endian=True,
            implicit_vr=written.is_implicit_VR,
            force_encoding=True,
        )
    return out.getvalue()


def write_pixel_data(
    out: IO[bytes],
    redacted_pixels: Any,
    *,
    implicit_vr: bool,
    encoding: UID | None = None,
    options: dict[str, Any] | None = None,
) -> None:
    """The little-endian Pixel Data element of `redacted_pixels`, written into `out` one
    frame at a time: uncompressed (OB for 8-bit values, OW otherwise; padded to even length),
    or with `encoding` (`RedactedHeader.encoding` and `.options`) each frame encoded and
    encapsulated as pydicom's `Dataset.compress` does (one fragment per frame, a Basic Offset
    Table filled in once the frames are written when `out` can seek, else empty)."""
    if encoding is not None:
        _write_encapsulated(out, redacted_pixels, encoding, options or {})
        return
    dtype = np.dtype(redacted_pixels.dtype)
    frames = int(redacted_pixels.shape[0])
    frame_bytes = int(np.prod(redacted_pixels.shape[1:], dtype=np.int64)) * dtype.itemsize
    length = frames * frame_bytes
    padded = length + (length % 2)  # DICOM values have even length.
    if padded > 0xFFFFFFFE:
        raise ValueError("the pixel data is too long for one DICOM value")
    tag = struct.pack("<HH", _PIXEL_DATA_TAG >> 16, _PIXEL_DATA_TAG & 0xFFFF)
    if implicit_vr:
        out.write(tag + struct.pack("<I", padded))
    else:
        vr = b"OB" if dtype.itemsize == 1 else b"OW"
        out.write(tag + vr + b"\x00\x00" + struct.pack("<I", padded))
    for index in range(frames):
        out.write(_little_frame(redacted_pixels, index).tobytes())
    if padded != length:
        out.write(b"\x00")


_ITEM = struct.Struct("<HHI")


def _write_encapsulated(
    out: IO[bytes], redacted_pixels: Any, encoding: UID, options: dict[str, Any]
) -> None:
    from pydicom.pixels import get_encoder

    encoder = get_encoder(encoding)
    frames = int(redacted_pixels.shape[0])
    tag = struct.pack("<HH", _PIXEL_DATA_TAG >> 16, _PIXEL_DATA_TAG & 0xFFFF)
    out.write(tag + b"OB\x00\x00" + struct.pack("<I", 0xFFFFFFFF))  # undefined length
    table_at = out.tell() if out.seekable() else None
    table = 4 * frames if table_at is not None else 0
    out.write(_ITEM.pack(0xFFFE, 0xE000, table) + b"\x00" * table)
    offsets, position = [], 0
    for index in range(frames):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = encoder.encode(_little_frame(redacted_pixels, index), **options)
        if len(data) % 2:
            data += b"\x00"  # Fragments have even length.
        offsets.append(position)
        out.write(_ITEM.pack(0xFFFE, 0xE000, len(data)))
        out.write(data)
        position += _ITEM.size + len(data)
    out.write(_ITEM.pack(0xFFFE, 0xE0DD, 0))  # sequence delimiter
    if table_at is not None:
        if offsets[-1] > 0xFFFFFFFF:
            raise ValueError("the compressed pixel data is too long for a basic offset table")
        end = out.tell()
        out.seek(table_at + _ITEM.size)
        out.write(struct.pack(f"<{frames}I", *offsets))
        out.seek(end)


def _check_pixels(ds: Dataset, redacted_pixels: Any) -> Geometry:
    shape = geometry(ds)
    expected: tuple[int, ...] = (shape.frames, shape.rows, shape.columns)
    if shape.samples > 1:
        expected += (shape.samples,)
    if tuple(redacted_pixels.shape) != expected:
        raise ValueError(f"redacted pixels are {redacted_pixels.shape}, the dataset is {expected}")
    dtype = np.dtype(redacted_pixels.dtype)
    if dtype.kind not in "ui" or dtype.itemsize > 4:
        raise ValueError(f"unsupported pixel dtype {redacted_pixels.dtype}")
    return shape


def _redacted_dataset(ds_bytes: bytes, redacted_pixels: Any) -> tuple[FileDataset, UID]:
    """The source's data set with every attribute of the redacted pixel data set (encoding,
    photometric, bits) and without its Pixel Data or anything after it; the syntax written."""
    ds = read_dataset(ds_bytes, stop_before_pixels=True)
    shape = _check_pixels(ds, redacted_pixels)
    dtype = np.dtype(redacted_pixels.dtype)

    source_syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    written = (
        source_syntax if _is_uncompressed_little_endian(source_syntax) else ExplicitVRLittleEndian
    )
    ds.file_meta.TransferSyntaxUID = written
    _keep_lossy_history(ds, source_syntax)
    if not source_syntax.is_little_endian:
        _swap_binary_values(ds)

    bits_allocated = dtype.itemsize * 8
    # Encapsulation and compressed-frame tables describe the old encoding: drop them.
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            del ds[keyword]
    # Whatever follows the pixel data goes too: vendors' groups there hold the old pixels
    # again (GE's 7FE1 movie group keeps the cine, burned-in text included), signatures sign
    # the old pixels (FFFA,FFFA), and padding (FFFC,FFFC) pads the old file. So do the
    # group 0000 "elements" that zero bytes padding a file parse as (no file may hold one).
    tags = list(ds.keys())
    for tag in tags:
        if int(tag) >= _PIXEL_DATA_TAG or tag.group == 0x0000:
            del ds[tag]
    ds.PhotometricInterpretation = pixels_photometric(ds)
    ds.BitsAllocated = bits_allocated
    if int(ds.get("BitsStored") or 0) > bits_allocated or int(ds.get("BitsStored") or 0) < 1:
        ds.BitsStored = bits_allocated
    ds.HighBit = int(ds.BitsStored) - 1
    ds.PixelRepresentation = 1 if dtype.kind == "i" else 0
    if shape.samples > 1:
        ds.PlanarConfiguration = 0
    return ds, written


# Binary VRs whose values pydicom keeps as the file's bytes: re-encoding a big-endian file as
# little endian must swap them itself, by the width of their words.
_WORD_BYTES = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _swap_binary_values(ds: Dataset) -> None:
    """Big-endian OW/OL/OF/OD/OV values (LUT data, segmented palettes, curves) turned little
    endian, at every depth; pydicom re-encodes numbers but writes these bytes as they are,
    which garbled the segmented palette of GDCM's US-ALOKA-16_big.dcm. Pixel Data is
    replaced by the caller."""

    def swap(dataset: Dataset, element: Any) -> None:
        width = _WORD_BYTES.get(str(element.VR))
        value = element.value
        if width is None or int(element.tag) == _PIXEL_DATA_TAG or not isinstance(value, bytes):
            return
        if len(value) % width:
            return  # Not whole words: nothing sensible to swap.
        words = np.frombuffer(value, dtype=f">u{width}")
        element.value = words.astype(f"<u{width}").tobytes()

    ds.walk(swap)


# Output syntaxes of redacted files: all lossless (None: uncompressed).
OUTPUT_SYNTAXES: dict[str, UID | None] = {
    "uncompressed": None,
    "rle": RLELossless,
    "jpeg-ls": JPEGLSLossless,
    "jpeg2000": JPEG2000Lossless,
}
# Transfer syntaxes whose pixels may have lost information, with the Lossy Image Compression
# Method (PS3.3 C.7.6.1.1.5.1) each implies. JPEG 2000 (.91, .93) and HTJ2K (.203) can be
# reversible too: their files are taken at their word when they say "00".
LOSSY_SYNTAXES: dict[str, str] = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
    JPEG2000: "ISO_15444_1",
    JPEG2000MC: "ISO_15444_2",
    HTJ2K: "ISO_15444_15",
    MPEG2MPML: "ISO_13818_2",
    MPEG2MPHL: "ISO_13818_2",
    **dict.fromkeys(
        (MPEG4HP41, MPEG4HP41BD, MPEG4HP422D, MPEG4HP423D, MPEG4HP42STEREO), "ISO_14496_10"
    ),
    HEVCMP51: "ISO_23008_2",
    HEVCM10P51: "ISO_23008_2",
}
MAYBE_REVERSIBLE = frozenset({JPEG2000, JPEG2000MC, HTJ2K})


def _keep_lossy_history(ds: Dataset, source_syntax: UID) -> None:
    """A lossy source stays marked lossy once its pixels are written without loss: Lossy
    Image Compression "01" and the method, which PS3.3 says never go back to "00"."""
    method = LOSSY_SYNTAXES.get(str(source_syntax))
    if method is None:
        return
    said = str(ds.get("LossyImageCompression", "") or "").strip()
    if said == "01" or (said == "00" and source_syntax in MAYBE_REVERSIBLE):
        return
    ds.LossyImageCompression = "01"
    methods = [str(m) for m in (ds.get("LossyImageCompressionMethod") or [])]
    if isinstance(ds.get("LossyImageCompressionMethod"), str):
        methods = [str(ds.LossyImageCompressionMethod)]
    if method not in methods:
        ds.LossyImageCompressionMethod = [*methods, method] if methods else method
