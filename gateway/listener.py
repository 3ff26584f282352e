"""The DICOM listener: a pynetdicom AE answering C-ECHO and C-STORE.

    listener_ae(*, ae_title) -> AE                     # contexts and settings, not started
    listener_start(*, host, port, ae_title, ssl_context=None, block=False) -> server
    (block=True serves until interrupted: manage.py dicom_listener)

Every storage SOP class is accepted in the common transfer syntaxes (implicit and explicit VR
little endian, explicit big endian, deflate, JPEG baseline/extended/lossless, JPEG-LS,
JPEG 2000, RLE). An association is accepted only from an enabled DicomPeer whose AE title and
address match (gateway.models); anyone else gets A-ASSOCIATE-RJ "calling AE title not
recognised". Each association (accepted or rejected) and each instance is audited. Each
instance goes to gateway.receive.instance_receive, which hands it to the upload service.

pynetdicom runs each association in its own thread: the thread's database connection is
closed when the connection closes.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
from contextlib import nullcontext
from typing import Any

from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from audit.models import Outcome
from audit.services import audit_record
from gateway.models import DicomPeer
from gateway.receive import (
    ACTION_ASSOCIATION,
    STATUS_SUCCESS,
    STATUS_UNABLE_TO_PROCESS,
    Refused,
    instance_receive,
)

logger = logging.getLogger(__name__)

TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]
# SQLite takes one writer at a time: the associations' stores take turns in this process
# instead of meeting "database is locked" (PostgreSQL stores them side by side).
_SQLITE_WRITER = threading.Lock()
# The peer of an accepted association, kept on the pynetdicom Association object.
_PEER_ATTRIBUTE = "medimg_peer"


def _addresses(host: str) -> set[str]:
    try:
        ipaddress.ip_address(host)
        return {host}
    except ValueError:
        pass
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return set()


def peer_for(*, ae_title: str, address: str) -> DicomPeer | None:
    """The enabled peer with this calling AE title whose host is `address` (or resolves to
    it, or is "*"); None when there is none."""
    for peer in DicomPeer.objects.filter(enabled=True, ae_title=ae_title.strip()):
        if peer.host == "*" or address in _addresses(peer.host):
            return peer
    return None


def _db_turn() -> Any:
    return _SQLITE_WRITER if connection.vendor == "sqlite" else nullcontext()


def _source(event: Any) -> dict[str, Any]:
    assoc = event.assoc
    # Until the association is negotiated, the titles are only in the request primitive.
    request = getattr(assoc.requestor, "primitive", None)
    calling = getattr(request, "calling_ae_title", None) or assoc.requestor.ae_title
    called = getattr(request, "called_ae_title", None) or assoc.acceptor.ae_title
    return {
        "protocol": "dimse",
        "calling_ae": str(calling).strip(),
        "called_ae": str(called).strip(),
        "address": assoc.requestor.address,
    }


def _peer_accept(source: dict[str, Any]) -> DicomPeer | None:
    """The peer to accept, audited either way; None to reject."""
    peer = peer_for(ae_title=source["calling_ae"], address=source["address"])
    if peer is not None and peer.upload_user_id is None:
        peer = None  # Nowhere to file its instances.
    audit_record(
        action=ACTION_ASSOCIATION,
        actor=peer.upload_user if peer is not None else None,
        username="" if peer is not None else f"dicom:{source['calling_ae']}"[:150],
        outcome=Outcome.SUCCESS if peer is not None else Outcome.REFUSED,
        target_type="dicompeer",
        target_id=peer.pk if peer is not None else "",
        details={**source, "result": "accepted" if peer is not None else "rejected"},
    )
    if peer is not None:
        DicomPeer.objects.filter(pk=peer.pk).update(last_association_at=timezone.now())
    return peer


def _on_requested(event: Any) -> None:
    """Accept the association only from a configured peer (audited either way)."""
    source = _source(event)
    try:
        with _db_turn():
            peer = _peer_accept(source)
    except DatabaseError:
        logger.exception("checking the calling peer failed")
        peer = None
    if peer is None:
        logger.warning(
            "association from %s@%s rejected: not a configured peer",
            source["calling_ae"],
            source["address"],
        )
        # Rejected permanent, by the service user: calling AE title not recognised.
        event.assoc.acse.send_reject(0x01, 0x01, 0x03)
        event.assoc.kill()
        return
    setattr(event.assoc, _PEER_ATTRIBUTE, peer)


def _on_echo(event: Any) -> int:
    return STATUS_SUCCESS


def _on_store(event: Any) -> int:
    peer: DicomPeer | None = getattr(event.assoc, _PEER_ATTRIBUTE, None)
    if peer is None:  # Not reached: unknown peers never get an association.
        return STATUS_UNABLE_TO_PROCESS
    close_old_connections()
    source = _source(event)
    source["peer"] = peer.pk
    source["transfer_syntax"] = str(event.context.transfer_syntax)
    try:
        data = event.encoded_dataset(include_meta=True)
    except Exception:  # noqa: BLE001 - a dataset we cannot even re-encode is refused
        logger.exception("reading a C-STORE dataset failed")
        return STATUS_UNABLE_TO_PROCESS
    try:
        with _db_turn():
            scan = instance_receive(
                data=data, uploaded_by=peer.upload_user, source=source, peer=peer
            )
    except Refused as refusal:
        logger.info("C-STORE from %s refused: %s", source["calling_ae"], refusal)
        return refusal.status
    except Exception:  # noqa: BLE001 - the peer gets a failure status, never a dropped link
        logger.exception("C-STORE from %s failed", source["calling_ae"])
        return STATUS_UNABLE_TO_PROCESS
    logger.info("C-STORE from %s stored as scan %s", source["calling_ae"], scan.pk)
    return STATUS_SUCCESS


def _on_closed(event: Any) -> None:
    connection.close()


HANDLERS = [
    (evt.EVT_REQUESTED, _on_requested),
    (evt.EVT_C_ECHO, _on_echo),
    (evt.EVT_C_STORE, _on_store),
    (evt.EVT_CONN_CLOSE, _on_closed),
]


def listener_ae(*, ae_title: str) -> AE:
    ae = AE(ae_title=ae_title)
    ae.require_called_aet = True
    ae.maximum_associations = 16
    ae.add_supported_context(Verification, TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
    return ae


def tls_context(*, cert: str, key: str, ca: str | None = None) -> ssl.SSLContext:
    """A server TLS context for DICOM TLS (PS3.15 B.1): with `ca`, peers must present a
    certificate it signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=cert, keyfile=key)
    context.verify_mode = ssl.CERT_REQUIRED if ca else ssl.CERT_NONE
    return context


def listener_start(
    *,
    host: str,
    port: int,
    ae_title: str,
    ssl_context: ssl.SSLContext | None = None,
    block: bool = False,
) -> Any:
    """Serve; with block=False returns the running server (call .shutdown() to stop it)."""
    ae = listener_ae(ae_title=ae_title)
    return ae.start_server(
        (host, port), block=block, evt_handlers=HANDLERS, ssl_context=ssl_context
    )
