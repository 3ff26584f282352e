"""Stored files that nothing points at, left by a process killed between two steps (the chaos
soak, `python -m bench.soak`, found both kinds):

- a scan folder `scans/<uid>/` with no scan row: the upload wrote the encrypted original, then
  died before its row committed. The data key was never stored, so the file cannot be read;
- a processing run folder `scans/<uid>/run-<token>/` that the scan does not point at: a worker
  killed mid-run, whose next run wrote a new folder.

    orphans_find(older_than_seconds=None) -> [folder, ...]
    orphans_sweep(older_than_seconds=None, dry_run=False) -> {"folders", "files"}

Only folders whose newest file is older than IMAGING_ORPHAN_AFTER_SECONDS (default a day) are
touched: an upload writes its file before its row, and a run writes its folder before the scan
points at it, so anything recent may still be in flight. Segmentation folders, scans still
uploaded or processing, and erased scans (already gone) are left alone. The sweep runs from
Celery beat (`imaging.tasks.sweep_orphan_files`) and `manage.py sweep_orphans`; each sweep that
deletes anything is audited (folder names are random uids, never patient data).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.utils import timezone

from audit.models import Action
from audit.services import audit_record
from imaging.models import Scan, ScanStatus
from imaging.vault.storage import storage_delete_tree

logger = logging.getLogger(__name__)

ROOT = "scans/"
RUN_PREFIX = "run-"


def _newest(prefix: str) -> datetime | None:
    """The newest modification time of any file under `prefix`, or None for an empty folder."""
    try:
        folders, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return None
    times = [default_storage.get_modified_time(prefix + name) for name in files]
    times += [t for t in (_newest(f"{prefix}{folder}/") for folder in folders) if t is not None]
    return max(times) if times else None


def _old(prefix: str, cutoff: datetime) -> bool:
    newest = _newest(prefix)
    if newest is None:
        return True
    if timezone.is_naive(newest):
        newest = timezone.make_aware(newest, timezone.get_default_timezone())
    return newest < cutoff


def _referenced_runs(scan: Scan) -> set[str]:
    """The run folders the scan's stored paths point into."""
    names = [scan.original_path, scan.redacted_path, scan.redacted_pixels_path, scan.grid_path]
    for paths in (scan.frame_paths or {}).values():
        names += list(paths) if isinstance(paths, list) else [str(paths)]
    runs = set()
    for name in names:
        for part in str(name or "").split("/"):
            if part.startswith(RUN_PREFIX):
                runs.add(part)
    return runs


def orphans_find(older_than_seconds: int | None = None) -> list[str]:
    """The orphan folders (see the module's docstring), oldest rule applied."""
    age = (
        settings.IMAGING_ORPHAN_AFTER_SECONDS if older_than_seconds is None else older_than_seconds
    )
    cutoff = timezone.now() - timedelta(seconds=age)
    try:
        folders, _ = default_storage.listdir(ROOT)
    except FileNotFoundError:
        return []
    scans = {str(s.uid): s for s in Scan.objects.filter(uid__in=_uids(folders))}
    found = []
    for folder in sorted(folders):
        prefix = f"{ROOT}{folder}/"
        scan = scans.get(folder)
        if scan is None:
            if _old(prefix, cutoff):
                found.append(prefix)
            continue
        if scan.status in (ScanStatus.UPLOADED, ScanStatus.PROCESSING):
            continue
        referenced = _referenced_runs(scan)
        runs, _ = default_storage.listdir(prefix)
        for run in sorted(runs):
            if (
                run.startswith(RUN_PREFIX)
                and run not in referenced
                and _old(f"{prefix}{run}/", cutoff)
            ):
                found.append(f"{prefix}{run}/")
    return found


def _uids(folders: list[str]) -> list[str]:
    import uuid

    uids = []
    for folder in folders:
        try:
            uids.append(str(uuid.UUID(folder)))
        except ValueError:
            continue
    return uids


def orphans_sweep(
    older_than_seconds: int | None = None, *, dry_run: bool = False
) -> dict[str, Any]:
    """Delete the orphan folders; returns what was (or, dry, would be) deleted."""
    folders = orphans_find(older_than_seconds)
    files = 0
    if not dry_run:
        for folder in folders:
            files += storage_delete_tree(folder)
        if folders:
            logger.info("deleted %d orphan folder(s), %d file(s)", len(folders), files)
            audit_record(
                action=Action.ADMIN_CHANGE,
                target_type="storage",
                details={"change": "orphan files deleted", "folders": folders, "files": files},
            )
    return {"folders": folders, "files": files}
