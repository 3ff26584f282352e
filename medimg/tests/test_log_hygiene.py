"""The log-hygiene plugin itself (medimg/tests/log_hygiene.py): it sees every record, and it
flags what it must and nothing else."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from medimg.tests import log_hygiene

ROOT = Path(__file__).resolve().parents[2]
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjo0Mn0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU"


def test_it_captures_every_record_of_this_run() -> None:
    before = len(log_hygiene.CAPTURE.lines)

    logging.getLogger("medimg.tests.hygiene").warning("marker %s", "7d1f")

    assert log_hygiene.CAPTURE.lines[before:] == [("medimg.tests.hygiene", "marker 7d1f")]


def test_it_flags_jwts_passwords_keys_and_patient_identifiers_only() -> None:
    lines = [
        ("a", f"Authorization: Bearer {JWT}"),
        ("b", "login with correct-horse-battery-staple-42"),
        ("c", "kek 00112233445566778899aabbccddeeff"),
        ("d", "opened the record of Grace Hopper"),
        # A record number in a path is patient data too (issue 21 item 15).
        ("e", "Bad Request: /api/patients/MRN-0001/images/"),
        ("f", "scan 42 processed in 0.3 s, sha256 " + "ab" * 32),
        ("g", "Not Found: /api/patients/P-FIRST/notes/"),
        ("h", '"GET /api/patients/?q=Lovelacey HTTP/1.1" 200 17'),
        ("i", "restore of scan 7 for Tumour board 7"),
        ("j", "Bad Request: /api/patients/[redacted]/images/"),
        ("k", '"GET /api/patients/?q=[redacted] HTTP/1.1" 200 17'),
    ]

    leaks = log_hygiene.find_leaks(
        lines,
        secrets={"correct-horse-battery-staple-42", "00112233445566778899aabbccddeeff"},
        names={"Grace Hopper"},
        ids={"P-FIRST"},
        planted={"Lovelacey", "Tumour board 7"},
    )

    assert [leak.split(":")[0] for leak in leaks] == ["a", "b", "c", "d", "e", "g", "h", "i"]


def test_it_knows_the_fixture_patient_names_and_the_keys_in_use(
    settings: Any, tmp_path: Any
) -> None:
    key_file = tmp_path / "t" / "keys" / "kek.key"
    key_file.parent.mkdir(parents=True)
    key_file.write_text("ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100\n")

    names = log_hygiene.fixture_patient_names()
    keys = log_hygiene.key_material(settings, tmp_path)

    assert {"Grace Hopper", "Ada Lovelace", "DOE^JANE"} <= names
    assert {"MRN-314159", "P-FIRST"} <= log_hygiene.fixture_patient_ids()
    assert "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100" in keys
    assert settings.SECRET_KEY in keys


# --- Redaction at the source (medimg/log_redaction.py) --------------------------------------


def _lines_since(before: int) -> list[str]:
    return [text for _, text in log_hygiene.CAPTURE.lines[before:]]


@pytest.mark.django_db
def test_it_redacts_the_record_number_in_djangos_request_warnings(
    api: Any, technician: Any
) -> None:
    api.force_authenticate(technician)
    before = len(log_hygiene.CAPTURE.lines)

    assert api.get("/api/patients/MRN-LOGGED-1/images/").status_code == 404

    lines = _lines_since(before)
    assert "Not Found: /api/patients/[redacted]/images/" in lines
    assert not any("MRN-LOGGED-1" in line for line in lines)


@pytest.mark.django_db
def test_it_redacts_a_patient_search_from_request_lines(api: Any, technician: Any) -> None:
    log_hygiene.plant("Hopperish")
    api.force_authenticate(technician)
    before = len(log_hygiene.CAPTURE.lines)

    assert api.get("/api/patients/", {"q": "Hopperish"}).status_code == 200
    # What the development server (and gunicorn) log for that request.
    logging.getLogger("django.server").info(
        '"%s" %s %s', "GET /api/patients/?q=Hopperish&page=2 HTTP/1.1", "200", "17"
    )

    lines = _lines_since(before)
    assert '"GET /api/patients/?q=[redacted]&page=[redacted] HTTP/1.1" 200 17' in lines
    assert not any("Hopperish" in line for line in lines)


def test_it_redacts_tracebacks_too() -> None:
    before = len(log_hygiene.CAPTURE.lines)
    try:
        raise LookupError("no such page /patients/MRN-TRACE-9/notes/?q=Grace")
    except LookupError:
        logging.getLogger("medimg.tests.hygiene").exception("lookup failed")

    [line] = _lines_since(before)
    assert "MRN-TRACE-9" not in line and "Grace" not in line
    assert "/patients/[redacted]/notes/?q=[redacted]" in line


def test_it_refuses_short_planted_values() -> None:
    with pytest.raises(ValueError):
        log_hygiene.plant("Ada")


def _run_pytest(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_planted.py").write_text(source)
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}},
        "DJANGO_SETTINGS_MODULE": "medimg.settings",
        "PYTHONPATH": str(ROOT),
        "MEDIMG_VAR_DIR": str(tmp_path / "var"),
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + ["-p", "medimg.tests.log_hygiene", "test_planted.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_whole_run_fails_on_a_planted_identifier_in_any_log_line(tmp_path: Path) -> None:
    leaking = _run_pytest(
        tmp_path,
        "import logging\n"
        "from medimg.tests.log_hygiene import plant\n"
        "def test_search():\n"
        "    plant('Babbage-search')\n"
        "    logging.getLogger('app').info('searched for %s', 'Babbage-search')\n"
        "def test_record_number():\n"
        "    logging.getLogger('app').warning('record MRN-4242 opened')\n",
    )
    clean = _run_pytest(
        tmp_path,
        "import logging\n"
        "def test_path():\n"
        "    logging.getLogger('django.request').warning('Not Found: %s', '/patients/MRN-1/')\n",
    )

    assert leaking.returncode == 1, leaking.stdout
    assert "2 passed" in leaking.stdout  # The tests pass; the run fails on its log.
    assert "planted identifier" in leaking.stdout and "patient id" in leaking.stdout
    assert "2 log lines leak" in leaking.stdout
    # Django's path warning, through the app's logging set-up, is redacted: the run passes.
    assert clean.returncode == 0, clean.stdout + clean.stderr


@pytest.mark.parametrize(
    ("logged", "kept"),
    [
        (
            "Not Found: /api/patients/MRN-1234/images/",
            "Not Found: /api/patients/[redacted]/images/",
        ),
        ("Forbidden: /patients/MRN-1234/", "Forbidden: /patients/[redacted]/"),
        (
            "Not Found: /api/patients/Hôpital #12?/notes/",
            "Not Found: /api/patients/[redacted]/notes/",
        ),
        (
            "Not Found: /admin/patients/patient/MRN-314159/change/",
            "Not Found: /admin/patients/patient/[redacted]/change/",
        ),
        ("GET /admin/patients/patient/ HTTP/1.1", "GET /admin/patients/patient/ HTTP/1.1"),
        (
            '"GET /api/audit/events/?target_id=MRN-9&action=login HTTP/1.1" 200 5',
            '"GET /api/audit/events/?target_id=[redacted]&action=[redacted] HTTP/1.1" 200 5',
        ),
        ("scan 42 processed. Done? yes", "scan 42 processed. Done? yes"),
    ],
)
def test_it_redacts_ids_in_paths_and_query_values_and_nothing_else(logged: str, kept: str) -> None:
    from medimg.log_redaction import redact

    assert redact(logged) == kept


def test_the_filter_redacts_for_logging_set_up_outside_django() -> None:
    # e.g. a gunicorn log config (logconfig_dict) that formats records itself.
    from medimg.log_redaction import RedactIdentifiers

    record = logging.LogRecord(
        "gunicorn.access",
        logging.INFO,
        __file__,
        1,
        '"%s" %s',
        ("GET /patients/MRN-5/?q=Ada", 200),
        None,
    )

    assert RedactIdentifiers().filter(record) is True
    assert record.getMessage() == '"GET /patients/[redacted]/?q=[redacted]" 200'
