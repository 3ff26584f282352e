"""The log-hygiene plugin itself (medimg/tests/log_hygiene.py): it sees every record, and it
flags what it must and nothing else."""

from __future__ import annotations

import logging
from typing import Any

from medimg.tests import log_hygiene

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjo0Mn0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU"


def test_it_captures_every_record_of_this_run() -> None:
    before = len(log_hygiene.CAPTURE.lines)

    logging.getLogger("medimg.tests.hygiene").warning("marker %s", "7d1f")

    assert log_hygiene.CAPTURE.lines[before:] == [("medimg.tests.hygiene", "marker 7d1f")]


def test_it_flags_jwts_passwords_keys_and_patient_names_only() -> None:
    lines = [
        ("a", f"Authorization: Bearer {JWT}"),
        ("b", "login with correct-horse-battery-staple-42"),
        ("c", "kek 00112233445566778899aabbccddeeff"),
        ("d", "opened the record of Grace Hopper"),
        ("e", "Bad Request: /api/patients/MRN-0001/images/"),
        ("f", "scan 42 processed in 0.3 s, sha256 " + "ab" * 32),
    ]

    leaks = log_hygiene.find_leaks(
        lines,
        secrets={"correct-horse-battery-staple-42", "00112233445566778899aabbccddeeff"},
        names={"Grace Hopper"},
    )

    assert [leak.split(":")[0] for leak in leaks] == ["a", "b", "c", "d"]


def test_it_knows_the_fixture_patient_names_and_the_keys_in_use(
    settings: Any, tmp_path: Any
) -> None:
    key_file = tmp_path / "t" / "keys" / "kek.key"
    key_file.parent.mkdir(parents=True)
    key_file.write_text("ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100\n")

    names = log_hygiene.fixture_patient_names()
    keys = log_hygiene.key_material(settings, tmp_path)

    assert {"Grace Hopper", "Ada Lovelace", "DOE^JANE"} <= names
    assert "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100" in keys
    assert settings.SECRET_KEY in keys
