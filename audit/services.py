"""Writing the audit log. `audit_record` is the only way an event is appended."""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import IO, Any
from urllib.parse import quote

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models, transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.ipv6 import clean_ipv6_address

from audit.chain import GENESIS_HASH, anchor_mac, entry_hash, signing_key
from audit.export import write_export
from audit.models import Action, AuditAnchor, AuditEvent, Outcome
from audit.pseudonyms import (
    MARK_KEY,
    MARK_VERSION,
    PATH_KEY,
    PATIENT_ID_KEYS,
    PATIENT_TARGET,
    SEARCH_HASH_KEY,
    SEARCH_KEY,
    path_pseudonymised,
    patient_reference,
    search_term_hash,
)
from audit.selectors import (
    audit_event_list,
    chain_events,
    chain_snapshot,
    events_for_export,
    sequence_range,
)

# Enough to tell browsers and clients apart; anything longer is the sender's padding, kept in
# a log that is never pruned (the column holds 512 for older rows).
USER_AGENT_MAX = 200


def client_ip(request: HttpRequest | None) -> str | None:
    if request is None:
        return None
    # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a trusted proxy
    # rewrites REMOTE_ADDR (configure the proxy, not this function).
    raw = (request.META.get("REMOTE_ADDR") or "").strip()
    try:
        if ":" in raw:
            # Normalised exactly as the model field stores it, or the stored row would not
            # match its hash ("0:0::1" is stored as "::1").
            return clean_ipv6_address(raw)
        return str(ipaddress.IPv4Address(raw))
    except (ValueError, ValidationError):
        return None


def _text(value: str, limit: int) -> str:
    # PostgreSQL text cannot hold NUL; a header or a typed username must not break auditing.
    return value.replace("\x00", "\ufffd")[:limit]


def _stable_numbers(value: Any) -> Any:
    # jsonb gives 1e+20 back as 100000000000000000000 and refuses NaN: the row would no longer
    # match its hash. Such floats are kept as their text; ordinary ones round-trip exactly.
    if isinstance(value, float) and (not math.isfinite(value) or "e" in repr(value)):
        return repr(value)
    if isinstance(value, dict):
        return {key: _stable_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_stable_numbers(item) for item in value]
    return value


def _jsonable(details: dict[str, Any] | None) -> dict[str, Any]:
    # Round-trip through JSON so the hashed value is exactly what the database gives back
    # (jsonb refuses \u0000, so it is replaced like in plain text).
    text = json.dumps(details or {}, default=str, sort_keys=True).replace("\\u0000", "\\ufffd")
    return _stable_numbers(json.loads(text))


def _without_identifiers(
    target_type: str, target_id: str, details: dict[str, Any] | None
) -> tuple[str, dict[str, Any] | None]:
    """Admins read the log: a patient is written as its keyed reference, never its hospital id,
    and a search term as its keyed hash (audit.pseudonyms). Such events are marked, so that a
    reader knows they need no mapping (events from before hold the ids; see pseudonyms)."""
    marked = False
    if target_type == PATIENT_TARGET and target_id:
        target_id = patient_reference(target_id)
        marked = True
    if details:
        details = dict(details)
        for key in PATIENT_ID_KEYS:
            if details.get(key) not in (None, ""):
                details[key] = patient_reference(str(details[key]))
                marked = True
        if SEARCH_KEY in details:
            term = details.pop(SEARCH_KEY)
            details[SEARCH_HASH_KEY] = search_term_hash(str(term or ""))
            marked = True
        if isinstance(details.get(PATH_KEY), str):
            path = path_pseudonymised(details[PATH_KEY])
            if path != details[PATH_KEY]:
                details[PATH_KEY] = path
                marked = True
    if marked:
        details = {**(details or {}), MARK_KEY: MARK_VERSION}
    return target_id, details


# Functions that add to the details of an event by a signed-in user (see audit_context_register).
_context_providers: list[Callable[..., dict[str, Any] | None]] = []


def audit_context_register(provider: Callable[..., dict[str, Any] | None]) -> None:
    """Add `provider(actor=, action=, target=, target_type=, target_id=, details=, request=)`
    to every event with a signed-in actor; what it returns is merged into the details (so the hash
    covers it).

    The audit log sits below the apps that know what a patient is: patients registers the
    emergency-access flag here (patients.emergency), so every read of patient data recorded
    through audit_record carries it, whichever app records it.
    """
    if provider not in _context_providers:
        _context_providers.append(provider)


def audit_record(
    *,
    action: Action | str,
    actor: Any = None,
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str | int = "",
    outcome: Outcome | str = Outcome.SUCCESS,
    request: HttpRequest | None = None,
    details: dict[str, Any] | None = None,
    username: str = "",
) -> AuditEvent:
    """Append one event to the chain.

    `actor` is a user or None (anonymous); `username` names an anonymous actor such as the
    name typed into a failed login. Runs inside the caller's transaction when there is one,
    so an event is committed exactly when the action it describes is.
    """
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    if target is not None:
        target_type = target_type or target._meta.model_name or ""
        target_id = target_id or str(target.pk)
    if actor is not None:
        for provider in _context_providers:
            extra = provider(
                actor=actor,
                action=str(action),
                target=target,
                target_type=target_type,
                target_id=str(target_id),
                details=details,
                request=request,
            )
            if extra:
                details = {**(details or {}), **extra}
    target_id, details = _without_identifiers(target_type, str(target_id), details)
    user_agent = request.META.get("HTTP_USER_AGENT", "") if request is not None else ""

    fields: dict[str, Any] = {
        "actor_id": actor.pk if actor is not None else None,
        "actor_username": _text(actor.get_username() if actor is not None else username, 150),
        "role": getattr(actor, "role", "") if actor is not None else "",
        "action": str(action),
        "target_type": _text(target_type, 32),
        "target_id": _text(str(target_id), 128),
        "outcome": str(outcome),
        "ip": client_ip(request),
        "user_agent": _text(user_agent, USER_AGENT_MAX),
        "details": _jsonable(details),
    }
    return append_entry(fields)


# The key in `details` that marks a summarised routine view (audit_record_routine).
ROUTINE_KEY = "routine"


def _routine_recorded(
    actor: Any, action: str, target_type: str, target_id: str, kind: str, since: Any
) -> bool:
    return AuditEvent.objects.filter(
        actor_id=actor.pk,
        action=action,
        target_type=target_type,
        target_id=target_id,
        created_at__gte=since,
        **{f"details__{ROUTINE_KEY}": kind},
    ).exists()


def audit_record_routine(
    *,
    action: Action | str,
    actor: Any,
    target_type: str,
    target_id: str | int,
    kind: str,
    request: HttpRequest | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent | None:
    """Record a routine view (thumbnails of a patient's images, the notes card) once per actor,
    target and `kind` per window of AUDIT_ROUTINE_VIEW_MINUTES, instead of once per request.

    The one event stands for "`actor` viewed `kind` of this target from then until the window
    ends"; it is an ordinary chained event (`details` carry `routine` and `window_minutes`).
    Later views in the window write nothing and return None. An anonymous actor is recorded
    every time (routine views need a signed-in user anyway).
    """
    minutes = settings.AUDIT_ROUTINE_VIEW_MINUTES
    if actor is None or not getattr(actor, "is_authenticated", False) or minutes <= 0:
        return audit_record(
            action=action,
            actor=actor,
            target_type=target_type,
            target_id=target_id,
            request=request,
            details=details,
        )
    stored_id, _ = _without_identifiers(target_type, str(target_id), None)
    stored_id = _text(stored_id, 128)
    since = timezone.now() - timedelta(minutes=minutes)
    key = (actor, str(action), _text(target_type, 32), stored_id, kind, since)
    # Read first, outside the chain lock: most routine views find their event and write nothing.
    if _routine_recorded(*key):
        return None
    with transaction.atomic():
        # Checked again under the chain lock, so two concurrent views write one event.
        _locked_anchor()
        if _routine_recorded(*key):
            return None
        return audit_record(
            action=action,
            actor=actor,
            target_type=target_type,
            target_id=target_id,
            request=request,
            details={**(details or {}), ROUTINE_KEY: kind, "window_minutes": minutes},
        )


def _locked_anchor() -> AuditAnchor:
    anchor = AuditAnchor.objects.select_for_update().filter(pk=1).first()
    if anchor is None:
        # The genesis row comes from a migration; a test flush (TRUNCATE) removes it with
        # the events. Recreate it at genesis: if events were left behind, the next append
        # collides with their sequence numbers and fails loudly instead of forking.
        AuditAnchor.objects.get_or_create(pk=1, defaults={"sequence": 0, "hash": GENESIS_HASH})
        anchor = AuditAnchor.objects.select_for_update().get(pk=1)
    return anchor


def append_entry(fields: dict[str, Any]) -> AuditEvent:
    """Chain one row as given: the append behind `audit_record`. Record events through
    `audit_record`; this is public for tests that plant events in an older format."""
    with transaction.atomic():
        # Serialise appends: two writers must not fork the chain. The anchor row is the lock
        # on PostgreSQL; SQLite ignores FOR UPDATE, but its transactions are IMMEDIATE
        # (settings), so BEGIN already holds the database's one write lock, across threads
        # and processes alike. A process-local lock here would deadlock against a request
        # that holds that write lock and then records an event.
        anchor = _locked_anchor()
        # Time is taken under the lock, so it never goes back as the sequence goes up and a
        # date range is a contiguous piece of the chain.
        fields["created_at"] = timezone.now()
        fields["sequence"] = anchor.sequence + 1
        fields["prev_hash"] = anchor.hash
        fields["hash"] = entry_hash(fields)
        event = AuditEvent.objects.create(**fields)
        anchor.sequence = event.sequence
        anchor.hash = event.hash
        anchor.mac = anchor_mac(event.sequence, event.hash)
        anchor.save(update_fields=["sequence", "hash", "mac", "updated_at"])
        return event


@dataclass(frozen=True)
class AuditExport:
    file: IO[bytes]  # positioned at the start; the caller closes it
    count: int
    sha256: str


def audit_export(
    *,
    since: date | None = None,
    until: date | None = None,
    actor: Any = None,
    request: HttpRequest | None = None,
    via: str = "api",
) -> AuditExport:
    """Write a signed export of the events in [since, until] (whole UTC days) and audit it.

    The export is read from one snapshot and signed first; the AUDIT_EXPORTED event is
    appended afterwards, so it is never inside the file it describes (the next export of
    the day holds it, and both verify).
    """
    # Handed to the caller open (it becomes the response body), so no `with` here.
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115
    with chain_snapshot():
        bounds = sequence_range(since, until)
        events = events_for_export(chain_events(*bounds)) if bounds is not None else iter(())
        signature = write_export(
            events,
            spool,
            key=signing_key(),
            since=since.isoformat() if since else None,
            until=until.isoformat() if until else None,
            exported_at=timezone.now(),
        )
    spool.seek(0)
    digest = hashlib.sha256()
    for block in iter(lambda: spool.read(1 << 20), b""):
        digest.update(block)
    spool.seek(0)
    audit_record(
        action=Action.AUDIT_EXPORTED,
        actor=actor,
        username="" if actor is not None else f"({via})",
        request=request,
        target_type="auditevent",
        details={
            "via": via,
            "since": signature["since"],
            "until": signature["until"],
            "count": signature["count"],
            "first_sequence": signature["first_sequence"],
            "last_sequence": signature["last_sequence"],
            "file_sha256": digest.hexdigest(),
        },
    )
    return AuditExport(file=spool, count=signature["count"], sha256=digest.hexdigest())


# Columns of the filtered export (what the audit page shows, one event a row).
FILTERED_EXPORT_COLUMNS = (
    "sequence",
    "created_at",
    "actor",
    "role",
    "action",
    "target_type",
    "target_id",
    "outcome",
    "ip",
    "details",
    "hash",
)
# A spreadsheet runs a cell that starts with one of these as a formula; a username typed into a
# failed login is the sender's text, so such a cell is written with a leading apostrophe.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def actor_label(event: AuditEvent) -> str:
    """Who did it, as a person reads it: the username, "system" for the background jobs (no
    user, no request: processing, scheduled checks), "anonymous" for a request nobody signed in
    to (a refused call, a failed login keeps the name typed)."""
    if event.actor_username:
        return event.actor_username
    if event.ip is None and not event.user_agent:
        return "system"
    return "anonymous"


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def audit_export_filtered(
    *, filters: dict[str, Any], actor: Any, request: HttpRequest | None = None
) -> AuditExport:
    """The events the audit page shows for `filters` (audit_event_list's), as CSV, newest
    first, pseudonymised like the page; then the export is audited (after, so it is not in
    its own file), with the filters and the count.

    A filtered export is for reading, not for proving: it leaves events out, so it cannot be
    checked as a chain. The signed export of whole days (`audit_export`) is the proof.
    """
    if not getattr(actor, "is_admin_role", False):
        raise PermissionDenied("Only administrators export the audit log.")
    # Handed to the caller open (it becomes the response body), so no `with` here.
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115
    text = io.TextIOWrapper(spool, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text)
    writer.writerow(FILTERED_EXPORT_COLUMNS)
    count = 0
    for event in audit_event_list(**filters).iterator(chunk_size=2000):
        details = json.dumps(event.details or {}, sort_keys=True, default=str)
        writer.writerow(
            [
                event.sequence,
                event.created_at.isoformat(),
                _cell(actor_label(event)),
                event.role,
                event.action,
                event.target_type,
                _cell(event.target_id),
                event.outcome,
                event.ip or "",
                _cell(details),
                event.hash,
            ]
        )
        count += 1
    text.flush()
    text.detach()  # the spool stays open for the caller
    spool.seek(0)
    digest = hashlib.sha256()
    for block in iter(lambda: spool.read(1 << 20), b""):
        digest.update(block)
    spool.seek(0)
    audit_record(
        action=Action.AUDIT_EXPORTED,
        actor=actor,
        request=request,
        target_type="auditevent",
        details={
            "via": "page",
            "format": "csv",
            "filters": {key: str(value) for key, value in filters.items()},
            "count": count,
            "file_sha256": digest.hexdigest(),
        },
    )
    return AuditExport(file=spool, count=count, sha256=digest.hexdigest())


def audit_find_patient_events(
    *, hospital_id: str, actor: Any, request: HttpRequest | None = None
) -> QuerySet[AuditEvent]:
    """The events about one patient, for an investigator who has the hospital id.

    The log never names the patient by that id: new events hold its reference and the keyed
    hash of search terms (audit.pseudonyms), older ones the id itself. So the id is turned into
    both and all four are matched: patient target, patient keys in the details, and search
    terms equal to the id (hashed or, before pseudonyms, in clear; case and outer spaces
    ignored). A search that only contained part of the id is not found.

    Admins only (they read the log). The search is itself audited, naming the patient by its
    reference. The events come back pseudonymised, newest first.
    """
    if not getattr(actor, "is_admin_role", False):
        raise PermissionDenied("Only administrators search the audit log.")
    hospital_id = (hospital_id or "").strip()
    if not hospital_id:
        raise ValueError("a hospital id is needed")
    reference = patient_reference(hospital_id)
    term_hash = search_term_hash(hospital_id)
    about_patient = Q(target_type=PATIENT_TARGET, target_id__in=[hospital_id, reference])
    for key in PATIENT_ID_KEYS:
        about_patient |= Q(**{f"details__{key}__in": [hospital_id, reference]})
    about_patient |= Q(**{f"details__{SEARCH_HASH_KEY}": term_hash})
    about_patient |= Q(**{f"details__{SEARCH_KEY}__iexact": hospital_id})
    # Refused requests whose URL named the patient: by reference, or (older) by the id.
    about_patient |= Q(**{f"details__{PATH_KEY}__icontains": f"/patient-{reference}/"})
    about_patient |= Q(**{f"details__{PATH_KEY}__icontains": f"/{quote(hospital_id, safe='')}/"})
    events = AuditEvent.objects.pseudonymised().filter(about_patient).order_by("-sequence")
    searched = audit_record(
        action=Action.AUDIT_PATIENT_SEARCHED,
        actor=actor,
        request=request,
        target_type=PATIENT_TARGET,
        target_id=hospital_id,
        details={"found": events.count()},
    )
    # What was found when the search was recorded, not the record of the search itself.
    return events.filter(sequence__lt=searched.sequence)
