"""DICOM_PEERS and DICOM_FORWARD_TO: parsed, seeded once, never removing an admin's rows."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from gateway.config import destinations_seed, parse_address, peers_seed
from gateway.models import DestinationKind, DicomPeer, ForwardDestination


def test_addresses_are_parsed_and_bad_ones_refused() -> None:
    address = parse_address("CT01@10.1.2.3:104", port_required=True)
    assert (address.ae_title, address.host, address.port) == ("CT01", "10.1.2.3", 104)
    assert parse_address("PACS@pacs.local", port_required=False).port is None
    for bad in ("CT01", "@host:104", "A" * 17 + "@h:1", "CT@h:0", "CT@h:x"):
        with pytest.raises(ImproperlyConfigured):
            parse_address(bad, port_required=True)
    with pytest.raises(ImproperlyConfigured):
        parse_address("CT@host", port_required=True)


@pytest.mark.django_db
def test_settings_seed_peers_and_destinations_once(settings: Any, technician: Any) -> None:
    settings.DICOM_PEERS = "CT01@10.1.2.3, PACS@127.0.0.1:104"
    settings.DICOM_GATEWAY_USER = technician.username
    settings.DICOM_FORWARD_TO = "RESEARCH@10.2.0.5:104,https://pacs.example/dicom-web/studies"
    for _ in range(2):
        peers_seed()
        destinations_seed()
    assert sorted(DicomPeer.objects.values_list("ae_title", "host", "upload_user")) == [
        ("CT01", "10.1.2.3", technician.pk),
        ("PACS", "127.0.0.1", technician.pk),
    ]
    assert sorted(ForwardDestination.objects.values_list("kind", "ae_title", "port", "url")) == [
        (DestinationKind.DIMSE, "RESEARCH", 104, ""),
        (DestinationKind.STOW, "", None, "https://pacs.example/dicom-web/studies"),
    ]
    # An admin's choice stands: a disabled peer stays disabled.
    DicomPeer.objects.filter(ae_title="CT01").update(enabled=False)
    peers_seed()
    assert not DicomPeer.objects.get(ae_title="CT01").enabled


@pytest.mark.django_db
def test_an_unknown_gateway_user_is_a_configuration_error(settings: Any) -> None:
    settings.DICOM_PEERS = "CT01@10.1.2.3"
    settings.DICOM_GATEWAY_USER = "nobody-here"
    with pytest.raises(ImproperlyConfigured):
        peers_seed()
