"""Restore: crop and paste regions, optional CLAHE, encode for download.

Interface (stable):

    crop_region(pixels, frame, box) -> np.ndarray          # a copy of pixels[frame, y0:y1, x0:x1]
    paste_regions(redacted, regions) -> np.ndarray         # regions: iterable of (frame, box, crop)
    apply_clahe(image, *, clip_limit=2.0, tiles=8) -> np.ndarray   # ONE frame, dtype kept
    encode_image(array, fmt, *, quality=95) -> bytes       # ONE frame; fmt "png" or "jpeg"
    MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}

Arrays are frames first, as `DecodedImage.pixels`: (F, H, W) or (F, H, W, C). A box is
(x0, y0, x1, y1), half-open: rows y0:y1 and columns x0:x1, inside the image. `paste_regions`
is the exact inverse of `crop_region`: pasting every crop taken from the original into the
redacted image gives the original back, bit for bit (dtype and shape checked, never cast).

`encode_image` is lossless for PNG: uint8 grey/RGB/RGBA, and uint16 grey or RGB (16-bit PNG,
through OpenCV for RGB since Pillow cannot write 16-bit colour). Signed or 32-bit pixels (a CT
stored as int16, an RT dose as uint32) have no PNG form: pass a rendering
(`engine.pixels.rendering.render_frame_uint8`) or offer the DICOM
(`engine.dicom.io.write_redacted_dataset`) instead; a ValueError says so. JPEG is 8-bit only
and lossy by nature: 16-bit input is stretched to 8 bits first (percentiles, as for
display) and alpha is dropped.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import cast

import cv2
import numpy as np
from PIL import Image

from engine.pixels.rendering import stretch_to_uint8

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}

Box = Sequence[int]


def _box_slices(image_shape: tuple[int, ...], box: Box) -> tuple[slice, slice]:
    x0, y0, x1, y1 = (int(v) for v in box)
    height, width = image_shape[1], image_shape[2]
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"box {tuple(box)} is outside a {width}x{height} image")
    return slice(y0, y1), slice(x0, x1)


def _check_frame(pixels: np.ndarray, frame: int) -> int:
    frame = int(frame)
    if not 0 <= frame < pixels.shape[0]:
        raise ValueError(f"frame {frame} is outside 0..{pixels.shape[0] - 1}")
    return frame


def crop_region(pixels: np.ndarray, frame: int, box: Box) -> np.ndarray:
    """A copy of the region, same dtype and channels."""
    frame = _check_frame(pixels, frame)
    rows, columns = _box_slices(pixels.shape, box)
    return pixels[frame, rows, columns].copy()


def paste_regions(
    redacted: np.ndarray, regions: Iterable[tuple[int, Box, np.ndarray]]
) -> np.ndarray:
    """A copy of `redacted` with every (frame, box, crop) written back in place."""
    restored = redacted.copy()
    for frame, box, crop in regions:
        frame = _check_frame(restored, frame)
        rows, columns = _box_slices(restored.shape, box)
        target = restored[frame, rows, columns]
        if crop.shape != target.shape or crop.dtype != target.dtype:
            raise ValueError(
                f"region {tuple(box)} is {crop.shape} {crop.dtype}, "
                f"the image expects {target.shape} {target.dtype}"
            )
        restored[frame, rows, columns] = crop
    return restored


def apply_clahe(image: np.ndarray, *, clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of one frame, dtype kept.

    Grey uint8/uint16: OpenCV CLAHE directly. Colour: on the lightness only (LAB for uint8;
    for uint16 the colour is scaled to 8 bits for the LAB step and back), so hues stay.
    Alpha, if any, is kept unchanged.
    """
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"CLAHE takes uint8 or uint16, not {image.dtype}")
    if image.ndim == 2:
        return clahe.apply(np.ascontiguousarray(image))
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"CLAHE takes one grey or RGB(A) frame, not {image.shape}")
    rgb = image[..., :3]
    if image.dtype == np.uint16:
        # LAB conversion in OpenCV is 8-bit or float: work in float, keep 16-bit precision.
        lab = cv2.cvtColor(rgb.astype(np.float32) / 65535.0, cv2.COLOR_RGB2LAB)
        lightness = np.clip(lab[..., 0] / 100.0 * 65535.0, 0, 65535).astype(np.uint16)
        lab[..., 0] = clahe.apply(lightness).astype(np.float32) / 65535.0 * 100.0
        out = np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB) * 65535.0, 0, 65535)
        result = np.rint(out).astype(np.uint16)
    else:
        lab = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB)
        lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
        result = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    if image.shape[2] == 4:
        result = np.dstack([result, image[..., 3]])
    return cast("np.ndarray", result)


def _png(array: np.ndarray) -> bytes:
    uint8_ok = array.dtype == np.uint8 and (array.ndim == 2 or array.shape[2] in (3, 4))
    if uint8_ok or (array.dtype == np.uint16 and array.ndim == 2):
        image = Image.fromarray(np.ascontiguousarray(array))
    elif array.dtype == np.uint16 and array.ndim == 3 and array.shape[2] in (3, 4):
        code = cv2.COLOR_RGB2BGR if array.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(array), code))
        if not ok:
            raise ValueError("PNG encoding failed")
        return encoded.tobytes()
    else:
        raise ValueError(
            f"{array.dtype} {array.shape} has no lossless PNG form: "
            "encode a rendering, or download the DICOM"
        )
    buffer = io.BytesIO()
    # Level 1: about 3 % larger than level 6 here and five times faster to write.
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _jpeg(array: np.ndarray, quality: int) -> bytes:
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    if array.dtype != np.uint8:
        array = stretch_to_uint8(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_image(array: np.ndarray, fmt: str, *, quality: int = 95) -> bytes:
    """One frame as PNG (lossless) or JPEG bytes, with no metadata."""
    if array.ndim not in (2, 3):
        raise ValueError("encode one frame: (H, W) or (H, W, C)")
    if fmt == "png":
        return _png(array)
    if fmt in ("jpeg", "jpg"):
        return _jpeg(array, quality)
    raise ValueError(f"unknown image format {fmt!r}")
