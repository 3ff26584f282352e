"""`manage.py erase --patient REF | --scan ID --reason TEXT`: erasure by crypto-shredding, for
operators (imaging.jobs.erasure). Also `--reapply` (the erasure ledger applied again, as
`restore_backup` does by itself) and `--retention` (one run of the retention task now)."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from imaging.jobs.erasure import (
    erasures_reapply,
    patient_erase,
    retention_erase_expired,
    scan_erase,
)
from imaging.models import ErasureKind
from imaging.services.erasure import erasure_reason_check, erasure_target

VIA_COMMAND = "manage.py erase"


class Command(BaseCommand):
    help = (
        "Erase a patient (every scan and the record) or one scan for good: the data keys are "
        "destroyed, the files deleted, the rows replaced by a tombstone, and the erasure is "
        "written to the ledger (MEDIMG_ERASURE_LEDGER) so that no restored backup brings it "
        "back. Audited with the operator's name. There is no undo."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--patient", metavar="REF", help="hospital id or audit reference")
        target.add_argument("--scan", metavar="ID", help="scan number")
        target.add_argument(
            "--reapply", action="store_true", help="apply the erasure ledger to this database"
        )
        target.add_argument(
            "--retention",
            action="store_true",
            help="erase completed scans older than MEDIMG_RETENTION_DAYS now",
        )
        parser.add_argument("--reason", default="", help="why (kept in the audit log)")
        parser.add_argument(
            "--operator", default="", help="who runs it (kept in the audit log; default: operator)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["reapply"]:
            count = erasures_reapply(via="manage.py erase --reapply")
            self.stdout.write(f"Applied {count} erasure(s) from the ledger again.")
            return
        if options["retention"]:
            done = retention_erase_expired()
            self.stdout.write(f"Erased {len(done)} scan(s) past the retention period.")
            return
        kind = ErasureKind.PATIENT if options["patient"] else ErasureKind.SCAN
        try:
            patient, scan = erasure_target(
                kind=kind, target=options["patient"] or options["scan"] or ""
            )
            reason = erasure_reason_check(options["reason"], patient=patient)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        operator = (options["operator"] or "operator").strip()[:60]
        via = f"{VIA_COMMAND} by {operator}"
        if scan is not None:
            erasure = scan_erase(scan=scan, actor=None, reason=reason, via=via)
        else:
            erasure = patient_erase(patient=patient, actor=None, reason=reason, via=via)
        self.stdout.write(
            f"Erased {erasure.kind} (reference {erasure.patient_reference}): "
            f"{len(erasure.scan_ids)} scan(s), {erasure.files_deleted} file(s) deleted; "
            f"tombstone {erasure.pk}."
        )
