"""Tampering through raw SQL, as someone with the database owner's rights would.

On PostgreSQL the append-only trigger is bypassed first (`session_replication_role`); on
SQLite there is no trigger. Either way the chain and the signed head must name the first
bad sequence, and `audit_verify` must exit 1.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction

from audit.chain import HASHED_FIELDS, entry_hash
from audit.models import Action, AuditEvent
from audit.selectors import audit_chain_verify
from audit.services import audit_record
from audit.verification import Reason

from .conftest import run_verify, tamper

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain(technician: Any) -> list[AuditEvent]:
    """Ten events, sequences 1..10."""
    return [
        audit_record(action=Action.PATIENT_VIEWED, actor=technician, target_id=f"P{n}")
        for n in range(1, 11)
    ]


def _assert_bad(first_bad: int, reason: str) -> None:
    status, output = run_verify()
    assert status == 1, output
    assert f"first bad sequence {first_bad}:" in output
    report = audit_chain_verify()
    assert (report.ok, report.first_bad, report.reason) == (False, first_bad, reason)


def test_it_catches_an_edited_field(chain: list[AuditEvent]) -> None:
    tamper("UPDATE audit_auditevent SET target_id = %s WHERE sequence = %s", ("P99", 4))

    _assert_bad(4, Reason.EDITED)


def test_it_catches_an_edit_that_recomputed_the_row_hash(chain: list[AuditEvent]) -> None:
    # Without the next row's prev_hash changing too, the rehashed row breaks the link after it.
    row = AuditEvent.objects.get(sequence=6)
    fields = {name: getattr(row, name) for name in HASHED_FIELDS}
    fields["target_id"] = "P-forged"
    tamper(
        "UPDATE audit_auditevent SET target_id = %s, hash = %s WHERE sequence = 6",
        ("P-forged", entry_hash(fields)),
    )

    _assert_bad(7, Reason.LINK_BROKEN)


def test_it_catches_a_deleted_middle_row(chain: list[AuditEvent]) -> None:
    tamper("DELETE FROM audit_auditevent WHERE sequence = %s", (5,))

    _assert_bad(5, Reason.MISSING)


def test_it_catches_two_rows_swapped(chain: list[AuditEvent]) -> None:
    tamper("UPDATE audit_auditevent SET sequence = 1000 WHERE sequence = 3")
    tamper("UPDATE audit_auditevent SET sequence = 3 WHERE sequence = 4")
    tamper("UPDATE audit_auditevent SET sequence = 4 WHERE sequence = 1000")

    _assert_bad(3, Reason.LINK_BROKEN)


def test_it_catches_the_last_rows_deleted(chain: list[AuditEvent]) -> None:
    tamper("DELETE FROM audit_auditevent WHERE sequence >= %s", (9,))

    _assert_bad(9, Reason.TRUNCATED)


def test_it_catches_a_truncation_with_the_head_rewritten_without_the_key(
    chain: list[AuditEvent],
) -> None:
    tamper("DELETE FROM audit_auditevent WHERE sequence >= %s", (9,))
    new_head = AuditEvent.objects.get(sequence=8)
    forged_mac = hmac.new(b"a guess at the key".ljust(32), b"x", hashlib.sha256).hexdigest()
    tamper(
        "UPDATE audit_auditanchor SET sequence = %s, hash = %s, mac = %s WHERE id = 1",
        (8, new_head.hash, forged_mac),
    )

    _assert_bad(9, Reason.ANCHOR_INVALID)


def test_it_catches_the_head_rolled_back_to_genesis(chain: list[AuditEvent]) -> None:
    tamper(
        "UPDATE audit_auditanchor SET sequence = 0, hash = %s, mac = '' WHERE id = 1", ("0" * 64,)
    )

    _assert_bad(1, Reason.UNANCHORED)


def test_it_catches_a_missing_head(chain: list[AuditEvent]) -> None:
    tamper("DELETE FROM audit_auditanchor")

    _assert_bad(11, Reason.ANCHOR_MISSING)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditevent SET target_id = 'P99' WHERE sequence = 4",
        "DELETE FROM audit_auditevent WHERE sequence = 4",
        "DELETE FROM audit_auditevent",
    ],
)
def test_it_refuses_update_and_delete_on_postgresql(chain: list[AuditEvent], sql: str) -> None:
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql)

    assert AuditEvent.objects.get(sequence=4).target_id == "P4"
    assert run_verify() == (0, "OK 10 events\n")
