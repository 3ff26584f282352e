"""Which model made a result: its name, version and the SHA-256 of the weights file.

    model_identity(weights, name=None, version=None) -> {"name", "version", "sha256", "weights"}
    model_version(directory) -> str   # VERSION file, else "version" in config.json or
                                      # train_summary.json, else "" (unknown, never guessed)
    file_sha256(path) -> str          # cached per process while size and mtime are unchanged

Every detection, segmentation and classification stores this beside its result, so a result
can be traced to the exact weights even when a VERSION was not bumped after retraining (the
SHA-256 differs then, the version does not).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TypedDict

VERSION_FILE = "VERSION"
# Files a model directory may carry a "version" key in (first found wins).
VERSION_JSON = ("config.json", "train_summary.json")


class ModelIdentity(TypedDict):
    name: str
    version: str
    sha256: str
    weights: str  # the weights file's name (no directory: server paths stay on the server)


def file_sha256(path: Path | str) -> str:
    """The SHA-256 of a file, hex. Hashing 10 MB of weights on every scan would cost more
    than some detections, so the digest is cached while the file's size and mtime stay."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_version(directory: Path | str) -> str:
    """The version a model directory states: the first line of VERSION, else a "version" key
    of config.json or train_summary.json; "" when none states one."""
    directory = Path(directory)
    version_file = directory / VERSION_FILE
    if version_file.is_file():
        lines = version_file.read_text(encoding="utf-8").strip().splitlines()
        if lines and lines[0].strip():
            return lines[0].strip()
    for name in VERSION_JSON:
        path = directory / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue
        if isinstance(data, dict) and data.get("version") not in (None, ""):
            return str(data["version"])
    return ""


def model_identity(
    weights: Path | str, *, name: str | None = None, version: str | None = None
) -> ModelIdentity:
    """Name, version and SHA-256 of the weights file `weights` (which must exist). The name
    defaults to the model directory's name; the version to `model_version` of that directory."""
    path = Path(weights)
    return {
        "name": name or path.resolve().parent.name,
        "version": model_version(path.parent) if version is None else version,
        "sha256": file_sha256(path),
        "weights": path.name,
    }


def bytes_identity(data: bytes, *, name: str, version: str, weights: str) -> ModelIdentity:
    """The same for weights held in memory (an uploaded model read from storage)."""
    return {
        "name": name,
        "version": version,
        "sha256": hashlib.sha256(data).hexdigest(),
        "weights": weights,
    }
