"""Zip archives of a series: list the members to validate, refusing archives that are too
big, too many, or not zips (plain: bytes in, (name, bytes) out; nothing touches the disk).

    is_zip(data) -> bool
    zip_members(data, *, max_members, max_total_bytes, max_member_bytes) -> list[Member]
    zip_members_iter(data, *, ...same) -> Iterator[Member]   # one member inflated at a time

Refusals (engine.errors' EngineError, nothing is stored):
    invalid_archive         not a readable zip, or an encrypted member
    empty_archive           no file left to read (see "skipped")
    archive_too_many_files  more than max_members files (400)
    archive_too_large       the members add up to more than max_total_bytes uncompressed
                            (413). Checked on the sizes the archive declares and again on the
                            bytes actually inflated, which stop at the limit: a zip bomb
                            that lies about its sizes is cut off, never inflated whole.
    file_too_large          (ImagingError) one member over max_member_bytes (413).

Skipped, silently: folders, symbolic links, names that are absolute or climb out of the
archive (`..`), macOS resource forks (`__MACOSX/`) and hidden files (`.DS_Store`). Nothing is
extracted to a path, so a traversal name is not a danger here; it is still no scan of ours.
Members keep their path inside the archive as their name, in archive order.
"""

from __future__ import annotations

import io
import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from engine import errors
from engine.errors import EngineError

ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # local file header; empty archive
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes


def is_zip(data: bytes) -> bool:
    return data[:4] in ZIP_MAGICS


def _skipped(info: zipfile.ZipInfo) -> bool:
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    mode = info.external_attr >> 16
    return (
        info.is_dir()
        or stat.S_ISLNK(mode)
        or name.startswith("/")
        or (len(name) > 1 and name[1] == ":")  # C:/...
        or ".." in path.parts
        or path.parts[:1] == ("__MACOSX",)
        or path.name.startswith(".")
        or not path.name
    )


def _too_large() -> EngineError:
    return errors.archive_too_large("The archive's files add up to more than the upload limit.")


def zip_members(
    data: bytes, *, max_members: int, max_total_bytes: int, max_member_bytes: int
) -> list[Member]:
    return list(
        zip_members_iter(
            data,
            max_members=max_members,
            max_total_bytes=max_total_bytes,
            max_member_bytes=max_member_bytes,
        )
    )


def zip_members_iter(
    data: bytes, *, max_members: int, max_total_bytes: int, max_member_bytes: int
) -> Iterator[Member]:
    """The members one at a time, each inflated only when asked for: a caller that lets a
    member go before asking for the next holds one member, not the archive inflated. The
    checks on the archive as a whole (count, declared sizes, encryption) come first."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = [info for info in archive.infolist() if not _skipped(info)]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise errors.invalid_archive("The archive could not be read.") from exc
    if not infos:
        raise errors.empty_archive()
    if len(infos) > max_members:
        raise errors.archive_too_many_files(max_members)
    if any(info.flag_bits & 0x1 for info in infos):
        raise errors.invalid_archive("Encrypted archives are not accepted.")
    if sum(info.file_size for info in infos) > max_total_bytes:
        raise _too_large()
    total = 0
    for info in infos:
        if info.file_size > max_member_bytes:
            raise errors.file_too_large(f"{info.filename}: larger than the upload limit.")
        buffer = bytearray()
        try:
            with archive.open(info) as handle:
                while chunk := handle.read(_CHUNK):
                    buffer += chunk
                    total += len(chunk)
                    # Declared sizes can lie: count what is really inflated.
                    if total > max_total_bytes:
                        raise _too_large()
                    if len(buffer) > max_member_bytes:
                        raise errors.file_too_large(
                            f"{info.filename}: larger than the upload limit."
                        )
        except EngineError:
            raise
        except (
            zipfile.BadZipFile,
            zlib.error,
            OSError,
            EOFError,
            ValueError,
            NotImplementedError,
        ) as exc:
            # CRC mismatch, truncated data, an unsupported compression method.
            raise errors.invalid_archive(
                f"{info.filename}: could not be read from the archive."
            ) from exc
        member = Member(name=info.filename, data=bytes(buffer))
        del buffer
        yield member
        del member  # Not held while the next one inflates.
