"""The default install (`make run`) holds several people working at once.

Before this, audited reads on the SQLite file collided: a read transaction that then wrote its
audit row failed at once with "database is locked" (about one request in six under this load,
all 500s), and a process-local lock around audit appends could deadlock against a request that
already held the database's write lock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_it_serves_six_people_at_once_on_sqlite_without_errors_or_a_forked_chain() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    done = subprocess.run(
        [sys.executable, "-m", "medimg.tests.embedded_load", "4"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(lines[-1])
    statuses = result["statuses"]
    # 6 people x 4 rounds x (9 reads + 1 note).
    assert sum(statuses.values()) == 240, result
    assert set(statuses) <= {"200", "201"}, result
    assert result["stuck_threads"] == 0, result
    assert result["chain_ok"] is True, result
