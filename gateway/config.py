"""The gateway's settings, parsed, and the rows they seed.

    DICOM_PEERS       "AET@host:port,AET@host,..."  calling AE titles allowed to associate
    DICOM_FORWARD_TO  "AET@host:port,https://pacs/dicom-web/studies,..."  destinations
    DICOM_GATEWAY_USER  the technician account that seeded peers file instances as

Seeding adds what the settings name and never removes or disables a row: admins manage the
rest in Django admin.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured

from gateway.models import DestinationKind, DicomPeer, ForwardDestination

AE_TITLE_MAX = 16


@dataclass(frozen=True)
class Address:
    ae_title: str
    host: str
    port: int | None


def _ae_title(value: str, entry: str) -> str:
    title = value.strip()
    if not title or len(title) > AE_TITLE_MAX or not title.isascii() or "\\" in title:
        raise ImproperlyConfigured(f"bad AE title in {entry!r}: 1-16 ASCII characters")
    return title


def parse_address(entry: str, *, port_required: bool) -> Address:
    """`AET@host:port` (port optional for peers)."""
    title, at, rest = entry.strip().partition("@")
    if not at or not rest:
        raise ImproperlyConfigured(f"{entry!r} is not AET@host:port")
    host, colon, port_text = rest.rpartition(":")
    if not colon:
        host, port_text = rest, ""
    if not host:
        raise ImproperlyConfigured(f"{entry!r} has no host")
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ImproperlyConfigured(f"{entry!r} has a bad port")
        port = int(port_text)
    elif port_required:
        raise ImproperlyConfigured(f"{entry!r} needs a port")
    return Address(_ae_title(title, entry), host.strip(), port)


def _entries(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def peers_seed() -> list[DicomPeer]:
    """Create the DICOM_PEERS rows that do not exist yet (enabled, filed as
    DICOM_GATEWAY_USER when set)."""
    user = None
    username = getattr(settings, "DICOM_GATEWAY_USER", "") or ""
    if username:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise ImproperlyConfigured(f"DICOM_GATEWAY_USER {username!r} does not exist")
    peers = []
    for entry in _entries(getattr(settings, "DICOM_PEERS", "")):
        address = parse_address(entry, port_required=False)
        peer, created = DicomPeer.objects.get_or_create(
            ae_title=address.ae_title,
            host=address.host,
            defaults={"port": address.port, "upload_user": user, "description": "DICOM_PEERS"},
        )
        if not created and peer.upload_user_id is None and user is not None:
            peer.upload_user = user
            peer.save(update_fields=["upload_user"])
        peers.append(peer)
    return peers


def destinations_seed() -> list[ForwardDestination]:
    """Create the DICOM_FORWARD_TO rows that do not exist yet."""
    destinations = []
    for entry in _entries(getattr(settings, "DICOM_FORWARD_TO", "")):
        if entry.startswith(("http://", "https://")):
            destination, _ = ForwardDestination.objects.get_or_create(
                kind=DestinationKind.STOW,
                url=entry,
                defaults={"name": f"stow-{hashlib.sha256(entry.encode()).hexdigest()[:12]}"},
            )
        else:
            address = parse_address(entry, port_required=True)
            destination, _ = ForwardDestination.objects.get_or_create(
                kind=DestinationKind.DIMSE,
                ae_title=address.ae_title,
                host=address.host,
                port=address.port,
                defaults={"name": f"{address.ae_title}@{address.host}:{address.port}"[:64]},
            )
        destinations.append(destination)
    return destinations
