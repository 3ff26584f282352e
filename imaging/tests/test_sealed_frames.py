"""Redacted pixels sealed frame by frame: exact back, and any change to the file fails."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from engine.crypto import envelope as crypto
from engine.crypto.sealed_frames import MAGIC, SealedFramesWriter, unseal_frames
from engine.errors import CryptoError

AAD = b"medimg/redacted-pixels/v1\nscan-1"


def _sealed(stack: np.ndarray, key: bytes) -> bytes:
    handle = io.BytesIO()
    writer = SealedFramesWriter(handle, key, aad=AAD, shape=stack.shape, dtype=stack.dtype)
    for frame in stack:
        writer.add(frame)
    writer.close()
    return handle.getvalue()


def _chunks(blob: bytes) -> list[bytes]:
    out, position = [], len(MAGIC)
    while position < len(blob):
        (length,) = struct.unpack(">Q", blob[position : position + 8])
        out.append(blob[position : position + 8 + length])
        position += 8 + length
    return out


def test_it_gives_back_the_exact_stack() -> None:
    key = crypto.new_data_key()
    stack = np.random.default_rng(0).integers(0, 4096, (5, 6, 7), dtype=np.uint16)
    np.testing.assert_array_equal(unseal_frames(_sealed(stack, key), key, aad=AAD), stack)


def test_it_refuses_a_dropped_repeated_or_swapped_frame_or_another_scans_key() -> None:
    key = crypto.new_data_key()
    stack = np.arange(4 * 3 * 2 * 3, dtype=np.uint8).reshape(4, 3, 2, 3)
    blob = _sealed(stack, key)
    head, *frames = _chunks(blob)
    tampered = [
        MAGIC + head + b"".join(frames[:-1]),  # last frame dropped
        MAGIC + head + b"".join([frames[0], frames[0], *frames[2:]]),  # frame repeated
        MAGIC + head + b"".join([frames[1], frames[0], *frames[2:]]),  # frames swapped
        blob[:-1],  # cut short
    ]
    for bad in tampered:
        with pytest.raises(CryptoError):
            unseal_frames(bad, key, aad=AAD)
    with pytest.raises(CryptoError):
        unseal_frames(blob, crypto.new_data_key(), aad=AAD)
    with pytest.raises(CryptoError):
        unseal_frames(blob, key, aad=b"medimg/redacted-pixels/v1\nscan-2")


def test_the_writer_refuses_a_frame_of_the_wrong_shape_or_too_few_frames() -> None:
    writer = SealedFramesWriter(
        io.BytesIO(), crypto.new_data_key(), aad=AAD, shape=(2, 3, 3), dtype=np.uint8
    )
    with pytest.raises(ValueError):
        writer.add(np.zeros((3, 4), np.uint8))
    writer.add(np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError):
        writer.close()
