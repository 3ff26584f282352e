"""Compute QC statistics (engine.pixels.qc) for completed scans that have none.

    python manage.py qc_statistics [--all]

One line per scan: `<id> ok` or `<id> failed: <error>`; exit status 1 if any failed.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from engine.errors import CryptoError
from imaging.services.qc import scan_qc_refresh, scans_missing_qc


class Command(BaseCommand):
    help = "Compute QC statistics for completed scans without them (--all: every scan)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--all", action="store_true", help="recompute every completed scan")

    def handle(self, *args: Any, **options: Any) -> None:
        failed = 0
        done = 0
        for scan in scans_missing_qc(everything=options["all"]).iterator():
            try:
                scan_qc_refresh(scan=scan)
            except (CryptoError, OSError, ValueError) as exc:
                failed += 1
                self.stdout.write(f"{scan.pk} failed: {type(exc).__name__}")
                continue
            done += 1
            self.stdout.write(f"{scan.pk} ok")
        self.stdout.write(f"{done} scans updated, {failed} failed")
        if failed:
            raise CommandError(f"{failed} scans could not be measured")
