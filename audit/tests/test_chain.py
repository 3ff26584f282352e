from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import audit.chain
from audit.chain import (
    GENESIS_HASH,
    anchor_is_valid,
    audit_key,
    entry_hash,
    public_key_hex,
    signing_key,
)
from audit.models import Action, AuditAnchor, AuditEvent, Outcome
from audit.selectors import audit_chain_verify
from audit.services import audit_record

from .conftest import run_verify

pytestmark = pytest.mark.django_db


def _record_some(count: int, actor: Any = None) -> list[AuditEvent]:
    return [
        audit_record(action=Action.PATIENT_VIEWED, actor=actor, target_id=n, details={"n": n})
        for n in range(count)
    ]


def test_it_links_each_event_to_the_one_before(technician: Any) -> None:
    events = _record_some(3, technician)

    assert [event.sequence for event in events] == [1, 2, 3]
    assert events[0].prev_hash == GENESIS_HASH
    assert events[1].prev_hash == events[0].hash
    assert events[2].prev_hash == events[1].hash
    stored = AuditEvent.objects.get(sequence=2)
    fields = {name: getattr(stored, name) for name in audit.chain.HASHED_FIELDS}
    assert entry_hash(fields) == stored.hash
    assert stored.actor_username == "tina" and stored.role == "technician"


def test_it_signs_the_head_with_the_key_outside_the_database(technician: Any) -> None:
    last = _record_some(2, technician)[-1]

    anchor = AuditAnchor.objects.get(pk=1)
    assert (anchor.sequence, anchor.hash) == (last.sequence, last.hash)
    assert anchor_is_valid(anchor.sequence, anchor.hash, anchor.mac)
    assert not anchor_is_valid(anchor.sequence, anchor.hash, anchor.mac, b"k" * 32)


def test_it_verifies_an_intact_chain_with_its_count(technician: Any) -> None:
    _record_some(5, technician)
    audit_record(action=Action.LOGIN_FAILED, outcome=Outcome.FAILURE, username="mallory")

    status, output = run_verify()

    assert status == 0
    assert output.strip() == "OK 6 events"


def test_it_verifies_an_empty_log() -> None:
    assert run_verify() == (0, "OK 0 events\n")


def test_it_recreates_the_genesis_head_when_a_flush_removed_it(technician: Any) -> None:
    AuditAnchor.objects.all().delete()

    event = audit_record(action=Action.LOGIN, actor=technician)

    assert event.sequence == 1 and event.prev_hash == GENESIS_HASH
    assert audit_chain_verify().ok


def test_it_stores_what_it_hashes_for_odd_input(technician: Any, rf: Any) -> None:
    request = rf.get("/", HTTP_USER_AGENT="agent\x00" + "x" * 600, REMOTE_ADDR="0:0:0:0:0:0:0:1")
    audit_record(
        action=Action.REQUEST_REFUSED,
        actor=technician,
        request=request,
        details={
            "path": "/a\x00b",
            "nested": {"b": 1, "a": [1.5, None, 2.0]},
            # jsonb rewrites 1e+20 as an integer and refuses NaN.
            "numbers": [1e20, 1e-7, float("nan"), 10**30, 0.1],
        },
        target_id="é" * 200,
    )

    event = AuditEvent.objects.get()
    assert event.ip == "::1"
    # Cut to USER_AGENT_MAX (200) before hashing: a sender's padding is not kept.
    assert len(event.user_agent) == 200 and "\x00" not in event.user_agent
    assert event.details["numbers"] == ["1e+20", "1e-07", "nan", 10**30, 0.1]
    assert audit_chain_verify().ok


def test_it_loads_the_key_once_per_process_and_per_key_dir(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[str] = []
    real = audit.chain.load_or_create_dev_key

    def counting(name: str, configured: str | None, **kwargs: Any) -> bytes:
        loads.append(name)
        return real(name, configured, **kwargs)

    monkeypatch.setattr(audit.chain, "load_or_create_dev_key", counting)
    first = audit_key()
    for _ in range(20):
        audit_record(action=Action.PATIENT_LISTED)
    assert loads == ["AUDIT_HMAC_KEY"]

    # Another KEY_DIR is another key: a cached value must not leak across it.
    settings.KEY_DIR = tmp_path / "other-keys"
    second = audit_key()
    assert second != first
    assert loads == ["AUDIT_HMAC_KEY", "AUDIT_HMAC_KEY"]
    assert (tmp_path / "other-keys" / "audit_hmac_key.key").exists()


def test_it_uses_the_configured_key_over_the_generated_one(settings: Any) -> None:
    settings.AUDIT_HMAC_KEY = "ab" * 32
    assert audit_key() == bytes.fromhex("ab" * 32)


def test_it_derives_the_signing_key_before_the_anchor_key_was_ever_loaded() -> None:
    # A fresh process (here: a fresh KEY_DIR) whose first need is the export key: deriving
    # it loads the anchor key too, under the same cache lock.
    first = signing_key()

    assert public_key_hex(first.public_key()) == public_key_hex()
    assert len(audit_key()) == 32
