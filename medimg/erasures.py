"""The erasure ledger: the list of erased scans and patients that a restored backup must not
bring back.

An erasure destroys a scan's wrapped data key and deletes its files, but a backup taken
before it still holds both (encrypted under the backup key). The ledger is the part of the
crypto-shredding that lives outside the backups: one JSON line per erasure, written (and
fsynced) before the erasure commits, in a file beside the key-encryption keys
(MEDIMG_ERASURE_LEDGER, default KEY_DIR/erasures.jsonl), never in the database or the media
store, so no backup holds it and no restore replaces it. `manage.py restore_backup` reads it
after loading the database: every scan it names is erased again (key rows destroyed, files
not put back) before anything else runs, and `imaging.vault.keys.open_data_key` refuses to
unwrap the key of any scan it names.

A line holds no identity: the scan's random uid, the patient's keyed reference (the audit
log's pseudonym), when, by whom (username), how, and the SHA-256 of the typed reason.

    ledger_path() -> Path
    ledger_append(entry) -> None           # fsynced; OSError if it cannot be written
    ledger_entries() -> list[dict]         # [] when there is no ledger yet
    erased_scan_uids() -> frozenset[str]   # cached by the file's size and time
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from django.conf import settings

_lock = threading.Lock()
_cache: dict[str, tuple[tuple[int, int], frozenset[str]]] = {}


def ledger_path() -> Path:
    configured = getattr(settings, "MEDIMG_ERASURE_LEDGER", None)
    return Path(configured) if configured else Path(settings.KEY_DIR) / "erasures.jsonl"


def ledger_append(entry: dict[str, Any]) -> None:
    """Add one erasure; on return it is on disk (file and directory fsynced)."""
    path = ledger_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    with _lock:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def ledger_entries() -> list[dict[str, Any]]:
    """Every erasure in the ledger, oldest first. A line cut short by a crash is skipped."""
    try:
        text = ledger_path().read_text()
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def erased_scan_uids() -> frozenset[str]:
    """The uids of every erased scan (patient erasures list theirs one by one)."""
    path = ledger_path()
    try:
        stat = path.stat()
    except FileNotFoundError:
        return frozenset()
    stamp = (stat.st_size, stat.st_mtime_ns)
    cached = _cache.get(str(path))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    uids = frozenset(
        str(uid) for entry in ledger_entries() for uid in entry.get("scan_uids", []) if uid
    )
    _cache[str(path)] = (stamp, uids)
    return uids
