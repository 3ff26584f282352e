from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command
from django.utils import timezone

import audit.selectors
import audit.services
from audit.chain import public_key_hex, signing_key
from audit.export import ExportReason, verify_export
from audit.models import Action, AuditEvent
from audit.selectors import audit_chain_verify
from audit.services import audit_record
from audit.verification import Reason

from .conftest import run_verify

pytestmark = pytest.mark.django_db


def _export(path: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("audit_export", *args, "--out", str(path), stdout=out)
    return out.getvalue()


@pytest.fixture
def three_days(technician: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two events on each of 1, 2 and 3 March 2026 (UTC), sequences 1..6."""
    for day in (1, 2, 3):
        for hour in (0, 23):
            moment = datetime(2026, 3, day, hour, 30, tzinfo=UTC)
            monkeypatch.setattr(audit.services.timezone, "now", lambda moment=moment: moment)
            audit_record(action=Action.PATIENT_VIEWED, actor=technician, target_id=f"{day}-{hour}")
    monkeypatch.undo()


def test_it_exports_a_file_that_verifies_offline(
    three_days: None, tmp_path: Path, django_assert_num_queries: Any
) -> None:
    path = tmp_path / "export.jsonl"
    assert "Exported 6 events" in _export(path)

    # Offline: not one query. The key comes from outside the database.
    with django_assert_num_queries(0):
        status, output = run_verify("--export", str(path))
    assert (status, output) == (0, "OK 6 events\n")

    lines = path.read_bytes().splitlines()
    assert len(lines) == 7
    first = json.loads(lines[0])
    assert first["sequence"] == 1 and first["target_id"] == "1-0"
    assert first["hash"] == AuditEvent.objects.get(sequence=1).hash
    signature = json.loads(lines[-1])["signature"]
    assert signature["public_key"] == public_key_hex()
    assert (signature["count"], signature["first_sequence"], signature["last_sequence"]) == (
        6,
        1,
        6,
    )


def test_it_audits_the_export_without_invalidating_it(three_days: None, tmp_path: Path) -> None:
    first = tmp_path / "first.jsonl"
    _export(first)

    exported = AuditEvent.objects.get(action=Action.AUDIT_EXPORTED)
    assert exported.sequence == 7
    assert exported.details["count"] == 6 and exported.details["last_sequence"] == 6
    assert exported.actor_username == "(manage.py audit_export)"

    # The second export holds the first one's event; both files and the chain verify.
    second = tmp_path / "second.jsonl"
    _export(second)
    assert run_verify("--export", str(first)) == (0, "OK 6 events\n")
    assert run_verify("--export", str(second)) == (0, "OK 7 events\n")
    assert run_verify() == (0, "OK 8 events\n")


def test_it_exports_only_the_days_asked_for(three_days: None, tmp_path: Path) -> None:
    path = tmp_path / "day2.jsonl"
    _export(path, "--since", "2026-03-02", "--until", "2026-03-02")

    events = [json.loads(line) for line in path.read_bytes().splitlines()[:-1]]
    assert [event["target_id"] for event in events] == ["2-0", "2-23"]
    assert [event["sequence"] for event in events] == [3, 4]
    assert run_verify("--export", str(path)) == (0, "OK 2 events\n")

    # Open-ended: day 3 up to now, which includes the first export's own event (#7, today).
    open_ended = tmp_path / "from-day3.jsonl"
    _export(open_ended, "--since", "2026-03-03")
    events = [json.loads(line) for line in open_ended.read_bytes().splitlines()[:-1]]
    assert [(event["sequence"], event["action"]) for event in events] == [
        (5, "patient_viewed"),
        (6, "patient_viewed"),
        (7, "audit_exported"),
    ]


def test_it_exports_an_empty_range_that_still_verifies(three_days: None, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    _export(path, "--since", "2027-01-01", "--until", "2027-01-31")

    assert len(path.read_bytes().splitlines()) == 1
    assert run_verify("--export", str(path)) == (0, "OK 0 events\n")


def test_it_refuses_a_backwards_range(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="--since is after --until"):
        _export(tmp_path / "x.jsonl", "--since", "2026-03-02", "--until", "2026-03-01")


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_it_fails_a_flipped_byte_in_an_event(three_days: None, tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    _export(path)
    lines = path.read_bytes().splitlines(keepends=True)
    # Inside the third event's target id ("2-0" becomes "3-0").
    offset = sum(len(line) for line in lines[:2]) + lines[2].index(b'"target_id":"2-0"') + 13
    _flip(path, offset)

    status, output = run_verify("--export", str(path))
    assert status == 1
    assert "first bad sequence 3:" in output
    with path.open("rb") as source:
        assert verify_export(source, public_key=signing_key().public_key()).reason == Reason.EDITED


def test_it_fails_a_flipped_byte_in_the_signature(three_days: None, tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    _export(path)
    raw = path.read_bytes()
    _flip(path, raw.rindex(b'"value":"') + 20)

    status, output = run_verify("--export", str(path))
    assert status == 1
    assert "[signature_invalid]" in output


def test_it_fails_a_dropped_last_event(three_days: None, tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    _export(path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2] + lines[-1:]))

    with path.open("rb") as source:
        report = verify_export(source, public_key=signing_key().public_key())
    assert (report.ok, report.reason) == (False, ExportReason.CONTENT_MISMATCH)


def test_it_checks_against_a_third_partys_public_key(three_days: None, tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    _export(path)
    out = io.StringIO()
    call_command("audit_public_key", stdout=out)
    published = out.getvalue().strip()

    assert run_verify("--export", str(path), "--public-key", published) == (0, "OK 6 events\n")

    stranger = Ed25519PrivateKey.generate().public_key()
    status, output = run_verify("--export", str(path), "--public-key", public_key_hex(stranger))
    assert status == 1 and "[wrong_key]" in output


def test_it_signs_with_the_configured_signing_key(settings: Any, tmp_path: Path) -> None:
    settings.AUDIT_SIGNING_KEY = "11" * 32
    audit_record(action=Action.LOGIN_FAILED, username="x", outcome="failure")
    path = tmp_path / "export.jsonl"
    _export(path)

    expected = Ed25519PrivateKey.from_private_bytes(bytes.fromhex("11" * 32)).public_key()
    assert json.loads(path.read_bytes().splitlines()[-1])["signature"]["public_key"] == (
        public_key_hex(expected)
    )
    assert run_verify("--export", str(path), "--public-key", public_key_hex(expected))[0] == 0


def test_it_streams_in_chunks(
    technician: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit.selectors, "CHUNK_SIZE", 7)
    for n in range(30):
        audit_record(action=Action.PATIENT_LISTED, actor=technician, details={"page": n})
    path = tmp_path / "export.jsonl"
    _export(path, "--until", timezone.now().date().isoformat())

    assert run_verify("--export", str(path)) == (0, "OK 30 events\n")
    assert audit_chain_verify().events == 31


def test_it_fails_two_events_swapped_in_the_file(three_days: None, tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    _export(path)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2], lines[3] = lines[3], lines[2]
    path.write_bytes(b"".join(lines))

    status, output = run_verify("--export", str(path))
    assert status == 1
    assert "first bad sequence 3:" in output
