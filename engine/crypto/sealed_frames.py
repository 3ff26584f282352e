"""A stack of frames sealed frame by frame, so a worker writes a cine's redacted pixels
without ever holding all of them.

    writer = SealedFramesWriter(handle, data_key, aad=..., shape=(F, H, W[, C]), dtype=...)
    writer.add(frame)  # F times, in order
    writer.close()
    unseal_frames(blob, data_key, aad=...) -> np.ndarray     # the exact stack
    unseal_frame(handle, data_key, aad=..., index=i) -> np.ndarray  # one frame, from a file
    FileFrames(handle, shape=..., dtype=...)[i] -> np.ndarray  # raw frames read one by one

Layout: MAGIC, then sealed chunks, each an 8-byte big-endian length and an AES-GCM blob
(`engine.crypto.envelope.encrypt_blob`). Chunk 0 holds the dtype, shape and chunk count; chunk i+1
holds frame i's bytes. Every chunk's associated data is the caller's `aad` plus its index and
the count, so a chunk moved, dropped, repeated or taken from another scan fails to open.
"""

from __future__ import annotations

import json
import os
import struct
from typing import IO, Any

import numpy as np

from engine.crypto import envelope as crypto
from engine.errors import CryptoError

MAGIC = b"MEDIMG-SEALED-FRAMES/1\n"
_LENGTH = struct.Struct(">Q")


def is_sealed_frames(blob: bytes) -> bool:
    return blob.startswith(MAGIC)


def _chunk_aad(aad: bytes, index: int, count: int) -> bytes:
    return aad + f"\nchunk {index} of {count}".encode()


class SealedFramesWriter:
    def __init__(
        self,
        handle: IO[bytes],
        data_key: bytes,
        *,
        aad: bytes,
        shape: tuple[int, ...],
        dtype: Any,
    ) -> None:
        self.handle = handle
        self.data_key = data_key
        self.aad = aad
        self.shape = tuple(int(v) for v in shape)
        self.dtype = np.dtype(dtype)
        self.count = self.shape[0] + 1
        self.index = 0
        handle.write(MAGIC)
        header = {"dtype": self.dtype.str, "shape": list(self.shape), "chunks": self.count}
        self._write(json.dumps(header, sort_keys=True).encode())

    def _write(self, plaintext: bytes) -> None:
        blob = crypto.encrypt_blob(
            self.data_key, plaintext, aad=_chunk_aad(self.aad, self.index, self.count)
        )
        self.handle.write(_LENGTH.pack(len(blob)))
        self.handle.write(blob)
        self.index += 1

    def add(self, frame: np.ndarray) -> None:
        if tuple(frame.shape) != self.shape[1:] or frame.dtype != self.dtype:
            raise ValueError(f"frame {frame.shape} {frame.dtype} does not fit {self.shape}")
        if self.index >= self.count:
            raise ValueError("more frames than the shape holds")
        self._write(np.ascontiguousarray(frame).tobytes())

    def close(self) -> None:
        if self.index != self.count:
            raise ValueError(f"{self.index - 1} frames written of {self.shape[0]}")
        self.handle.flush()


class FileFrames:
    """A stack of frames stored raw, one after another, in an open file: each frame is read
    when it is indexed (`frames[i]`, a fresh array), so going through a cine holds one frame,
    where a memory map would keep every page it touched resident. Enough of an array for
    `engine.dicom.io.write_pixel_data`: `shape`, `dtype`, `len` and frame indexing."""

    def __init__(self, handle: IO[bytes], *, shape: tuple[int, ...], dtype: Any) -> None:
        handle.flush()
        self.handle = handle
        self.shape = tuple(int(v) for v in shape)
        self.dtype = np.dtype(dtype)
        self.frame_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.shape[0]:
            raise IndexError(index)
        data = os.pread(self.handle.fileno(), self.frame_bytes, index * self.frame_bytes)
        if len(data) != self.frame_bytes:
            raise ValueError(f"frame {index} is incomplete in the file")
        return np.frombuffer(data, dtype=self.dtype).reshape(self.shape[1:])


def unseal_frames(blob: bytes, data_key: bytes, *, aad: bytes) -> np.ndarray:
    """The stack, or CryptoError when anything about the file was changed."""
    if not is_sealed_frames(blob):
        raise CryptoError()
    view = memoryview(blob)
    position = len(MAGIC)

    def chunk(index: int, count: int) -> bytes:
        nonlocal position
        if position + _LENGTH.size > len(view):
            raise CryptoError()
        (length,) = _LENGTH.unpack_from(view, position)
        start, position = position + _LENGTH.size, position + _LENGTH.size + length
        if position > len(view):
            raise CryptoError()
        return crypto.decrypt_blob(
            data_key, bytes(view[start:position]), aad=_chunk_aad(aad, index, count)
        )

    # The chunk count comes from the file's layout; it is bound into every chunk's AAD and
    # stated again inside chunk 0, so a dropped or added chunk fails either way.
    total = 0
    scan = position
    while scan < len(view):
        if scan + _LENGTH.size > len(view):
            raise CryptoError()
        (length,) = _LENGTH.unpack_from(view, scan)
        scan += _LENGTH.size + length
        total += 1
    if scan != len(view) or total < 1:
        raise CryptoError()
    try:
        header = json.loads(chunk(0, total))
        dtype = np.dtype(header["dtype"])
        shape = tuple(int(v) for v in header["shape"])
    except (ValueError, KeyError, TypeError):
        raise CryptoError() from None
    if header.get("chunks") != total or not shape or shape[0] != total - 1 or dtype.hasobject:
        raise CryptoError()
    out = np.empty(shape, dtype=dtype)
    frame_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    for index in range(shape[0]):
        data = chunk(index + 1, total)
        if len(data) != frame_bytes:
            raise CryptoError()
        out[index] = np.frombuffer(data, dtype=dtype).reshape(shape[1:])
    return out


def unseal_frame(handle: IO[bytes], data_key: bytes, *, aad: bytes, index: int) -> np.ndarray:
    """Frame `index` of the stack in the open (seekable) file `handle`: the chunks' lengths
    are walked (seeks, nothing else read), then only the header chunk and that frame's chunk
    are read and opened. CryptoError when anything about them was changed, or when `index`
    is not a frame of the stack; the chunk count is bound as in `unseal_frames`."""
    handle.seek(0)
    if handle.read(len(MAGIC)) != MAGIC:
        raise CryptoError()
    spans: list[tuple[int, int]] = []
    position = len(MAGIC)
    while True:
        head = handle.read(_LENGTH.size)
        if not head:
            break
        if len(head) != _LENGTH.size:
            raise CryptoError()
        (length,) = _LENGTH.unpack(head)
        spans.append((position + _LENGTH.size, length))
        position += _LENGTH.size + length
        handle.seek(position)
    total = len(spans)
    if total < 2 or not 0 <= index < total - 1:
        raise CryptoError()

    def chunk(number: int) -> bytes:
        start, length = spans[number]
        handle.seek(start)
        blob = handle.read(length)
        if len(blob) != length:
            raise CryptoError()
        return crypto.decrypt_blob(data_key, blob, aad=_chunk_aad(aad, number, total))

    try:
        header = json.loads(chunk(0))
        dtype = np.dtype(header["dtype"])
        shape = tuple(int(v) for v in header["shape"])
    except (ValueError, KeyError, TypeError):
        raise CryptoError() from None
    if header.get("chunks") != total or not shape or shape[0] != total - 1 or dtype.hasobject:
        raise CryptoError()
    data = chunk(index + 1)
    if len(data) != int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize:
        raise CryptoError()
    return np.frombuffer(data, dtype=dtype).reshape(shape[1:]).copy()
