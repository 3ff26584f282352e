"""`manage.py audit_public_key`: the hex Ed25519 key a third party checks exports with."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from audit.chain import public_key_hex


class Command(BaseCommand):
    help = "Print this installation's audit-export public key (hex), for `--public-key`."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(public_key_hex())
