"""`manage.py backup --out DIR`: an encrypted, consistent backup (medimg/management/backups.py)."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from medimg.management.backups import BackupError, create_backup


class Command(BaseCommand):
    help = (
        "Write an encrypted backup into DIR (new or empty): the database (SQLite online backup "
        "or pg_dump -Fc), every stored file, the signed audit export, and a manifest with "
        "SHA-256 sums. Never the KEKs: keep them, and MEDIMG_BACKUP_KEY, apart "
        "(docs/operations.md)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--out", metavar="DIR", required=True, help="where to write it")

    def handle(self, *args: Any, **options: Any) -> None:
        out = Path(options["out"])
        try:
            manifest = create_backup(out)
        except (BackupError, OSError) as exc:
            raise CommandError(f"backup failed: {exc}") from exc
        media = [entry for entry in manifest["files"] if entry["kind"] == "media"]
        size = sum(entry["size"] for entry in manifest["files"])
        self.stdout.write(
            f"Backup written to {out}: {manifest['engine']} database, {len(media)} stored files, "
            f"{manifest['audit']['count']} audit events, {size} bytes before encryption. "
            f"Restoring needs the backup key (id {manifest['backup_key_id']}) and the KEKs "
            f"{', '.join(manifest['kek_ids_needed'])}."
        )
