"""Intake guards: small files that would cost a lot to parse or decode, refused first.

Pure functions on bytes (no settings, no database): the callers pass the limits.

    dicom_structure_check(data, *, max_depth=64, max_elements=1_000_000,
                          max_inflated_bytes=None)
        Walks a DICOM Part 10 file's data elements WITHOUT recursion and without pydicom's
        parser (its data dictionary only), in every encoding (explicit and implicit VR,
        little and big endian, deflated), following sequences and items of defined and
        undefined length the way pydicom will read them (the first element of each data
        set or item decides explicit or implicit VR, as in pydicom):
            dicom_too_deep      sequences nested deeper than max_depth
            too_many_elements   more than max_elements data elements in all
            decoded_too_large   a deflated data set inflating to more than
                                max_inflated_bytes (sized first in 1 MiB steps keeping
                                nothing, so a deflate bomb costs one step of memory)
        A 51 KB file nesting 600 sequences passed pydicom's reader and then took a worker
        to 24 GB re-writing it; a 1 MB deflated file inflated to 8.6 GB in one call.
        A file cut short at the top level ends the walk (the reader reports it); a value
        running past the end from inside a sequence, or a delimiter or element out of
        place, is corrupt_image, since the walk cannot vouch for what follows it.

    inflate_bounded(data, *, max_bytes, keep=True) -> bytearray   # decoded_too_large

    encapsulated_frame_sizes(pixel_data) -> list[(width, height)]
        The size each compressed frame declares in its own codestream: the JPEG 2000 SIZ
        marker (also inside a JP2 wrapper, and HTJ2K), the JPEG SOFn and the JPEG-LS SOF55
        frame headers, read from the fragments that start a codestream. The decoders
        allocate by these, not by Rows and Columns: a 1.4 KB file whose header said 64x64
        held a 20000x20000 codestream and cost 2 GB before the decoder gave up.

    check_frame_sizes(pixel_data, *, rows, columns)       # inconsistent_image

Each refusal is an ImagingError with its code (engine.errors).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR

from engine import errors
from engine.errors import ImagingError

# The 645 DICOM files of pydicom's, pydicom-data's and the shared corpus's test suites nest
# at most 6 deep; pydicom's reader gave up (recursion) on undefined-length nesting between
# 100 and 200 deep, and its writer went to 24 GB on defined-length nesting 600 deep.
MAX_SEQUENCE_DEPTH = 64
# The most in those files: 311,386 (a multi-frame brain volume with per-frame groups).
MAX_ELEMENTS = 1_000_000
# What a deflated data set may inflate to when the caller names no budget (readers of stored
# files): the default of UPLOAD_MAX_DECODED_BYTES, so what intake accepted reads again.
MAX_INFLATED_BYTES = 2 << 30

_PREAMBLE = 128
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
_TRANSFER_SYNTAX_TAG = (0x0002, 0x0010)
_IMPLICIT_VR_LE = "1.2.840.10008.1.2"
_EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
_DEFLATED = "1.2.840.10008.1.2.1.99"  # The one syntax whose data set pydicom inflates.
_INFLATE_CHUNK = 1024 * 1024

_SEQUENCE, _ITEM, _FRAGMENTS = 0, 1, 2
# Item Delimitation closes an item, Sequence Delimitation a sequence.
_CLOSES = frozenset(((0xE00D, _ITEM), (0xE0DD, _SEQUENCE)))


def _damaged() -> ImagingError:
    # Stopping the walk here would let whatever follows the damage through unchecked.
    return errors.corrupt_image("The DICOM file's structure is damaged.")


def _too_large() -> ImagingError:
    return errors.decoded_too_large("The DICOM data set inflates beyond the limit.")


def inflate_bounded(data: bytes | memoryview, *, max_bytes: int, keep: bool = True) -> bytearray:
    """Raw deflate (no zlib header, as DICOM writes it), never producing more than
    max_bytes (plus one step of 1 MiB): decoded_too_large past it, corrupt_image for a
    broken stream. With keep=False nothing is kept (an empty result): only the size is
    checked, in the memory of one step."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    size = 0
    pending: bytes | memoryview = data
    try:
        while pending or not inflater.eof:
            # max_length caps each step's output; what is left waits in unconsumed_tail.
            chunk = (
                inflater.decompress(pending, _INFLATE_CHUNK)
                if pending
                else inflater.flush(_INFLATE_CHUNK)
            )
            pending = inflater.unconsumed_tail
            size += len(chunk)
            if size > max_bytes:
                raise _too_large()
            if keep:
                out += chunk
            if not chunk and not pending:
                break  # A stream cut short: the reader reports it.
    except zlib.error as exc:
        raise errors.corrupt_image("The deflated DICOM data could not be read.") from exc
    return out  # Not copied to bytes: that would hold the data set twice.


def _file_meta(data: bytes) -> tuple[int, str] | None:
    """(offset of the data set, transfer syntax UID) from the group 0002 elements, which are
    always explicit VR little endian; None when they cannot be walked (the reader refuses)."""
    pos = _PREAMBLE + 4
    syntax = ""
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            return pos, syntax
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(data):
                return None
            (length,) = struct.unpack_from("<I", data, pos + 8)
            pos += 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            pos += 8
        if length == _UNDEFINED or pos + length > len(data):
            return None
        if (group, element) == _TRANSFER_SYNTAX_TAG:
            syntax = data[pos : pos + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos += length
    return (pos, syntax) if pos == len(data) else None


@dataclass
class _Open:
    kind: int
    end: int | None  # None: undefined length, closed by a delimitation item
    implicit: bool
    depth: int  # sequences open at and above this one


def dicom_structure_check(
    data: bytes,
    *,
    max_depth: int = MAX_SEQUENCE_DEPTH,
    max_elements: int = MAX_ELEMENTS,
    max_inflated_bytes: int | None = None,
) -> None:
    """Refuse a DICOM file nested too deep, with too many elements, or inflating too far
    (past max_inflated_bytes, MAX_INFLATED_BYTES when None)."""
    meta = _file_meta(data)
    if meta is None:
        return
    start, syntax = meta
    if syntax == _DEFLATED:
        limit = MAX_INFLATED_BYTES if max_inflated_bytes is None else max_inflated_bytes
        # Sized first, keeping nothing: a bomb is refused in the memory of one step, not
        # of the whole budget. Only then is it inflated for the walk (pydicom will too).
        inflate_bounded(memoryview(data)[start:], max_bytes=limit, keep=False)
        body = inflate_bounded(memoryview(data)[start:], max_bytes=limit)
        _walk(body, 0, implicit=False, little=True, max_depth=max_depth, max_elements=max_elements)
    else:
        _walk(
            data,
            start,
            implicit=syntax == _IMPLICIT_VR_LE,
            little=syntax != _EXPLICIT_VR_BE,
            max_depth=max_depth,
            max_elements=max_elements,
        )


def _walk(
    data: bytes | bytearray,
    pos: int,
    *,
    implicit: bool,
    little: bool,
    max_depth: int,
    max_elements: int,
) -> None:
    """One pass over the elements with an explicit stack (no recursion to exhaust)."""
    order = "<" if little else ">"
    tag_format, u32 = f"{order}HH", f"{order}I"
    item_tag = struct.pack(tag_format, 0xFFFE, 0xE000)
    n = len(data)
    # Like pydicom, believe the first element over the transfer syntax.
    implicit = _looks_implicit(data, pos, default=implicit)
    stack: list[_Open] = []
    elements = 0
    while True:
        while stack and stack[-1].end is not None and pos >= stack[-1].end:
            stack.pop()  # A defined-length sequence or item ends here.
        if pos + 8 > n:
            return  # The end, or a cut file: the reader decides which.
        top = stack[-1] if stack else None
        group, element = struct.unpack_from(tag_format, data, pos)
        if top is not None and top.kind == _FRAGMENTS:
            # Encapsulated pixel data: items of raw bytes until the sequence delimiter.
            (length,) = struct.unpack_from(u32, data, pos + 4)
            pos += 8
            if (group, element) == (0xFFFE, 0xE0DD):
                stack.pop()
            elif (group, element) != (0xFFFE, 0xE000) or length == _UNDEFINED:
                raise _damaged()
            else:
                pos += length
            continue
        if group == 0xFFFE:
            (length,) = struct.unpack_from(u32, data, pos + 4)
            pos += 8
            if element == 0xE000 and top is not None and top.kind == _SEQUENCE:
                end = None if length == _UNDEFINED else pos + length
                # pydicom reads an item of an explicit-VR sequence as implicit VR when its
                # first element looks so (PS3.5 6.2.2); never the other way round.
                item_implicit = top.implicit or _looks_implicit(data, pos, default=False)
                stack.append(_Open(_ITEM, end, item_implicit, top.depth))
            elif top is not None and (element, top.kind) in _CLOSES:
                stack.pop()
            else:
                raise _damaged()  # A delimiter out of place.
            continue
        if top is not None and top.kind == _SEQUENCE:
            raise _damaged()  # An element directly in a sequence, not in an item.
        elements += 1
        if elements > max_elements:
            raise errors.too_many_elements(
                f"The DICOM file holds more than {max_elements} data elements.",
            )
        inner_implicit = top.implicit if top is not None else implicit
        if inner_implicit:
            vr = b""
            (length,) = struct.unpack_from(u32, data, pos + 4)
            pos += 8
        else:
            vr = bytes(data[pos + 4 : pos + 6])  # Hashable when data is a bytearray.
            if vr in _LONG_VRS:
                if pos + 12 > n:
                    return
                (length,) = struct.unpack_from(u32, data, pos + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from(f"{order}H", data, pos + 6)
                pos += 8
        depth = top.depth if top is not None else 0
        # A sequence's items start in its data set's encoding; each item's first element may
        # switch an explicit one to implicit (UN sequences are implicit VR that way).
        contents_implicit = inner_implicit
        if length == _UNDEFINED:
            if vr in (b"SQ", b"UN") or (
                vr == b"" and _implicit_sequence(group, element, data[pos : pos + 4] == item_tag)
            ):
                stack.append(_open_sequence(None, contents_implicit, depth + 1, max_depth))
            else:
                stack.append(_Open(_FRAGMENTS, None, inner_implicit, depth))
            continue
        end = pos + length
        if end > n and top is not None:
            # Past the end of the file from inside a sequence: cut short, or read otherwise
            # than pydicom would; either way the walk cannot vouch for what pydicom sees.
            raise errors.corrupt_image("The DICOM file is incomplete.")
        # pydicom reads a sequence wherever the dictionary says SQ, even in implicit VR or
        # under UN; a value that starts with an item tag is treated as one here.
        starts_item = data[pos : pos + 4] == item_tag
        if (
            vr == b"SQ"
            or (vr == b"UN" and starts_item)
            or (vr == b"" and _implicit_sequence(group, element, starts_item))
        ):
            stack.append(_open_sequence(end, contents_implicit, depth + 1, max_depth))
            continue
        pos = end


def _implicit_sequence(group: int, element: int, starts_item: bool) -> bool:
    """Whether pydicom reads an implicit-VR element as a sequence: when the dictionary says
    SQ; for a tag it does not know, when the value starts with an item."""
    try:
        return bool(dictionary_VR((group << 16) | element) == "SQ")
    except KeyError:
        return starts_item


def _looks_implicit(data: bytes | bytearray, pos: int, *, default: bool) -> bool:
    """pydicom's test (filereader._is_implicit_vr): the two bytes where an explicit VR
    would be are not both capital letters."""
    if pos + 6 > len(data):
        return default
    return not (0x40 < data[pos + 4] < 0x5B and 0x40 < data[pos + 5] < 0x5B)


def _open_sequence(end: int | None, implicit: bool, depth: int, max_depth: int) -> _Open:
    if depth > max_depth:
        raise errors.dicom_too_deep(f"The DICOM file nests sequences more than {max_depth} deep.")
    return _Open(_SEQUENCE, end, implicit, depth)


# --- Compressed frames ----------------------------------------------------------------------

_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_JPEG_SOI = b"\xff\xd8"
# Start-of-frame markers: JPEG SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC); JPEG-LS
# SOF55 (F7). All give precision, height and width in the same place.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}


def _fragments(pixel_data: bytes) -> Iterator[int]:
    """Offsets of the encapsulated fragments (the Basic Offset Table item skipped)."""
    pos, first = 0, True
    n = len(pixel_data)
    while pos + 8 <= n:
        group, element, length = struct.unpack_from("<HHI", pixel_data, pos)
        if (group, element) != (0xFFFE, 0xE000) or length == _UNDEFINED:
            return
        pos += 8
        if not first:
            yield pos
        first = False
        pos += length


def _j2k_size(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """Width and height from the SIZ segment of a codestream starting at pos."""
    if pos + 4 + 2 + 2 + 16 > end:
        return None
    xsiz, ysiz, x_offset, y_offset = struct.unpack_from(">IIII", data, pos + 8)
    return xsiz - x_offset, ysiz - y_offset


def _jp2_size(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """The codestream size of a JP2 file: walk its boxes to the contiguous codestream."""
    while pos + 8 <= end:
        length, box = struct.unpack_from(">I4s", data, pos)
        header = 8
        if length == 1:
            if pos + 16 > end:
                return None
            (length,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        if box == b"jp2c":
            start = pos + header
            if data[start : start + 4] != _J2K_SOC_SIZ:
                return None
            return _j2k_size(data, start, end)
        if length == 0 or length < header:
            return None
        pos += length
    return None


def _jpeg_size(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """Width and height from the first JPEG or JPEG-LS start-of-frame header."""
    pos += 2  # SOI
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1  # Fill byte.
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _SOF_MARKERS:
            if pos + 9 > end:
                return None
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return width, height
        if marker in (0xDA, 0xD9) or length < 2:
            return None  # Scan data or the end before any frame header.
        pos += 2 + length
    return None


def encapsulated_frame_sizes(pixel_data: bytes) -> list[tuple[int, int] | None]:
    """For each fragment that starts a JPEG, JPEG-LS or JPEG 2000 codestream, the size it
    declares, or None when the fragment starts one but its frame header is not in it.
    Fragments that start no codestream (RLE, later pieces of a frame) are not listed."""
    sizes: list[tuple[int, int] | None] = []
    for start in _fragments(pixel_data):
        (length,) = struct.unpack_from("<I", pixel_data, start - 4)
        end = min(start + length, len(pixel_data))
        head = pixel_data[start : start + 12]
        if head.startswith(_J2K_SOC_SIZ):
            sizes.append(_j2k_size(pixel_data, start, end))
        elif head.startswith(_JP2_SIGNATURE):
            sizes.append(_jp2_size(pixel_data, start, end))
        elif head.startswith(_JPEG_SOI):
            sizes.append(_jpeg_size(pixel_data, start, end))
    return sizes


def check_frame_sizes(pixel_data: bytes, *, rows: int, columns: int) -> None:
    """inconsistent_image when a compressed frame declares a size other than the header's:
    the decoder would allocate for the codestream's size, whatever Rows and Columns say."""
    if not pixel_data:
        return
    for size in encapsulated_frame_sizes(pixel_data):
        if size != (columns, rows):
            found = "no readable size" if size is None else f"{size[0]}x{size[1]}"
            raise errors.inconsistent_image(
                f"A compressed frame declares {found}; the header says {columns}x{rows}.",
            )
