"""`manage.py audit_export --since YYYY-MM-DD --until YYYY-MM-DD --out FILE`."""

from __future__ import annotations

import os
import shutil
from argparse import ArgumentParser
from datetime import date
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.services import audit_export


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{text!r} is not a date (YYYY-MM-DD)") from None


class Command(BaseCommand):
    help = (
        "Write the audit events of whole UTC days [since, until] as signed JSON Lines. "
        "Check the file anywhere with `audit_verify --export FILE`."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--since", metavar="YYYY-MM-DD", help="first day (default: the start)")
        parser.add_argument("--until", metavar="YYYY-MM-DD", help="last day (default: today)")
        parser.add_argument("--out", metavar="FILE", required=True, help="where to write it")

    def handle(self, *args: Any, **options: Any) -> None:
        since = _day(options["since"]) if options["since"] else None
        until = _day(options["until"]) if options["until"] else None
        if since and until and since > until:
            raise CommandError("--since is after --until")
        out = Path(options["out"])
        export = audit_export(since=since, until=until, via="manage.py audit_export")
        # Written beside the target and renamed: a reader never sees half an export.
        partial = out.with_name(out.name + ".partial")
        try:
            with export.file, partial.open("wb") as target:
                shutil.copyfileobj(export.file, target)
                target.flush()
                os.fsync(target.fileno())
            partial.replace(out)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise CommandError(f"cannot write {out}: {exc}") from exc
        self.stdout.write(f"Exported {export.count} events to {out} (sha256 {export.sha256})")
