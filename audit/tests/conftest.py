"""Audit test helpers: tampering as an attacker with database-owner rights would."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection


@pytest.fixture(autouse=True)
def _postgres_only(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("postgres") is None:
        return
    # Resolving the vendor needs no query; the marker's tests use PostgreSQL-only features.
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL): append-only trigger and row locks")


def tamper(sql: str, params: tuple[Any, ...] = ()) -> None:
    """Run raw SQL on the audit tables, bypassing the append-only trigger on PostgreSQL.

    `session_replication_role = replica` turns ordinary triggers off for this session: a
    database owner can do this, so the chain and the signed head must catch it regardless.
    """
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute(sql, params)
        finally:
            if connection.vendor == "postgresql":
                cursor.execute("SET session_replication_role = DEFAULT")


def run_verify(*args: str) -> tuple[int, str]:
    """`manage.py audit_verify`: its exit status and everything it printed."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("audit_verify", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue() + err.getvalue()
    return 0, out.getvalue() + err.getvalue()
