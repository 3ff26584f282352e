"""Reading the audit log: listing, streaming the chain for checks and exports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Max, Min, Q, QuerySet

from audit.chain import EXPORTED_FIELDS, audit_key
from audit.models import AuditAnchor, AuditEvent
from audit.pseudonyms import PATIENT_ID_KEYS, PATIENT_TARGET, pseudonymised_fields
from audit.verification import Anchor, ChainReport, verify_chain

# Rows fetched per round trip when streaming: enough to be fast, small enough that a chain
# of millions never sits in memory.
CHUNK_SIZE = 2000


@contextmanager
def chain_snapshot() -> Iterator[None]:
    """One consistent view of events and head while a long read streams.

    Appends keep going meanwhile (nothing is locked); the read sees the chain as it was when
    it started. On PostgreSQL that needs REPEATABLE READ, which can only be asked for as the
    first statement of a transaction; inside an outer transaction (tests, a caller's atomic
    block) that transaction already decides what is seen. SQLite holds its read lock until
    the transaction ends, which gives the same.
    """
    fresh = not connection.in_atomic_block
    with transaction.atomic():
        if fresh and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def _current_anchor() -> Anchor | None:
    row = AuditAnchor.objects.filter(pk=1).values("sequence", "hash", "mac").first()
    return Anchor(**row) if row is not None else None


def chain_events(first: int | None = None, last: int | None = None) -> Iterator[dict[str, Any]]:
    """Events as plain dicts in sequence order, streamed in chunks."""
    queryset = AuditEvent.objects.order_by("sequence")
    if first is not None:
        queryset = queryset.filter(sequence__gte=first)
    if last is not None:
        queryset = queryset.filter(sequence__lte=last)
    return queryset.values(*EXPORTED_FIELDS).iterator(chunk_size=CHUNK_SIZE)


def events_for_export(events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Export lines as admins may read them: an event written before pseudonyms, whose target
    or details held a hospital id or a clear search term, is shown mapped and flagged
    `pseudonymised` (its stored hash then covers the stored values, not the shown ones; see
    audit.export). Every other event is exported exactly as stored."""
    for event in events:
        target_id, details = pseudonymised_fields(
            event["target_type"], event["target_id"], event["details"]
        )
        if (target_id, details) != (event["target_id"], event["details"]):
            event = {**event, "target_id": target_id, "details": details, "pseudonymised": True}
        yield event


def audit_chain_verify() -> ChainReport:
    """Walk the whole chain against its signed head; the first bad sequence, if any."""
    with chain_snapshot():
        # The head first: anything appended after it in this snapshot is impossible, since
        # an append moves the head in the same transaction.
        anchor = _current_anchor()
        return verify_chain(chain_events(), anchor=anchor, key=audit_key())


def day_bounds(since: date | None, until: date | None) -> tuple[datetime | None, datetime | None]:
    """Whole UTC days, both ends included: [since 00:00, until+1 00:00)."""
    start = datetime.combine(since, time.min, tzinfo=UTC) if since else None
    end = datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC) if until else None
    return start, end


def sequence_range(since: date | None, until: date | None) -> tuple[int, int] | None:
    """First and last sequence of the events in the date range, or None when it is empty.

    An export is a contiguous piece of the chain, so that its links can be checked offline:
    the range runs from the first event at or after `since` to the last one before the end of
    `until`. Times follow sequence (they are taken under the append lock), so this is the
    same as filtering by time unless the clock stepped back.
    """
    start, end = day_bounds(since, until)
    queryset = AuditEvent.objects.all()
    if start is not None:
        queryset = queryset.filter(created_at__gte=start)
    first = queryset.aggregate(value=Min("sequence"))["value"]
    queryset = AuditEvent.objects.all()
    if end is not None:
        queryset = queryset.filter(created_at__lt=end)
    last = queryset.aggregate(value=Max("sequence"))["value"]
    if first is None or last is None or first > last:
        return None
    return first, last


def audit_event_list(
    *,
    action: str | None = None,
    actor: str | None = None,
    outcome: str | None = None,
    since: date | None = None,
    until: date | None = None,
    patient: str | None = None,
    scan: int | None = None,
) -> QuerySet[AuditEvent]:
    """Events for the admin list, newest first. `actor` is a username (the copy in the log).

    `patient` is a patient reference as the log shows it (never a hospital id: admins do not
    have them): the events whose target is that patient or whose details name it. Events
    written before pseudonyms hold the hospital id and are found only by the investigator's
    search (audit_find_patient_events). `scan` is a scan id: the events whose target is the
    scan or whose details name it (`scan`, `scan_id`).

    Read through `pseudonymised()`: no hospital id or clear search term reaches an admin,
    also from events written before pseudonyms (audit.pseudonyms)."""
    queryset = AuditEvent.objects.pseudonymised().order_by("-sequence")
    if patient:
        about = Q(target_type=PATIENT_TARGET, target_id=patient)
        for key in PATIENT_ID_KEYS:
            about |= Q(**{f"details__{key}": patient})
        queryset = queryset.filter(about)
    if scan:
        queryset = queryset.filter(
            Q(target_type="scan", target_id=str(scan))
            | Q(details__scan=scan)
            | Q(details__scan_id=scan)
        )
    if action:
        queryset = queryset.filter(action=action)
    if actor:
        queryset = queryset.filter(actor_username=actor)
    if outcome:
        queryset = queryset.filter(outcome=outcome)
    start, end = day_bounds(since, until)
    if start is not None:
        queryset = queryset.filter(created_at__gte=start)
    if end is not None:
        queryset = queryset.filter(created_at__lt=end)
    return queryset
