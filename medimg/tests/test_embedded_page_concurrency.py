"""32 people open real pages at the same moment on the default install, and nobody sees a 5xx.

Issue 16: with three people on `make run` (SQLite), thumbnails and notes failed with 500
"database is locked". medimg/tests/embedded_pages_load.py runs the embedded settings (a SQLite
file in WAL mode, no Redis) behind the server `runserver` uses, and 32 headless Chromium contexts
(one browser) load the home page, a patient's page and a scan page (the Cornerstone viewer) at
once, with every static file, image and API call those pages make.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
BUNDLE = ROOT / "static" / "vendor" / "viewer" / "viewer.js"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"
    ),
]


def test_32_concurrent_page_loads_on_sqlite_give_no_server_error() -> None:
    pytest.importorskip("playwright.async_api", reason="needs the playwright package")
    assert BUNDLE.exists(), "the viewer is not built: `make install` (npm ci && npm run build)"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    done = subprocess.run(
        [sys.executable, "-m", "medimg.tests.embedded_pages_load", "32", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(lines[-1])
    assert result["journal_mode"] == "wal", result
    assert result["pages_loaded"] == 32, result  # 32 pages at once
    assert result["server_errors"] == [], result
    assert not any(code.startswith("5") for code in result["statuses"]), result
    # Every page pulled its assets and API calls: far more responses than documents.
    assert sum(result["statuses"].values()) > 32 * 5, result
    assert result["failed_requests"] == [], result
    assert result["chain_ok"] is True, result
