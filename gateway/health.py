"""The gateway's health, for admins: listeners, associations, forwarding queue and failures.

    heartbeat_beat(*, name, tls=False) -> None        # the listener process, every interval
    heartbeat_stop(*, name) -> None                   # the listener process, on a clean stop
    heartbeat_start(*, name, tls=False, interval=HEARTBEAT_SECONDS) -> threading.Event
    gateway_health(*, now=None) -> dict               # the statistics page and admin list

No patient data: a listener is a machine, an association names the calling AE title and
address, a send names its destination and the scan by id, an error is a status or an
exception class.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from audit.models import Action, AuditEvent, Outcome
from gateway.models import ForwardDestination, ForwardSend, ListenerHeartbeat, SendStatus

logger = logging.getLogger(__name__)

# How often a listener writes its heartbeat; three missed beats and it counts as down.
HEARTBEAT_SECONDS = 30
DOWN_AFTER = 3 * HEARTBEAT_SECONDS

WAITING = [SendStatus.PENDING, SendStatus.RETRYING, SendStatus.SENDING]


def heartbeat_beat(*, name: str, tls: bool = False) -> None:
    now = timezone.now()
    updated = ListenerHeartbeat.objects.filter(name=name, stopped_at=None).update(
        beat_at=now, pid=os.getpid()
    )
    if not updated:
        ListenerHeartbeat.objects.update_or_create(
            name=name,
            defaults={
                "hostname": socket.gethostname()[:255],
                "pid": os.getpid(),
                "tls": tls,
                "started_at": now,
                "beat_at": now,
                "stopped_at": None,
            },
        )


def heartbeat_stop(*, name: str) -> None:
    ListenerHeartbeat.objects.filter(name=name).update(stopped_at=timezone.now())


def heartbeat_start(
    *, name: str, tls: bool = False, interval: float = HEARTBEAT_SECONDS
) -> threading.Event:
    """Beat now and then every `interval` seconds from a daemon thread until the returned
    event is set. A failed beat (the database away for a moment) is logged and retried at
    the next interval: the listener keeps serving."""
    heartbeat_beat(name=name, tls=tls)
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            close_old_connections()
            try:
                heartbeat_beat(name=name, tls=tls)
            except DatabaseError:
                logger.exception("the listener heartbeat could not be written")
        connection.close()

    threading.Thread(target=run, name="dicom-listener-heartbeat", daemon=True).start()
    return stop


def _listeners(now: datetime) -> list[dict[str, Any]]:
    rows = []
    for beat in ListenerHeartbeat.objects.all():
        if beat.stopped_at is not None:
            state = "stopped"
        elif beat.beat_at >= now - timedelta(seconds=DOWN_AFTER):
            state = "up"
        else:
            state = "down"
        rows.append(
            {
                "name": beat.name,
                "hostname": beat.hostname,
                "tls": beat.tls,
                "state": state,
                "beat_at": beat.beat_at,
                "started_at": beat.started_at,
                "stopped_at": beat.stopped_at,
            }
        )
    return rows


def _last_association() -> dict[str, Any] | None:
    event = AuditEvent.objects.filter(action=Action.DICOM_ASSOCIATION).order_by("-sequence").first()
    if event is None:
        return None
    details = event.details if isinstance(event.details, dict) else {}
    return {
        "at": event.created_at,
        "calling_ae": str(details.get("calling_ae", "")),
        "address": str(details.get("address", "")),
        "accepted": event.outcome == Outcome.SUCCESS,
    }


def _last_failure() -> dict[str, Any] | None:
    """The newest send that failed for good, else the newest try that failed and waits."""
    for statuses in ([SendStatus.FAILED], [SendStatus.RETRYING]):
        send = (
            ForwardSend.objects.filter(status__in=statuses)
            .exclude(last_error="")
            .select_related("destination")
            .order_by("-updated_at", "-id")
            .first()
        )
        if send is not None:
            return {
                "at": send.updated_at,
                "error": send.last_error,
                "destination": send.destination.name,
                "scan_id": send.scan_id,
                "final": send.status == SendStatus.FAILED,
            }
    return None


def gateway_health(*, now: datetime | None = None) -> dict[str, Any]:
    """Listeners (up, down or stopped), the last association (accepted or rejected), sends
    waiting, failed and sent, and the last error."""
    now = now or timezone.now()
    listeners = _listeners(now)
    sends = ForwardSend.objects
    return {
        "listeners": listeners,
        "listeners_up": sum(1 for row in listeners if row["state"] == "up"),
        "last_association": _last_association(),
        "queued": sends.filter(status__in=WAITING).count(),
        "retrying": sends.filter(status=SendStatus.RETRYING).count(),
        "failed": sends.filter(status=SendStatus.FAILED).count(),
        "sent": sends.filter(status=SendStatus.SENT).count(),
        "last_failure": _last_failure(),
        "destinations": ForwardDestination.objects.filter(enabled=True).count(),
        "heartbeat_seconds": HEARTBEAT_SECONDS,
        "down_after_seconds": DOWN_AFTER,
    }
