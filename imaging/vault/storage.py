"""Where scan files live: Django's storage API, with crash-safe writes on local disk.

Everything goes through `default_storage`, so an S3-compatible backend (django-storages,
whose uploads are atomic by nature) can replace local disk with a settings change.
`AtomicFileSystemStorage` is the local-disk default: a file appears under its final name
only complete and fsynced, so a crash mid-write never leaves a truncated file that a
database row could point at.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Any

from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage

_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV}


class AtomicFileSystemStorage(FileSystemStorage):
    """FileSystemStorage whose writes are temp file, fsync, link into place, fsync dir."""

    def _save(self, name: str, content: Any) -> str:
        full_path = Path(self.path(name))
        directory = full_path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                if hasattr(content, "seek"):
                    content.seek(0)
                for chunk in content.chunks():
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp_name, 0o600)
            while True:
                try:
                    # link() refuses to replace an existing file, unlike rename(): a name
                    # taken since get_available_name() gets a fresh one, nothing is lost.
                    os.link(tmp_name, full_path)
                    break
                except FileExistsError:
                    name = self.get_available_name(name)
                    full_path = Path(self.path(name))
                except OSError as exc:
                    if exc.errno not in _NO_HARD_LINKS:
                        raise
                    # A filesystem without hard links: rename, after the name was checked
                    # free (a narrow race, but never a partial file under the final name).
                    os.replace(tmp_name, full_path)
                    break
        finally:
            # The temp name goes either way; on success the data lives on under `name`.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        _fsync_directory(directory)
        return str(name).replace("\\", "/")


def _fsync_directory(directory: Path) -> None:
    # Makes the new directory entry itself durable, not only the file's contents.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def storage_write(name: str, data: bytes) -> str:
    """Write bytes under `name` (or a free variant of it); returns the name actually used."""
    return default_storage.save(name, ContentFile(data))


def storage_write_file(name: str, handle: IO[bytes]) -> str:
    """Write an open file's contents under `name`, in chunks (never all in memory)."""
    handle.seek(0)
    return default_storage.save(name, File(handle))


def storage_read(name: str) -> bytes:
    handle: IO[bytes]
    with default_storage.open(name, "rb") as handle:
        return handle.read()


def storage_open(name: str) -> IO[bytes]:
    """The stored file, open for reading (seekable): for reading a part of a large file."""
    handle: IO[bytes] = default_storage.open(name, "rb")
    return handle


def storage_delete(*names: str) -> None:
    """Best-effort removal, for cleaning up after a failed step."""
    for name in names:
        if not name:
            continue
        with contextlib.suppress(OSError):
            default_storage.delete(name)


def storage_delete_tree(prefix: str) -> int:
    """Delete every stored file under the folder `prefix` (temporaries too), through the storage
    API (local disk or S3); returns how many. For erasure: a scan's files all live under
    `scans/<uid>/`. On local disk the emptied folders go too."""
    prefix = prefix.rstrip("/") + "/"
    count = 0
    try:
        folders, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return 0
    for folder in folders:
        count += storage_delete_tree(f"{prefix}{folder}")
    for name in files:
        default_storage.delete(f"{prefix}{name}")
        count += 1
    if isinstance(default_storage, FileSystemStorage):
        with contextlib.suppress(OSError):
            os.rmdir(default_storage.path(prefix))
    return count
