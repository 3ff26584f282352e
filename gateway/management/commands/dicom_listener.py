"""`manage.py dicom_listener --host 0.0.0.0 --port 11112 --aet MEDIMG [--tls-cert --tls-key]`

The DICOM listener (gateway.listener) as a long-running process, like the Celery worker.
Peers from DICOM_PEERS are added first; the rest are managed in Django admin. While it runs
it writes a heartbeat every gateway.health.HEARTBEAT_SECONDS (the admin statistics page shows
it up or down); SIGTERM (systemd's stop) marks it stopped and ends it.
"""

from __future__ import annotations

import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from gateway.config import peers_seed
from gateway.health import heartbeat_start, heartbeat_stop
from gateway.listener import listener_start, tls_context


class Command(BaseCommand):
    help = "Receive DICOM (C-ECHO, C-STORE) from configured peers into the upload path."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=settings.DICOM_LISTENER_HOST)
        parser.add_argument("--port", type=int, default=settings.DICOM_LISTENER_PORT)
        parser.add_argument("--aet", default=settings.DICOM_AE_TITLE)
        parser.add_argument("--tls-cert", default="", help="PEM certificate: DICOM TLS")
        parser.add_argument("--tls-key", default="", help="PEM private key of --tls-cert")
        parser.add_argument(
            "--tls-ca", default="", help="PEM CA bundle: peers must present a certificate"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if bool(options["tls_cert"]) != bool(options["tls_key"]):
            raise CommandError("--tls-cert and --tls-key go together")
        context = None
        if options["tls_cert"]:
            context = tls_context(
                cert=options["tls_cert"], key=options["tls_key"], ca=options["tls_ca"] or None
            )
        peers = peers_seed()
        self.stdout.write(
            f"DICOM listener {options['aet']} on {options['host']}:{options['port']}"
            f"{' (TLS)' if context else ''}; {len(peers)} peer(s) from DICOM_PEERS"
        )
        name = f"{options['aet']}@{options['host']}:{options['port']}"
        beating = heartbeat_start(name=name, tls=context is not None)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            listener_start(
                host=options["host"],
                port=options["port"],
                ae_title=options["aet"],
                ssl_context=context,
                block=True,
            )
        except KeyboardInterrupt:
            pass
        finally:
            beating.set()
            heartbeat_stop(name=name)
            self.stdout.write("DICOM listener stopped")


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM ends the server like Ctrl-C, so the heartbeat is marked stopped."""
    raise KeyboardInterrupt
