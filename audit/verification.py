"""Checking a chain: walk events in sequence order and name the first bad one.

Pure functions over an iterable of events (mappings with the hashed fields and `hash`): the
same walk checks rows streamed from the database and lines read from an export file. The
caller streams; nothing here holds more than the previous event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from audit.chain import GENESIS_HASH, anchor_is_valid, entry_hash


class Reason:
    """Why a chain is bad. The first four are found by the walk, the rest at the head."""

    EDITED = "edited"  # the stored hash is not the hash of the stored fields
    MISSING = "missing"  # a sequence number is skipped: a row was deleted
    OUT_OF_ORDER = "out_of_order"  # a sequence number repeats or goes back
    LINK_BROKEN = "link_broken"  # prev_hash is not the previous hash: deleted, moved, inserted
    TRUNCATED = "truncated"  # the signed head is beyond the last event
    ANCHOR_INVALID = "anchor_invalid"  # the head's MAC does not verify: rewritten without the key
    ANCHOR_MISMATCH = "anchor_mismatch"  # the head names another hash for the last event
    UNANCHORED = "unanchored"  # events beyond the signed head: inserted, or the head rolled back
    ANCHOR_MISSING = "anchor_missing"  # events but no head at all


@dataclass(frozen=True)
class Anchor:
    sequence: int
    hash: str
    mac: str

    @property
    def is_genesis(self) -> bool:
        # The migration writes the genesis head without a MAC: there is nothing to protect yet.
        return self.sequence == 0 and self.hash == GENESIS_HASH and not self.mac


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    events: int
    first_bad: int | None = None
    reason: str | None = None
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ChainWalker:
    """Feeds events one at a time; stops at the first bad one.

    `start_sequence`/`start_prev_hash` are where the walk expects to begin: the genesis for a
    whole chain; for an export of a date range, whatever its first event says (the file
    cannot prove what came before it, only that it holds a contiguous, linked piece).
    """

    def __init__(
        self, *, start_sequence: int | None = 1, start_prev_hash: str | None = GENESIS_HASH
    ) -> None:
        self.expected_sequence = start_sequence
        self.expected_prev_hash = start_prev_hash
        self.count = 0
        self.last_sequence = (start_sequence - 1) if start_sequence is not None else 0
        self.last_hash = start_prev_hash or GENESIS_HASH
        self.failure: ChainReport | None = None

    def _fail(self, sequence: int, reason: str, message: str) -> ChainReport:
        self.failure = ChainReport(
            ok=False, events=self.count, first_bad=sequence, reason=reason, message=message
        )
        return self.failure

    def feed(self, event: Mapping[str, Any], *, shown: bool = False) -> ChainReport | None:
        """Check one event. `shown`: an export line whose identifiers were mapped to
        pseudonyms (audit.export): its links are checked, its content cannot be (the hash
        covers the stored values), so the export's signature vouches for it instead."""
        if self.failure is not None:
            return self.failure
        sequence = int(event["sequence"])
        expected = self.expected_sequence if self.expected_sequence is not None else sequence
        prev_hash = (
            self.expected_prev_hash if self.expected_prev_hash is not None else event["prev_hash"]
        )
        # Links first, then content: a deleted or moved row shows as a broken link at the
        # place it left, an edited row as a hash mismatch at itself.
        if sequence > expected:
            return self._fail(
                expected,
                Reason.MISSING,
                f"sequence {expected} is missing (the next event is #{sequence}): deleted",
            )
        if sequence < expected:
            return self._fail(
                sequence,
                Reason.OUT_OF_ORDER,
                f"sequence {sequence} comes after #{expected - 1}: reordered or duplicated",
            )
        if event["prev_hash"] != prev_hash:
            return self._fail(
                sequence,
                Reason.LINK_BROKEN,
                f"sequence {sequence} does not link to the event before it: "
                "an event was deleted, moved or inserted",
            )
        if not shown and entry_hash(dict(event)) != event["hash"]:
            return self._fail(
                sequence, Reason.EDITED, f"sequence {sequence} does not match its hash: edited"
            )
        self.count += 1
        self.last_sequence = sequence
        self.last_hash = event["hash"]
        self.expected_sequence = sequence + 1
        self.expected_prev_hash = event["hash"]
        return None

    def feed_all(self, events: Iterable[Mapping[str, Any]]) -> ChainReport | None:
        for event in events:
            failure = self.feed(event)
            if failure is not None:
                return failure
        return None


def check_head(
    anchor: Anchor | None, *, count: int, last_sequence: int, last_hash: str, key: bytes
) -> ChainReport:
    """Compare the end of an intact walk with the signed head.

    A truncation leaves a chain that links perfectly; only the head, whose MAC needs a key
    the database never sees, says how long the chain was. For every truncation-like finding
    the first bad sequence is the first one that may be missing: the one after the last
    event the head can vouch for.
    """

    def bad(sequence: int, reason: str, message: str) -> ChainReport:
        return ChainReport(
            ok=False, events=count, first_bad=sequence, reason=reason, message=message
        )

    if anchor is None or anchor.is_genesis:
        if count == 0:
            return ChainReport(ok=True, events=0)
        if anchor is None:
            return bad(
                last_sequence + 1,
                Reason.ANCHOR_MISSING,
                f"the signed chain head is missing: events after #{last_sequence} "
                "may have been removed",
            )
        return bad(
            1,
            Reason.UNANCHORED,
            f"the signed head is still at genesis but {count} events exist: "
            "the head was rolled back or the events inserted",
        )
    if not anchor_is_valid(anchor.sequence, anchor.hash, anchor.mac, key):
        return bad(
            last_sequence + 1,
            Reason.ANCHOR_INVALID,
            f"the signed head (#{anchor.sequence}) fails its MAC: it was rewritten without "
            f"the key; events after #{last_sequence} may have been removed (truncated)",
        )
    if anchor.sequence > last_sequence:
        return bad(
            last_sequence + 1,
            Reason.TRUNCATED,
            f"the signed head is #{anchor.sequence} but the last event is #{last_sequence}: "
            f"sequence {last_sequence + 1} onwards was deleted (truncated)",
        )
    if anchor.sequence < last_sequence:
        return bad(
            anchor.sequence + 1,
            Reason.UNANCHORED,
            f"sequence {anchor.sequence + 1} onwards is beyond the signed head "
            f"(#{anchor.sequence}): inserted, or the head was rolled back",
        )
    if anchor.hash != last_hash:
        return bad(
            last_sequence,
            Reason.ANCHOR_MISMATCH,
            f"sequence {last_sequence} is not the event the signed head names: replaced",
        )
    return ChainReport(ok=True, events=count)


def verify_chain(
    events: Iterable[Mapping[str, Any]], *, anchor: Anchor | None, key: bytes
) -> ChainReport:
    """The whole chain, from genesis, in sequence order, against its signed head."""
    walker = ChainWalker()
    failure = walker.feed_all(events)
    if failure is not None:
        return failure
    return check_head(
        anchor,
        count=walker.count,
        last_sequence=walker.last_sequence,
        last_hash=walker.last_hash,
        key=key,
    )
