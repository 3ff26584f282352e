"""Log hygiene over the whole test run (a pytest plugin, loaded by the root conftest).

Every log record any logger emits in the test process, from the first test to the last, is
kept (message, and the formatted exception when there is one). When the run ends, no line may
contain a JWT, a password the tests use, key material (SECRET_KEY, the KEKs and audit keys of
the settings, and every development key file the tests generated), or a patient identifier:
a patient name or id used in the fixtures, anything shaped like a record number (`MRN-...`),
or a value a test planted (`plant`: search terms, restore reasons) after sending it through
the app. If one does, the run fails and the offending lines are printed.

Records are taken at `Logger.handle`, not from a handler: Django's LOGGING (dictConfig) and
pytest's own capture replace handlers, this sees every record that passed its level check.
Subprocesses (the Celery worker, the medimg-client tests) are outside it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
# Passwords the tests log in with (conftest's personas, registration bodies, the client).
TEST_PASSWORDS = (
    "correct-horse-battery-staple-42",
    "plum-velvet-harbour-917",
    "lantern-orchard-velvet-93",
    "a-brand-new-passphrase-77",
    "juniper-canyon-amber-64",
    "quartz-orchard-violet-31",
)
_PATIENT_NAME_RE = re.compile(r"""Patient\.objects\.create\([^)]*?name=["']([^"']{4,})["']""")
_PATIENT_ID_RE = re.compile(
    r"""(?:Patient\.objects\.create\([^)]*?\bid=|make_patient\(\s*)["']([^"'{}]{5,})["']"""
)
# The fixtures' record numbers all look like this; so does no other log text.
MRN_RE = re.compile(r"\bMRN-[A-Za-z0-9][A-Za-z0-9-]*")
# Values tests sent through the app that no log line may repeat (`plant`).
PLANTED: set[str] = set()
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Capture:
    lines: list[tuple[str, str]] = field(default_factory=list)  # (logger, text)

    def add(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # A malformed record must not break the test that logged it.
            text = str(record.msg)
        if record.exc_text:  # Set (already redacted) by medimg.log_redaction.
            text += "\n" + record.exc_text
        elif record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append((record.name, text))


CAPTURE = Capture()


def fixture_patient_names(root: Path = ROOT) -> set[str]:
    """Patient names the tests create (Patient.objects.create(..., name="...")) anywhere."""
    names = {"DOE^JANE"}  # Burned into the synthetic images (imaging/tests/factories.py).
    for path in root.glob("*/tests/*.py"):
        names.update(_PATIENT_NAME_RE.findall(path.read_text(errors="replace")))
    return names


def fixture_patient_ids(root: Path = ROOT) -> set[str]:
    """Patient ids the tests create (Patient.objects.create(id="..."), make_patient("..."))."""
    ids: set[str] = set()
    for path in root.glob("*/tests/*.py"):
        ids.update(_PATIENT_ID_RE.findall(path.read_text(errors="replace")))
    return ids


def plant(*values: str) -> None:
    """Mark values a test sends through the app (a search term, a restore reason) that must
    appear in no log line of the run. Short values would match by chance: give 6+ characters."""
    for value in values:
        if len(value) < 6:
            raise ValueError(f"planted values need 6 or more characters: {value!r}")
        PLANTED.add(value)


def key_material(settings: Any, basetemp: Path | None) -> set[str]:
    """Secret values in effect: settings, and the development key files tests generated."""
    found = {settings.SECRET_KEY, settings.SIMPLE_JWT.get("SIGNING_KEY") or ""}
    for name in ("AUDIT_HMAC_KEY", "AUDIT_SIGNING_KEY"):
        found.add(getattr(settings, name, None) or "")
    for item in (getattr(settings, "MEDIMG_KEKS", None) or "").replace("\n", ",").split(","):
        found.add(item.partition(":")[2].strip())
    if basetemp is not None and basetemp.exists():
        for path in basetemp.glob("**/keys/*"):
            if path.is_file() and path.stat().st_size < 4096:
                found.add(path.read_text(errors="replace").strip())
    return {value for value in found if len(value) >= 16}


def find_leaks(
    lines: Iterable[tuple[str, str]],
    *,
    secrets: Iterable[str],
    names: Iterable[str],
    ids: Iterable[str] = (),
    planted: Iterable[str] = (),
) -> list[str]:
    """One line per log line that holds a JWT, a secret or a patient identifier."""
    literal = [(s, "password or key") for s in secrets] + [(n, "patient name") for n in names]
    literal += [(i, "patient id") for i in ids] + [(p, "planted identifier") for p in planted]
    leaks = []
    for logger, text in lines:
        what = ["JWT"] if JWT_RE.search(text) else []
        what += ["patient id"] if MRN_RE.search(text) else []
        what += [kind for value, kind in literal if value and value in text]
        if what:
            leaks.append(f"{logger}: {', '.join(sorted(set(what)))}: {text[:200]!r}")
    return leaks


_original_handle = logging.Logger.handle


def _handle(self: logging.Logger, record: logging.LogRecord) -> None:
    CAPTURE.add(record)
    _original_handle(self, record)


class LogHygienePlugin:
    def __init__(self) -> None:
        self.leaks: list[str] = []

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        logging.Logger.handle = _handle  # type: ignore[method-assign]

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        logging.Logger.handle = _original_handle  # type: ignore[method-assign]
        from django.conf import settings

        factory = getattr(session.config, "_tmp_path_factory", None)
        basetemp = factory.getbasetemp() if factory is not None else None
        self.leaks = find_leaks(
            CAPTURE.lines,
            secrets={*TEST_PASSWORDS, *key_material(settings, basetemp)},
            names=fixture_patient_names(),
            ids=fixture_patient_ids(),
            planted=PLANTED,
        )
        if self.leaks and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.leaks:
            terminalreporter.section("log hygiene: secrets or patient data in log lines", red=True)
            for leak in self.leaks[:50]:
                terminalreporter.write_line(leak)
            terminalreporter.write_line(f"{len(self.leaks)} log lines leak; the run fails.")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(LogHygienePlugin(), "medimg-log-hygiene")
