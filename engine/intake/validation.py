"""Upload validation: type by content, a full decode with an allow-list, limits, clean bytes.

Interface (stable):

    validate_upload(*, name, data, max_bytes, max_pixels, max_dicom_bytes=None,
                    max_decoded_bytes=None) -> DecodedImage                # or ImagingError
    sniff_kind(data) -> "jpeg" | "png" | "dicom" | None

`name` is never used to decide the type (a valid PNG called scan.dcm is a PNG); it is accepted
so callers can pass what they have, and is not echoed in messages.

Checks, in order, each with its ImagingError code:
    empty_file          zero bytes
    file_too_large      JPEG/PNG over max_bytes, DICOM over max_dicom_bytes (max_bytes when
                        None), anything else over the larger of the two (HTTP 413); the
                        message names the limit and the kind it is for
    unsupported_format  magic bytes are not JPEG (FF D8 FF), PNG (89 PNG ...) or DICOM Part 10
                        ("DICM" at offset 128); also every polyglot, i.e. a valid image with
                        something else hidden in it: data after the PNG IEND chunk, data after
                        the JPEG EOI marker beyond 1 KiB of zero/0xFF/whitespace padding, a DICOM
                        preamble that starts like a program, archive, PDF or markup, a ZIP
                        readable from the end, bytes after the pixel data that are not
                        well-formed data elements (`engine.dicom.io.element_structure`: any
                        element is legal there, vendors' private groups and padding included);
                        also animated PNG.
    no_pixel_data       a DICOM without Pixel Data: structured reports, key objects,
                        presentation states, RT objects, waveforms, encapsulated documents,
                        and image objects stored without their pixels. Refused: only images
                        are de-identified here.
    too_many_pixels     width x height of one frame (from the header, BEFORE the full decode)
                        over max_pixels: the limit is per frame, so a long cine of ordinary
                        frames passes; Pillow's decompression-bomb warning and error count as
                        this too.
    decoded_too_large   a DICOM whose frames x rows x columns x samples x bytes per sample,
                        from the header, is over max_decoded_bytes (HTTP 413): what protects
                        memory from a long cine once the pixel limit is per frame.
    corrupt_image       anything that does not fully decode: truncated PNG/JPEG/DICOM, bad
                        chunk CRCs, bad compressed data.
    dicom_too_deep, too_many_elements, decoded_too_large (a deflated data set inflating past
                        max_decoded_bytes), inconsistent_image (a compressed frame whose own
                        JPEG/JPEG-LS/JPEG 2000 header disagrees with Rows and Columns): the
                        checks of `engine.dicom.guards`, before pydicom parses deeply and
                        before any frame is decoded.

DecodedImage, what the pipeline works on:
    kind         "jpeg" | "png" | "dicom"
    pixels       the decoded pixels, frames first: (F, H, W) grey/palette or (F, H, W, C).
                 JPEG/PNG: F = 1; dtype uint8, or uint16 for 16-bit PNG. Pillow's decoding
                 with these conversions: EXIF orientation applied (the image as a viewer shows
                 it, since the EXIF that said how to turn it is stripped); 1-bit -> 8-bit grey
                 (0/255); palette PNG -> RGB, or RGBA when it has transparency; grey+alpha ->
                 RGBA; CMYK/YCbCr JPEG -> RGB (Pillow's conversion); 16-bit RGB(A) PNG is
                 decoded by OpenCV to keep all 16 bits (Pillow would give 8).
                 DICOM: `engine.dicom.io.decode_pixels` (stored values in their dtype, YBR
                 converted to RGB, palette indices kept, no LUTs).
                 Restore gives back exactly this array.
    photometric  of `pixels`: "MONOCHROME2" | "RGB" | "RGBA" for JPEG/PNG; for DICOM
                 `engine.dicom.io.pixels_photometric` (e.g. "MONOCHROME1", "PALETTE COLOR", "RGB").
    display      (F, H, W, 3) uint8 RGB renderings for the detector and the grid (DICOM via
                 engine.pixels.rendering.render_frames_uint8; 16-bit grey PNG stretched by
                 percentiles,
                 16-bit colour scaled to 8 bits; alpha dropped, so text hidden under
                 transparency is still seen by the detector).
    notes        what the decoding or rendering had to work around (an empty Modality LUT
                 item or rescale ignored, a fallback decoder used): the scan's processing notes.
    clean_bytes  what is stored (encrypted) as the original. JPEG/PNG: a lossless PNG of
                 `pixels[0]` with no metadata at all (no EXIF, text chunks, ICC, time); decoding
                 it gives `pixels[0]` exactly. DICOM: the bytes as uploaded (its header is
                 de-identified by a later step).
    frames, height, width, channels (properties)

A multi-frame DICOM's `pixels` and `display` are `FrameStack`s: frames decoded (and rendered)
one at a time when asked for (`pixels[i]`, iteration), so the pipeline's memory grows with
the frame size, not the frame count; `np.asarray` still gives the whole array to callers that
need it. Validation decodes and renders every frame once, keeping none.

Restoring a JPEG/PNG upload "pixel for pixel" means giving back `pixels` (which is what the
stored clean PNG decodes to); `engine.pixels.restoration.encode_image(pixels[0], "png")` encodes it
losslessly. For DICOM the stored original is the uploaded file itself.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import cv2
import numpy as np
from PIL import Image, ImageOps

from engine import errors
from engine.dicom import guards as intake_guards
from engine.dicom import io as dicom
from engine.errors import ImagingError
from engine.pixels import rendering
from engine.pixels.restoration import encode_image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# Some encoders pad a JPEG after EOI; a ZIP or script hidden there is never just this.
JPEG_PADDING_LIMIT = 1024
_PADDING_BYTES = frozenset(b"\x00\xff\r\n\t ")


class FrameStack:
    """A read-only (F, H, W[, C]) stack whose frames are made on demand by `read(index)`.

    Indexing with an int, `len` and iteration read one frame at a time; the last frame read
    is kept, so asking for the pixels and then the rendering of a frame decodes it once.
    Anything else (slices, `np.asarray`, `copy`) builds the whole array."""

    def __init__(
        self,
        read: Callable[[int], np.ndarray],
        count: int,
        frame_shape: tuple[int, ...],
        dtype: Any,
    ) -> None:
        self._read = read
        self._count = int(count)
        self._frame_shape = tuple(int(v) for v in frame_shape)
        self.dtype = np.dtype(dtype)
        self._last: tuple[int, np.ndarray] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._count, *self._frame_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self._frame_shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """What the whole stack decodes to (none of it is held)."""
        return cast("int", self.size * self.dtype.itemsize)

    def __len__(self) -> int:
        return self._count

    def remember(self, index: int, frame: np.ndarray) -> None:
        """Hold `frame` as frame `index`, read already (the next read of it is free)."""
        self._last = (int(index), frame)

    def frame(self, index: int) -> np.ndarray:
        if not -self._count <= index < self._count:
            raise IndexError(index)
        index %= self._count
        if self._last is None or self._last[0] != index:
            self._last = (index, self._read(index))
        return self._last[1]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.frame(int(key))
        if isinstance(key, tuple) and key and isinstance(key[0], (int, np.integer)):
            return self.frame(int(key[0]))[key[1:]]
        return cast("np.ndarray", np.asarray(self)[key])

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(self._count):
            yield self.frame(index)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.empty(self.shape, dtype=self.dtype)
        for index in range(self._count):
            out[index] = self.frame(index)
        return out if dtype is None else out.astype(dtype, copy=False)

    def copy(self) -> np.ndarray:
        return np.asarray(self)


@dataclass(frozen=True)
class DecodedImage:
    kind: str
    pixels: np.ndarray
    photometric: str
    display: np.ndarray
    clean_bytes: bytes
    notes: tuple[str, ...] = ()

    @property
    def frames(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[2])

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[3]) if self.pixels.ndim == 4 else 1


def sniff_kind(data: bytes) -> str | None:
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if dicom.has_dicom_magic(data):
        return "dicom"
    return None


def size_text(size: int) -> str:
    """A byte count as people read limits: 20 MB, 1 GB (binary multiples, as the settings)."""
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.3g} {unit}"
    return f"{size} bytes"


def limit_for(kind: str | None, *, max_bytes: int, max_dicom_bytes: int | None) -> int:
    """The size limit for a kind of file: DICOM has its own, JPEG/PNG the general one."""
    dicom_limit = max_bytes if max_dicom_bytes is None else max_dicom_bytes
    if kind == "dicom":
        return dicom_limit
    if kind in ("jpeg", "png"):
        return max_bytes
    return max(max_bytes, dicom_limit)


def too_large(size: int, limit: int, kind: str | None) -> ImagingError:
    label = {"dicom": "DICOM", "jpeg": "JPEG/PNG", "png": "JPEG/PNG"}.get(kind or "", "uploads")
    return errors.file_too_large(
        f"The file is {size_text(size)}, over the {size_text(limit)} limit for {label}.",
    )


def validate_upload(
    *,
    name: str,
    data: bytes,
    max_bytes: int,
    max_pixels: int,
    max_dicom_bytes: int | None = None,
    max_decoded_bytes: int | None = None,
    check_frames: bool = True,
) -> DecodedImage:
    """Decode and check an upload; ImagingError with a code when it is refused.

    max_bytes is the JPEG/PNG limit and max_dicom_bytes DICOM's (max_bytes when None);
    max_pixels applies to each frame; max_decoded_bytes (None: no limit) to a DICOM's
    decoded pixels in all.

    `check_frames=False` (the worker, which reads every frame anyway): a multi-frame DICOM
    that decodes frame by frame has its header checks and its first frame decoded and
    rendered now, and every later frame checked the same way as it is read (the same
    corrupt_image for a frame that does not decode, render, or match the first frame's
    shape and dtype), so each frame is decoded once instead of twice. The caller must read
    every frame before relying on the image, and, since the whole-array decoders are not
    tried then, run validation again with `check_frames=True` when a frame is refused."""
    del name  # The type comes from the content only.
    if len(data) == 0:
        raise errors.empty_file()
    kind = sniff_kind(data)
    limit = limit_for(kind, max_bytes=max_bytes, max_dicom_bytes=max_dicom_bytes)
    if len(data) > limit:
        raise too_large(len(data), limit, kind)
    if kind == "png":
        return _validate_png(data, max_pixels)
    if kind == "jpeg":
        return _validate_jpeg(data, max_pixels)
    if kind == "dicom":
        return _validate_dicom(data, max_pixels, max_decoded_bytes, check_frames=check_frames)
    if dicom.looks_like_bare_dataset(data):
        raise errors.unsupported_format(
            "This is a DICOM data set without the Part 10 header (preamble, DICM and file "
            "meta information): export it from the archive as a DICOM file.",
        )
    raise errors.unsupported_format()


def _too_many_pixels(width: int, height: int, max_pixels: int) -> ImagingError:
    return errors.too_many_pixels(
        f"The image is {width} x {height} ({width * height:,} pixels a frame), over the "
        f"limit of {max_pixels:,} pixels a frame.",
    )


# --- PNG ------------------------------------------------------------------------------------


def _png_structure(data: bytes) -> tuple[int, int, bool]:
    """(width, height, animated) from walking the chunks; refuses data after IEND."""
    pos = len(PNG_MAGIC)
    width = height = 0
    animated = False
    first = True
    while True:
        if pos + 8 > len(data):
            raise errors.corrupt_image("The PNG file is incomplete.")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunk_type = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise errors.corrupt_image("The PNG file is incomplete.")
        if first:
            if chunk_type != b"IHDR" or length != 13:
                raise errors.corrupt_image("The PNG file has no valid header.")
            width, height = struct.unpack(">II", data[pos + 8 : pos + 16])
            first = False
        if chunk_type == b"acTL":
            animated = True
        pos = end
        if chunk_type == b"IEND":
            break
    if pos != len(data):
        raise errors.unsupported_format(
            "The PNG file has data after its end: refused as a polyglot."
        )
    return width, height, animated


def _validate_png(data: bytes, max_pixels: int) -> DecodedImage:
    width, height, animated = _png_structure(data)
    if width == 0 or height == 0:
        raise errors.corrupt_image("The PNG file has no pixels.")
    if width * height > max_pixels:
        raise _too_many_pixels(width, height, max_pixels)
    if animated:
        raise errors.unsupported_format("Animated PNG is not accepted.")
    image = _pillow_decode(data, "PNG", max_pixels)
    bit_depth, colour_type = data[24], data[25]
    if bit_depth == 16 and colour_type in (2, 6):
        return _from_16_bit_colour_png(data, image)
    return _from_pillow("png", image)


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """What Pillow's exif_transpose does, on an array: the 8 EXIF orientations."""
    swapped = np.swapaxes(array, 0, 1)
    turned = {
        2: array[:, ::-1],
        3: array[::-1, ::-1],
        4: array[::-1],
        5: swapped,
        6: np.rot90(array, k=-1),
        7: swapped[::-1, ::-1],
        8: np.rot90(array, k=1),
    }.get(orientation, array)
    return np.ascontiguousarray(turned)


def _from_16_bit_colour_png(data: bytes, image: Image.Image) -> DecodedImage:
    """Pillow holds colour in 8 bits only: OpenCV keeps a 16-bit RGB(A) PNG's full values.

    Pillow has already decoded (and so checked) the whole file; its EXIF orientation, if
    any, is applied the same way as for every other upload.
    """
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.dtype != np.uint16 or decoded.ndim != 3:
        raise errors.corrupt_image()
    if decoded.shape[2] == 4:
        frame, photometric = cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA), "RGBA"
    else:
        frame, photometric = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), "RGB"
    frame = orient(frame, int(image.getexif().get(0x0112, 1)))
    return DecodedImage(
        kind="png",
        pixels=frame[np.newaxis, ...],
        photometric=photometric,
        display=np.rint(frame[np.newaxis, ..., :3] / 257.0).astype(np.uint8),
        clean_bytes=encode_image(frame, "png"),
    )


# --- JPEG -----------------------------------------------------------------------------------


def _jpeg_end(data: bytes) -> int | None:
    """Offset just after the EOI marker, following the marker structure; None if truncated."""
    n = len(data)
    pos = 2  # After SOI.
    while pos < n:
        if data[pos] != 0xFF:
            return None  # Garbage where a marker must be: treat as damaged.
        while pos < n and data[pos] == 0xFF:
            pos += 1  # Fill bytes.
        if pos >= n:
            return None
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            return pos
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue  # Markers without a length.
        if pos + 2 > n:
            return None
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2:
            return None
        pos += length
        if pos > n:
            return None
        if marker == 0xDA:
            # Entropy-coded data: runs until a 0xFF that is not stuffing (00) or a restart.
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= n:
                    return None
                following = data[pos + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    pos += 1 if following == 0xFF else 2
                    continue
                break
    return None


def _validate_jpeg(data: bytes, max_pixels: int) -> DecodedImage:
    end = _jpeg_end(data)
    if end is None:
        raise errors.corrupt_image("The JPEG file is incomplete or damaged.")
    trailer = data[end:]
    if len(trailer) > JPEG_PADDING_LIMIT or not set(trailer) <= _PADDING_BYTES:
        raise errors.unsupported_format(
            "The JPEG file has data after its end: refused as a polyglot."
        )
    image = _pillow_decode(data, "JPEG", max_pixels)
    return _from_pillow("jpeg", image)


# --- Pillow ---------------------------------------------------------------------------------


def _pillow_decode(data: bytes, fmt: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = image.size
            # Dimensions from the header, before any pixel is decoded.
            if width * height > max_pixels:
                raise _too_many_pixels(width, height, max_pixels)
            if getattr(image, "n_frames", 1) != 1:
                raise errors.unsupported_format("Multi-image files are not accepted.")
            image.load()
            image = ImageOps.exif_transpose(image)
    except ImagingError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise errors.too_many_pixels() from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, zlib errors...
        raise errors.corrupt_image() from exc
    return image


def _pillow_pixels(image: Image.Image) -> tuple[np.ndarray, str]:
    mode = image.mode
    if mode == "1":
        image, mode = image.convert("L"), "L"
    elif mode == "P":
        target = "RGBA" if "transparency" in image.info else "RGB"
        image, mode = image.convert(target), target
    elif mode in {"PA", "LA"}:
        image, mode = image.convert("RGBA"), "RGBA"
    elif mode in {"CMYK", "YCbCr", "LAB", "HSV"}:
        image, mode = image.convert("RGB"), "RGB"
    if mode == "L":
        return np.asarray(image, dtype=np.uint8), "MONOCHROME2"
    if mode in {"RGB", "RGBA"}:
        return np.asarray(image, dtype=np.uint8), mode
    if mode.startswith("I;16") or mode == "I":
        array = np.asarray(image)
        if array.min(initial=0) < 0 or array.max(initial=0) > 65535:
            raise errors.unsupported_format("Only 8- and 16-bit images are accepted.")
        return array.astype(np.uint16), "MONOCHROME2"
    raise errors.unsupported_format(f"Pixel mode {mode} is not accepted.")


def encode_clean_png(frame: np.ndarray) -> bytes:
    """A metadata-free lossless PNG of one frame (uint8 grey/RGB/RGBA or uint16)."""
    return encode_image(frame, "png")


def _display_from_pixels(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 3:
        return np.ascontiguousarray(frame[..., :3])
    grey = frame if frame.dtype == np.uint8 else rendering.stretch_to_uint8(frame)
    return np.repeat(grey[..., np.newaxis], 3, axis=2)


def _from_pillow(kind: str, image: Image.Image) -> DecodedImage:
    frame, photometric = _pillow_pixels(image)
    return DecodedImage(
        kind=kind,
        pixels=frame[np.newaxis, ...],
        photometric=photometric,
        display=_display_from_pixels(frame)[np.newaxis, ...],
        clean_bytes=encode_clean_png(frame),
    )


# --- DICOM ----------------------------------------------------------------------------------


def _validate_dicom(
    data: bytes, max_pixels: int, max_decoded_bytes: int | None = None, *, check_frames: bool = True
) -> DecodedImage:
    ds = dicom.read_dataset(data, max_inflated_bytes=max_decoded_bytes)
    if "PixelData" not in ds:
        sop_class = ds.file_meta.get("MediaStorageSOPClassUID")
        name = str(getattr(sop_class, "name", "") or sop_class or "a non-image object")
        raise errors.no_pixel_data(
            f"The DICOM file holds no pixel data ({name}): only images are accepted.",
        )
    shape = dicom.geometry(ds)
    if shape.rows * shape.columns > max_pixels:
        raise _too_many_pixels(shape.columns, shape.rows, max_pixels)
    bits = int(ds.get("BitsAllocated") or 8)
    decoded = shape.pixel_count * shape.samples * max(1, (bits + 7) // 8)
    if max_decoded_bytes is not None and decoded > max_decoded_bytes:
        raise errors.decoded_too_large(
            f"The DICOM image decodes to {size_text(decoded)} ({shape.frames} frames of "
            f"{shape.columns} x {shape.rows}), over the {size_text(max_decoded_bytes)} limit "
            "for decoded pixels.",
        )
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:  # Decoders trust the codestream's size.
        intake_guards.check_frame_sizes(ds.PixelData, rows=shape.rows, columns=shape.columns)
    if shape.frames > 1:
        lazy = _lazy_dicom(ds, data, check_frames=check_frames)
        if lazy is not None:
            return lazy
    pixels = dicom.decode_pixels(ds)
    notes = list(rendering.display_notes(ds))
    if dicom.decoded_by_fallback(ds):
        notes.append("pixel data decoded by GDCM: pydicom's decoders refused it")
    try:
        display = rendering.render_frames_uint8(ds, pixels)
    except ImagingError:
        raise
    except Exception as exc:  # A broken palette or LUT.
        raise errors.corrupt_image("The DICOM image could not be rendered.") from exc
    return DecodedImage(
        kind="dicom",
        pixels=pixels,
        photometric=dicom.pixels_photometric(ds),
        display=display,
        clean_bytes=bytes(data),
        notes=tuple(notes),
    )


def _lazy_dicom(ds: Any, data: bytes, *, check_frames: bool = True) -> DecodedImage | None:
    """A multi-frame DICOM whose frames are decoded one at a time (`FrameStack`), after
    checking that every frame decodes and renders (with `check_frames=False`, the first
    frame now and each later one as it is read, see `validate_upload`). None when pydicom
    cannot decode frames on their own: the whole-array path then decides (with its fallback
    decoder)."""
    shape = dicom.geometry(ds)
    try:
        first = dicom.decode_frame(ds, 0)
    except ImagingError:
        return None
    frame_shape = tuple(first.shape)

    def read(index: int) -> np.ndarray:
        frame = dicom.decode_frame(ds, index)
        if frame.shape != frame_shape or frame.dtype != first.dtype:
            raise errors.corrupt_image(
                f"Frame {index + 1} of the DICOM image does not match the first frame."
            )
        return frame

    pixels = FrameStack(read, shape.frames, frame_shape, first.dtype)
    pixels.remember(0, first)

    def render(index: int) -> np.ndarray:
        frame = pixels[index]  # Decoding errors are the pixels' own (see below).
        try:
            return rendering.render_frame_uint8(ds, frame, index=index)
        except ImagingError:
            raise
        except Exception as exc:  # A broken palette or LUT.
            raise errors.corrupt_image("The DICOM image could not be rendered.") from exc

    display = FrameStack(render, shape.frames, (shape.rows, shape.columns, 3), np.uint8)
    for index in range(shape.frames if check_frames else 1):
        try:
            pixels.frame(index)
        except ImagingError:
            return None  # Let the whole-array decoders try.
        display.frame(index)
    notes = list(rendering.display_notes(ds))
    return DecodedImage(
        kind="dicom",
        pixels=pixels,  # type: ignore[arg-type]  # an array-like read frame by frame
        photometric=dicom.pixels_photometric(ds),
        display=display,  # type: ignore[arg-type]
        clean_bytes=bytes(data),
        notes=tuple(notes),
    )
