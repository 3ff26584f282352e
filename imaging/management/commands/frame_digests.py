"""Bind the stored frames of scans processed before frame digests existed
(imaging.vault.derivatives).

    python manage.py frame_digests

Such scans have no `Scan.frame_digests`, so their redacted and grid PNGs are read unchecked.
This computes the digests of the files as they are now (trust on first use: run it once, right
after the upgrade). One line per scan: `<id> bound` or `<id> failed: <error>`; exit status 1
if any failed. Scans that already have digests are left alone.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from engine.errors import CryptoError
from imaging.models import Scan, ScanStatus
from imaging.vault.derivatives import scan_frame_digests_backfill


class Command(BaseCommand):
    help = "Compute frame digests for completed scans stored before digests existed."

    def handle(self, *args: Any, **options: Any) -> None:
        bound = failed = 0
        legacy = Scan.objects.filter(status=ScanStatus.COMPLETED, frame_digests={})
        for scan_id in legacy.values_list("id", flat=True).iterator():
            try:
                if not scan_frame_digests_backfill(scan_id=scan_id):
                    continue
            except (CryptoError, OSError) as exc:
                failed += 1
                self.stdout.write(f"{scan_id} failed: {type(exc).__name__}")
                continue
            bound += 1
            self.stdout.write(f"{scan_id} bound")
        self.stdout.write(f"{bound} scans bound, {failed} failed")
        if failed:
            raise CommandError(f"{failed} scans could not be bound")
