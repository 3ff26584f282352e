"""`manage.py restore_backup DIR`: bring a wiped installation back from a backup."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from medimg.mail import alert_integrity_failure
from medimg.management.backups import (
    BackupError,
    BackupTampered,
    backup_key,
    installation_is_empty,
    read_manifest,
    restore_backup,
    verify_audit_export,
    verify_backup,
)


class Command(BaseCommand):
    help = (
        "Check every file of the backup in DIR (HMAC-signed manifest, SHA-256 sums, "
        "decryption, the audit export's signature), then replace the database and put every "
        "stored file back. Refuses an installation that holds data unless --force. Stop the "
        "web processes and workers first; run `migrate` and `audit_verify` after."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("directory", metavar="DIR")
        parser.add_argument(
            "--check",
            action="store_true",
            help="only check the backup (manifest, sums, decryption, audit export); change nothing",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="replace an installation that still holds users, audit events, scans or files",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        directory = Path(options["directory"])
        try:
            if options["check"]:
                key = backup_key()
                manifest = verify_backup(directory, key)
                report = verify_audit_export(directory, manifest, key)
                if not report.ok:
                    raise BackupTampered(f"the audit export does not verify: {report.message}")
                self.stdout.write(
                    f"OK: {len(manifest['files'])} files and {report.events} audit events "
                    f"check out (backup of {manifest['created_at']})"
                )
                return
            read_manifest(directory, backup_key())
            if not options["force"] and not installation_is_empty():
                raise CommandError(
                    "this installation holds data (users, audit events, scans or files); "
                    "restore into a wiped one, or give --force to replace it"
                )
            manifest = restore_backup(directory)
        except BackupTampered as exc:
            # Someone may have changed the backup: the alert address hears of it at once.
            alert_integrity_failure("backup", f"The backup in {directory} was refused: {exc}")
            raise CommandError(f"restore refused: {exc}") from exc
        except (BackupError, OSError) as exc:
            raise CommandError(f"restore refused: {exc}") from exc
        media = sum(1 for entry in manifest["files"] if entry["kind"] == "media")
        self.stdout.write(
            f"Restored the backup of {manifest['created_at']}: database and {media} stored "
            f"files. It needs the KEKs {', '.join(manifest['kek_ids_needed'])}. "
            "Now run `manage.py migrate` and `manage.py audit_verify`."
        )
