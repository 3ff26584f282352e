"""`manage.py audit_verify [--export FILE [--public-key HEX]]`: exit 0 when intact, 1 when not."""

from __future__ import annotations

import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.chain import signing_key
from audit.export import public_key_from_hex, verify_export
from audit.selectors import audit_chain_verify
from audit.verification import ChainReport
from medimg.mail import alert_integrity_failure


class Command(BaseCommand):
    help = (
        "Check the audit chain (or, with --export, a signed export file, offline). "
        "Prints 'OK <n> events' and exits 0, or names the first bad sequence, mails the "
        "integrity alert (ALERT_EMAIL; not for --export) and exits 1."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--export", metavar="FILE", help="check this export file instead")
        parser.add_argument(
            "--public-key",
            metavar="HEX",
            help="Ed25519 public key to check the export against (default: this installation's)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["export"]:
            report = self._verify_export(Path(options["export"]), options["public_key"])
        else:
            if options["public_key"]:
                raise CommandError("--public-key only applies with --export")
            report = audit_chain_verify()
        if report.ok:
            self.stdout.write(f"OK {report.events} events")
            if report.message:
                self.stdout.write(f"Note: {report.message}")
            return
        where = f"first bad sequence {report.first_bad}: " if report.first_bad is not None else ""
        failure = (
            f"FAILED after {report.events} good events: {where}{report.message} [{report.reason}]"
        )
        self.stderr.write(failure)
        if not options["export"]:
            # The live chain is broken: the alert address hears of it, as from the daily check.
            alert_integrity_failure("audit chain", f"`manage.py audit_verify`: {failure}")
        sys.exit(1)

    def _verify_export(self, path: Path, public_key_hex: str | None) -> ChainReport:
        try:
            public_key = (
                public_key_from_hex(public_key_hex)
                if public_key_hex
                else signing_key().public_key()
            )
        except ValueError as exc:
            raise CommandError(f"--public-key: {exc}") from exc
        try:
            with path.open("rb") as source:
                return verify_export(source, public_key=public_key)
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc}") from exc
