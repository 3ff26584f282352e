"""Delete stored files that no scan points at (imaging.jobs.orphans).

    python manage.py sweep_orphans [--older-than SECONDS] [--dry-run]

Prints one JSON line: {"folders": [...], "files": N, "dry_run": bool}. Celery beat runs the
same sweep every IMAGING_ORPHAN_SWEEP_SECONDS (default hourly).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from imaging.jobs.orphans import orphans_sweep


class Command(BaseCommand):
    help = "Delete stored files that no scan points at (killed uploads and processing runs)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=int,
            default=None,
            help="seconds since the newest file of a folder (default IMAGING_ORPHAN_AFTER_SECONDS)",
        )
        parser.add_argument("--dry-run", action="store_true", help="list, delete nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        age = options["older_than"]
        if age is not None and age < 60:
            raise CommandError(
                "--older-than must be at least 60 seconds: uploads in flight write first"
            )
        result = orphans_sweep(age, dry_run=options["dry_run"])
        self.stdout.write(json.dumps({**result, "dry_run": options["dry_run"]}))
