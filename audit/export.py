"""The signed export: JSON Lines that anyone with the public key can check offline.

Format (`medimg-audit-export/v2`): one event per line in canonical form (the fields the hash
covers, plus the hash), then one last line `{"signature": {...}}`. The signature is Ed25519
over a domain string and the canonical JSON of the signature object without `value`; that
object holds the SHA-256 of every byte before it, the range and the counts, so a flipped
byte, a dropped line or a line moved in from another export all fail. No ORM here.

v2 adds pseudonymised lines. Admins see no patient identifiers, and events written before
pseudonyms (audit.pseudonyms) hold hospital ids or clear search terms: such an event is
exported with its identifiers mapped (the patient reference, the keyed hash of the search
term) and the extra key `"pseudonymised": true`. Its sequence, prev_hash and hash are the
stored ones, so the links are checked as for any line, but its hash covers the stored values,
which the file does not hold: for these lines the Ed25519 signature, not the entry hash,
vouches for the content. The signature counts them (`pseudonymised`). The full check of the
stored values is `manage.py audit_verify` against the database. v1 files (no such lines) are
still verified.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.chain import (
    EXPORTED_FIELDS,
    canonical_json,
    canonical_record,
    export_line,
    format_time,
    public_key_hex,
)
from audit.verification import ChainReport, ChainWalker

EXPORT_FORMAT = "medimg-audit-export/v2"
READABLE_FORMATS = ("medimg-audit-export/v1", EXPORT_FORMAT)
SHOWN_KEY = "pseudonymised"
SIGNATURE_DOMAIN = b"medimg-audit-export:v1\n"


class ExportReason:
    MALFORMED = "malformed"
    SIGNATURE_MISSING = "signature_missing"
    SIGNATURE_INVALID = "signature_invalid"
    WRONG_KEY = "wrong_key"
    CONTENT_MISMATCH = "content_mismatch"


def write_export(
    events: Iterable[Mapping[str, Any]],
    out: IO[bytes],
    *,
    key: Ed25519PrivateKey,
    since: str | None,
    until: str | None,
    exported_at: datetime,
) -> dict[str, Any]:
    """Write events (already in sequence order) and the signature line; return the signature."""
    digest = hashlib.sha256()
    count = 0
    first_sequence: int | None = None
    last_sequence: int | None = None
    shown = 0
    for event in events:
        if event.get(SHOWN_KEY):
            line = canonical_json(
                {**canonical_record(dict(event), EXPORTED_FIELDS), SHOWN_KEY: True}
            )
            line += b"\n"
            shown += 1
        else:
            line = export_line(dict(event))
        out.write(line)
        digest.update(line)
        count += 1
        if first_sequence is None:
            first_sequence = int(event["sequence"])
        last_sequence = int(event["sequence"])
    meta: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "algorithm": "Ed25519",
        "public_key": public_key_hex(key.public_key()),
        "exported_at": format_time(exported_at),
        "since": since,
        "until": until,
        "count": count,
        "pseudonymised": shown,
        "first_sequence": first_sequence,
        "last_sequence": last_sequence,
        "body_sha256": digest.hexdigest(),
    }
    signature = {**meta, "value": key.sign(SIGNATURE_DOMAIN + canonical_json(meta)).hex()}
    out.write(canonical_json({"signature": signature}) + b"\n")
    return signature


def public_key_from_hex(text: str) -> Ed25519PublicKey:
    raw = bytes.fromhex(text.strip())
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes (64 hex digits)")
    return Ed25519PublicKey.from_public_bytes(raw)


def _fail(
    walker: ChainWalker, reason: str, message: str, sequence: int | None = None
) -> ChainReport:
    return ChainReport(
        ok=False, events=walker.count, first_bad=sequence, reason=reason, message=message
    )


def _check_event_line(
    walker: ChainWalker, line: bytes, number: int, shown: list[int]
) -> ChainReport | None:
    try:
        event = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        event = None
    is_shown = isinstance(event, dict) and event.pop(SHOWN_KEY, None) is True
    if not isinstance(event, dict) or set(event) != set(EXPORTED_FIELDS):
        return _fail(
            walker,
            ExportReason.MALFORMED,
            f"line {number} is not an audit event"
            + (f" (expected sequence {walker.expected_sequence})" if walker.count else ""),
            walker.expected_sequence if walker.count else None,
        )
    if not isinstance(event["sequence"], int):
        return _fail(walker, ExportReason.MALFORMED, f"line {number} has no integer sequence")
    if is_shown:
        shown.append(int(event["sequence"]))
    return walker.feed(event, shown=is_shown)


def _check_signature(
    walker: ChainWalker,
    line: bytes | None,
    body_sha256: str,
    public_key: Ed25519PublicKey,
    shown: list[int],
) -> ChainReport:
    try:
        signature = json.loads(line) if line is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        signature = None
    if not isinstance(signature, dict) or not isinstance(signature.get("signature"), dict):
        return _fail(walker, ExportReason.SIGNATURE_MISSING, "the last line is not a signature")
    meta = dict(signature["signature"])
    value = meta.pop("value", None)
    if meta.get("format") not in READABLE_FORMATS or meta.get("algorithm") != "Ed25519":
        return _fail(walker, ExportReason.MALFORMED, "unknown export format or algorithm")
    if meta.get("public_key") != public_key_hex(public_key):
        return _fail(
            walker,
            ExportReason.WRONG_KEY,
            "the export is signed by another key than the one it is checked against",
        )
    try:
        public_key.verify(bytes.fromhex(str(value)), SIGNATURE_DOMAIN + canonical_json(meta))
    except (InvalidSignature, ValueError):
        return _fail(walker, ExportReason.SIGNATURE_INVALID, "the signature does not verify")
    # The signature is good, so the signed description can be trusted; the events must match it.
    if meta.get("body_sha256") != body_sha256:
        return _fail(
            walker, ExportReason.CONTENT_MISMATCH, "the events are not the ones that were signed"
        )
    expected = walker.expected_sequence
    first = expected - walker.count if walker.count and expected is not None else None
    if (meta.get("count"), meta.get("first_sequence"), meta.get("last_sequence")) != (
        walker.count,
        first,
        walker.last_sequence if walker.count else None,
    ):
        return _fail(
            walker,
            ExportReason.CONTENT_MISMATCH,
            "the event count or range differs from the signed one",
        )
    if meta.get("format") == EXPORT_FORMAT and meta.get("pseudonymised") != len(shown):
        return _fail(
            walker,
            ExportReason.CONTENT_MISMATCH,
            "the number of pseudonymised events differs from the signed one",
        )
    if shown and meta.get("format") != EXPORT_FORMAT:
        return _fail(walker, ExportReason.MALFORMED, "a v1 export has pseudonymised lines")
    message = ""
    if shown:
        message = (
            f"{len(shown)} events are shown with pseudonyms in place of the identifiers they "
            "were written with: their links and the signature are checked, their own hashes "
            "cover the stored values (check those with audit_verify against the database)"
        )
    return ChainReport(ok=True, events=walker.count, message=message)


def verify_export(source: IO[bytes], *, public_key: Ed25519PublicKey) -> ChainReport:
    """Check an export file offline: the links inside it, then its signature."""
    walker = ChainWalker(start_sequence=None, start_prev_hash=None)
    digest = hashlib.sha256()
    pending: bytes | None = None
    number = 0
    shown: list[int] = []
    # The signature is the last line, known only at the end: hold each line back by one.
    for line in source:
        if pending is not None:
            number += 1
            failure = _check_event_line(walker, pending, number, shown)
            if failure is not None:
                return failure
            digest.update(pending)
        pending = line
    return _check_signature(walker, pending, digest.hexdigest(), public_key, shown)
