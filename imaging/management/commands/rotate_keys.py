"""Re-wrap every scan's data key under the current key-encryption key.

    python manage.py rotate_keys                 # to MEDIMG_KEK_CURRENT
    python manage.py rotate_keys --batch-size 200

Rotation procedure: add the new KEK to MEDIMG_KEKS and make it MEDIMG_KEK_CURRENT (the old one
stays listed), restart, run this command until it reports 0 failed and 0 left under other keys,
then remove the old KEK from MEDIMG_KEKS. Only the small wrapped keys change: region blobs and
stored files are bound to the data key, not to the KEK, and are not touched.

Each scan is re-wrapped in its own transaction with its row locked (select_for_update), so a
worker or a second run cannot interleave; a scan already under the current KEK is skipped, so
the command can be interrupted and run again. A scan whose key does not unwrap (its KEK is no
longer configured, or the row was tampered with) is counted as failed, left as it was, and the
command exits non-zero. The run is audited (`keys_rotated`) with its counts.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from audit.models import Action, Outcome
from audit.services import audit_record
from engine.errors import CryptoError
from imaging.models import Scan
from imaging.vault.keys import current_kek_id, rewrap_data_key


class Command(BaseCommand):
    help = "Re-wrap every scan's data key under the current KEK (MEDIMG_KEK_CURRENT)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size", type=int, default=500, help="Scan ids read per query (default 500)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size: int = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        target = current_kek_id()
        counts: Counter[str] = Counter()
        failed_ids: list[int] = []
        last_id = 0
        while True:
            # Only ids here; each row is re-read under its lock below.
            ids = list(
                Scan.objects.filter(pk__gt=last_id)
                .exclude(key_id=target)
                .order_by("pk")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                break
            last_id = ids[-1]
            for scan_id in ids:
                outcome = self._rotate_one(scan_id, target)
                counts[outcome] += 1
                if outcome == "failed":
                    failed_ids.append(scan_id)

        left = dict(Counter(Scan.objects.exclude(key_id=target).values_list("key_id", flat=True)))
        details = {
            "kek": target,
            "rotated": counts["rotated"],
            "already_current": counts["already_current"],
            "failed": counts["failed"],
            "failed_scan_ids": failed_ids[:100],
            "left_under_other_keks": left,
        }
        audit_record(
            action=Action.KEYS_ROTATED,
            outcome=Outcome.FAILURE if failed_ids else Outcome.SUCCESS,
            details=details,
        )
        self.stdout.write(
            f"KEK {target}: rotated {counts['rotated']}, already current "
            f"{counts['already_current']}, failed {counts['failed']}."
        )
        if left:
            summary = ", ".join(f"{kek}: {n}" for kek, n in sorted(left.items()))
            self.stdout.write(f"Scans still wrapped under other KEKs: {summary}.")
        else:
            self.stdout.write("Every scan is wrapped under the current KEK.")
        if failed_ids:
            shown = ", ".join(str(i) for i in failed_ids[:20])
            raise CommandError(
                f"{len(failed_ids)} scan(s) could not be re-wrapped (ids {shown}). Is every "
                "old KEK still in MEDIMG_KEKS? Nothing was changed for those scans."
            )

    def _rotate_one(self, scan_id: int, target: str) -> str:
        with transaction.atomic():
            scan = Scan.objects.select_for_update().filter(pk=scan_id).first()
            if scan is None:
                return "gone"  # Deleted since the batch was read: nothing to wrap.
            if scan.key_id == target:
                return "already_current"  # Rotated by a concurrent run.
            try:
                wrapped = rewrap_data_key(
                    bytes(scan.wrapped_key), scan_ref=str(scan.uid), kek_id=target
                )
            except CryptoError:
                return "failed"
            scan.wrapped_key = wrapped.blob
            scan.key_id = wrapped.kek_id
            scan.save(update_fields=["wrapped_key", "key_id"])
        return "rotated"
