"""Erasure by crypto-shredding: a patient (all their scans) or one scan, for good.

What an erasure does, in this order:
1. appends the scans' uids to the erasure ledger (medimg.erasures: a file beside the KEKs,
   outside the database and the backups), so that from this moment no process unwraps their
   data keys and no restore of an older backup brings them back;
2. in one transaction: overwrites each scan's wrapped data key and kept DICOM identity, deletes
   the scan rows (regions, fingerprints, segmentations, DICOMweb index and forwarding rows go
   with them) and, for a patient, the patient's record (name, hospital id, age, notes, care
   team, emergency grants); writes an `Erasure` tombstone and the audit event, both without
   identity (the patient's keyed reference, the scans' former numbers);
3. deletes every stored file under each scan's folder (originals, redacted images, sealed
   pixels, display PNGs, segmentation outputs, DICOM SEG) and drops cached thumbnails.

Every file was encrypted under the scan's data key, so a file that survives step 3 (a copy in
a backup, an object store's old version) is ciphertext whose key no longer exists outside old
backups, and the ledger keeps those backups from bringing the key back.

    scan_erase(*, scan, actor, reason, via) -> Erasure
    patient_erase(*, patient, actor, reason, via) -> Erasure
    erasures_reapply(*, via) -> int          # after a restore: the ledger applied again
    retention_erase_expired(*, now=None) -> list[Erasure]   # MEDIMG_RETENTION_DAYS
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit.models import Action
from audit.pseudonyms import patient_reference
from audit.services import audit_record
from imaging.models import Erasure, ErasureKind, Scan, ScanStatus
from imaging.selectors.thumbnails import SIZES, cache_key, thumbnail_version
from imaging.vault.storage import storage_delete, storage_delete_tree
from medimg.erasures import ledger_append, ledger_entries
from patients.models import Patient

logger = logging.getLogger(__name__)

VIA_RETENTION = "retention"
VIA_RESTORE = "re-applied after restore"
_PATH_FIELDS = ("original_path", "redacted_path", "redacted_pixels_path", "grid_path")


def reason_digest(reason: str) -> str:
    return hashlib.sha256(reason.strip().encode()).hexdigest()


def _actor_name(actor: Any, via: str) -> str:
    if actor is not None and getattr(actor, "is_authenticated", False):
        return str(actor.get_username())
    return f"system ({via})"


def _scan_files(scans: Iterable[Scan]) -> tuple[list[str], list[str], list[str]]:
    """The scans' folders, the stored names their rows point at (normally inside the folders)
    and their cached thumbnails' keys, read before the rows go."""
    folders, names, keys = [], [], []
    for scan in scans:
        folders.append(f"scans/{scan.uid}")
        names += [getattr(scan, field) for field in _PATH_FIELDS if getattr(scan, field)]
        for kind_paths in (scan.frame_paths or {}).values():
            names += [path for path in kind_paths or [] if path]
        for job in scan.segmentations.all():
            names += [p for p in (job.mask_path, job.overlay_path, job.seg_path) if p]
        keys += [cache_key(scan.pk, thumbnail_version(scan, size)) for size in SIZES]
    return folders, names, keys


def _files_delete(folders: Sequence[str], names: Sequence[str], keys: Sequence[str]) -> int:
    count = sum(storage_delete_tree(folder) for folder in folders)
    outside = [name for name in names if not any(name.startswith(f + "/") for f in folders)]
    storage_delete(*outside)
    cache.delete_many(list(keys))
    return count + len(outside)


def _shred_rows(scans: Sequence[Scan]) -> None:
    """Overwrite the keys, then delete the rows (and, by cascade, everything hanging off them)."""
    ids = [scan.pk for scan in scans]
    # The wrapped key is what a row in a later dump could unwrap; overwrite before deleting.
    Scan.objects.filter(pk__in=ids).update(
        wrapped_key=b"\0" * 60, identity_ciphertext=b"", original_filename=""
    )
    Scan.objects.filter(pk__in=ids).delete()


def _erase(
    *,
    kind: str,
    patient: Patient,
    scans: Sequence[Scan],
    actor: Any,
    reason: str,
    via: str,
    erase_patient: bool,
) -> Erasure:
    hospital_id = patient.id  # delete() clears it.
    reference = patient_reference(hospital_id)
    digest = reason_digest(reason)
    now = timezone.now()
    username = _actor_name(actor, via)
    scan_ids = [scan.pk for scan in scans]
    scan_uids = [str(scan.uid) for scan in scans]
    # 1. The ledger first: if anything below fails, the scans are already unreadable
    #    (open_data_key refuses them) and the next re-apply finishes the job.
    ledger_append(
        {
            "kind": kind,
            "patient_reference": reference,
            "scan_ids": scan_ids,
            "scan_uids": scan_uids,
            "erased_at": now.isoformat(),
            "erased_by": username,
            "via": via,
            "reason_sha256": digest,
        }
    )
    folders, names, keys = _scan_files(scans)
    with transaction.atomic():
        _shred_rows(scans)
        if erase_patient:
            patient.delete()
        erasure = Erasure.objects.create(
            kind=kind,
            patient_reference=reference,
            scan_ids=scan_ids,
            scan_uids=scan_uids,
            erased_at=now,
            erased_by=actor if actor is not None and actor.is_authenticated else None,
            erased_by_username=username,
            via=via,
            reason_sha256=digest,
        )
        audit_record(
            action=Action.PATIENT_ERASED if kind == ErasureKind.PATIENT else Action.SCAN_ERASED,
            actor=actor,
            username="" if actor is not None else username,
            target_type="patient" if kind == ErasureKind.PATIENT else "scan",
            target_id=hospital_id if kind == ErasureKind.PATIENT else str(scan_ids[0]),
            details={
                "erasure": erasure.pk,
                "scans": scan_ids,
                "via": via,
                "reason": reason.strip(),
                "reason_sha256": digest,
                # The scan's patient, as its keyed reference (the id is mapped on write).
                **({"patient_id": hospital_id} if kind == ErasureKind.SCAN else {}),
            },
        )
    erasure.files_deleted = _files_delete(folders, names, keys)
    erasure.save(update_fields=["files_deleted"])
    logger.info(
        "erased %s %s: %d scans, %d files", kind, erasure.pk, len(scans), erasure.files_deleted
    )
    return erasure


def scan_erase(*, scan: Scan, actor: Any, reason: str, via: str) -> Erasure:
    """Erase one scan (its patient stays). The caller has checked who may and why."""
    scan = Scan.objects.select_related("patient").get(pk=scan.pk)
    return _erase(
        kind=ErasureKind.SCAN,
        patient=scan.patient,
        scans=[scan],
        actor=actor,
        reason=reason,
        via=via,
        erase_patient=False,
    )


def patient_erase(*, patient: Patient, actor: Any, reason: str, via: str) -> Erasure:
    """Erase a patient: every scan of theirs and then the record itself."""
    scans = list(Scan.objects.filter(patient=patient).order_by("pk"))
    return _erase(
        kind=ErasureKind.PATIENT,
        patient=patient,
        scans=scans,
        actor=actor,
        reason=reason,
        via=via,
        erase_patient=True,
    )


def erasures_reapply(*, via: str = VIA_RESTORE) -> int:
    """Apply the ledger to a database that may predate some of it (a restored backup): every
    scan it names is shredded again and its files deleted, every erased patient's record
    (found by its keyed reference) deleted, and each missing tombstone written back, audited
    as `via`. Returns how many erasures had to be applied again. Idempotent."""
    applied = 0
    for entry in ledger_entries():
        uids = [str(uid) for uid in entry.get("scan_uids", [])]
        patients: list[Patient] = []
        if entry.get("kind") == ErasureKind.PATIENT and entry.get("patient_reference"):
            reference = entry["patient_reference"]
            patients = [
                p for p in Patient.objects.only("id") if patient_reference(p.id) == reference
            ]
        scans = list(Scan.objects.filter(Q(uid__in=uids) | Q(patient__in=[p.pk for p in patients])))
        erased_at = parse_datetime(str(entry.get("erased_at") or ""))
        same = Erasure.objects.filter(kind=entry.get("kind", ""), scan_uids=uids)
        tombstone = (same.filter(erased_at=erased_at) if erased_at else same).exists()
        if not scans and not patients and tombstone:
            continue
        folders, names, keys = _scan_files(scans)
        with transaction.atomic():
            _shred_rows(scans)
            for patient in patients:
                patient.delete()
            if not tombstone:
                Erasure.objects.create(
                    kind=entry.get("kind", ErasureKind.SCAN),
                    patient_reference=entry.get("patient_reference", ""),
                    scan_ids=entry.get("scan_ids", []),
                    scan_uids=uids,
                    erased_at=erased_at or timezone.now(),
                    erased_by_username=str(entry.get("erased_by", "")),
                    via=str(entry.get("via", "")),
                    reason_sha256=str(entry.get("reason_sha256", "")),
                )
            audit_record(
                action=(
                    Action.PATIENT_ERASED
                    if entry.get("kind") == ErasureKind.PATIENT
                    else Action.SCAN_ERASED
                ),
                username=f"system ({via})",
                target_type="erasure",
                target_id=str(entry.get("patient_reference", "")),
                details={
                    "via": via,
                    "scans": entry.get("scan_ids", []),
                    "erased_at": entry.get("erased_at"),
                    "erased_by": entry.get("erased_by"),
                    "reason_sha256": entry.get("reason_sha256"),
                },
            )
        _files_delete(folders, names, keys)
        # Files of erased scans that a restore may have put back without their rows.
        for uid in uids:
            storage_delete_tree(f"scans/{uid}")
        applied += 1
    return applied


def retention_cutoff(now: datetime | None = None) -> datetime | None:
    days = getattr(settings, "MEDIMG_RETENTION_DAYS", None)
    if days is None:
        return None
    return (now or timezone.now()) - timedelta(days=days)


def retention_erase_expired(*, now: datetime | None = None) -> list[Erasure]:
    """Erase every completed scan created before MEDIMG_RETENTION_DAYS ago (none when it is
    not set), one by one, each audited with the system as actor."""
    cutoff = retention_cutoff(now)
    if cutoff is None:
        return []
    days = settings.MEDIMG_RETENTION_DAYS
    expired = Scan.objects.filter(status=ScanStatus.COMPLETED, created_at__lt=cutoff)
    done = []
    for scan in expired.order_by("pk"):  # Read whole first: the loop deletes rows.
        done.append(
            scan_erase(
                scan=scan,
                actor=None,
                reason=f"retention: completed scans are kept {days} days",
                via=VIA_RETENTION,
            )
        )
    return done
