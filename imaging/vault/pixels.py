"""A scan's pixels as the vault keeps them: the redacted array sealed under the scan's data
key (frame by frame, or as one blob for scans processed before that), the digest the upload's
pixels hash to, and the upload itself, rebuilt bit for bit from the redacted array and the
sealed regions.

    pixels_digest(pixels) -> str                                   # dtype, shape, every pixel
    DigestingImage(image)        # the same digest, taken as the pipeline reads each frame
    redacted_pixels_unseal(blob, *, data_key, scan_ref) -> array   # CryptoError if changed
    scan_restore_pixels(*, scan) -> array                          # the exact upload

Processing writes the sealed array (imaging.jobs.processing); restore, review, segmentation
and the viewer read it through here.
"""

from __future__ import annotations

import hashlib
from typing import Any, cast

import numpy as np

from engine.crypto import envelope as crypto
from engine.crypto.sealed_frames import is_sealed_frames, unseal_frames
from engine.detection import pipeline
from engine.errors import CryptoError
from engine.pixels.restoration import paste_regions
from imaging.models import Scan
from imaging.vault.keys import open_data_key
from imaging.vault.storage import storage_read


def _digest_start(pixels: Any) -> Any:
    digest = hashlib.sha256()
    digest.update(f"{pixels.dtype.str}|{tuple(pixels.shape)}|".encode())
    return digest


def pixels_digest(pixels: np.ndarray) -> str:
    """What the restored image must hash to: dtype, shape and every pixel."""
    digest = _digest_start(pixels)
    # Frame by frame: the same bytes as the whole array's, without building it (a cine's
    # frames are decoded one at a time, see validation.FrameStack).
    for frame in pixels:
        digest.update(np.ascontiguousarray(frame).tobytes())
    return digest.hexdigest()


class DigestingImage:
    """A DecodedImage whose frames, as `engine.detection.pipeline.frame_pixels` reads them,
    are also hashed into `pixels_digest`, so the worker checks the decoded pixels against
    the upload's digest without decoding every frame a second time. Everything else is the
    image's own. `digest()` is the finished digest: when the frames were not read exactly
    once each in order, it reads the pixels again (`pixels_digest`)."""

    def __init__(self, image: Any) -> None:
        self._image = image
        self._hash = _digest_start(image.pixels)
        self._next = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._image, name)

    def frame_pixels(self, index: int) -> np.ndarray:
        frame = pipeline.frame_pixels(self._image, index)
        if index == self._next:
            self._hash.update(np.ascontiguousarray(frame).tobytes())
            self._next += 1
        else:
            self._next = -1  # Out of order: digest() reads the pixels again.
        return frame

    def digest(self) -> str:
        if self._next != int(self._image.pixels.shape[0]):
            return pixels_digest(self._image.pixels)
        return cast("str", self._hash.hexdigest())


def redacted_pixels_unseal(blob: bytes, *, data_key: bytes, scan_ref: str) -> np.ndarray:
    """The stored redacted array: sealed frame by frame (engine.crypto.sealed_frames), or as one
    blob (scans processed before that). CryptoError on any integrity failure."""
    aad = crypto.redacted_pixels_aad(scan_ref=scan_ref)
    if is_sealed_frames(blob):
        return unseal_frames(blob, data_key, aad=aad)
    try:
        return crypto.unpack_array(crypto.decrypt_blob(data_key, blob, aad=aad))
    except ValueError:
        raise CryptoError() from None


def scan_restore_pixels(*, scan: Scan) -> np.ndarray:
    """The exact uploaded pixels (original dtype), or CryptoError on any integrity failure."""
    scan_ref = str(scan.uid)
    data_key = open_data_key(scan)
    redacted = redacted_pixels_unseal(
        storage_read(scan.redacted_pixels_path), data_key=data_key, scan_ref=scan_ref
    )
    pieces = [
        (
            region.frame,
            region.box,
            pipeline.open_region(
                ciphertext=bytes(region.ciphertext),
                data_key=data_key,
                scan_ref=scan_ref,
                index=region.index,
                frame=region.frame,
                box=region.box,
            ),
        )
        for region in scan.regions.all()
    ]
    restored = paste_regions(redacted, pieces)
    # Belt and braces: the result must be the upload, bit for bit, or nobody sees it.
    if pixels_digest(restored) != scan.pixels_sha256:
        raise CryptoError()
    return restored
