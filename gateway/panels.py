"""The gateway's cards on pages it may not import (imaging.selectors.panels).

    scan_sends_panel(*, scan, user) -> Panel | None   # the scan page: this scan's forwards
    health_panel() -> Panel                           # the admin statistics page

Registered by gateway.apps.GatewayConfig.ready. Both read only: sends name their destination
by its admin-given name and kind (never its address), errors are statuses or exception
classes, never header values.
"""

from __future__ import annotations

from typing import Any

from gateway.forward import scan_forwardable
from gateway.health import gateway_health
from gateway.models import ForwardDestination, ForwardSend, SendStatus
from imaging.models import Scan, ScanFormat, ScanStatus
from imaging.selectors.panels import Panel

SCAN_TEMPLATE = "gateway/_scan_sends.html"
HEALTH_TEMPLATE = "gateway/_statistics_health.html"

# What each state means to the people reading the scan page.
STATE_TEXT = {
    SendStatus.PENDING: "Waiting to be sent",
    SendStatus.SENDING: "Being sent now",
    SendStatus.RETRYING: "Not sent yet: will try again",
    SendStatus.SENT: "Sent",
    SendStatus.FAILED: "Failed: no more tries",
}


def _waiting_for(scan: Scan) -> str:
    """Why a DICOM scan with no send rows has not been sent yet ("" when nothing holds it)."""
    if scan.status == ScanStatus.FAILED:
        return "Processing failed: nothing is sent."
    if scan.status != ScanStatus.COMPLETED:
        return "Sent once processing is done."
    if scan.needs_review and scan.reviewed_at is None:
        return "Held back until a technician confirms the review."
    return ""


def scan_sends_panel(*, scan: Scan, user: Any) -> Panel | None:
    """The scan's forwards: one row per destination. None for a JPEG/PNG, or when no
    destination is configured and nothing was ever sent."""
    if scan.format != ScanFormat.DICOM:
        return None
    sends = list(ForwardSend.objects.filter(scan=scan).select_related("destination").order_by("id"))
    destinations = ForwardDestination.objects.filter(enabled=True).count()
    if not sends and not destinations:
        return None
    rows = [
        {
            "destination": send.destination.name,
            "kind": send.destination.get_kind_display(),
            "status": send.status,
            "state": STATE_TEXT.get(SendStatus(send.status), send.status),
            "attempts": send.attempts,
            "last_error": send.last_error,
            "sent_at": send.sent_at,
            "next_attempt_at": send.next_attempt_at,
        }
        for send in sends
    ]
    waiting = "" if sends else _waiting_for(scan)
    if not sends and not waiting and scan_forwardable(scan):
        waiting = "Queued: the forwarder has not picked it up yet."
    return Panel(
        key="gateway-sends",
        title="Forwarding",
        template=SCAN_TEMPLATE,
        context={"rows": rows, "waiting": waiting, "destinations": destinations},
    )


def health_panel() -> Panel:
    return Panel(
        key="gateway-health",
        title="DICOM gateway",
        template=HEALTH_TEMPLATE,
        context=gateway_health(),
    )
