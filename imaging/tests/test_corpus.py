"""Real DICOM files from other toolkits' test suites (issue 13 item 8; see corpus.py).

`make test` runs a sample of about 15 valid files through the whole product and every
refused class through intake; `make corpus` (MEDIMG_CORPUS=1) walks every file and prints
the table in docs/intake.md.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from imaging.tests import corpus

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        not (corpus.corpus_dir() / "manifest.tsv").is_file(),
        reason=f"the real-file corpus is not at {corpus.corpus_dir()} (../shared/corpus)",
    ),
]
WHOLE = pytest.mark.skipif(
    not os.environ.get("MEDIMG_CORPUS"), reason="the whole corpus walk: make corpus"
)


def _entries() -> list[corpus.Entry]:
    return corpus.manifest() if (corpus.corpus_dir() / "manifest.tsv").is_file() else []


def _sample() -> list[corpus.Entry]:
    entries = _entries()
    return corpus.sample(entries) if entries else []


@pytest.fixture
def walk(patient: Any, technician: Any, doctor: Any, django_capture_on_commit_callbacks: Any):
    def _walk(entry: corpus.Entry, **options: Any) -> corpus.Outcome:
        return corpus.walk_one(
            entry,
            patient=patient,
            technician=technician,
            doctor=doctor,
            capture_on_commit=django_capture_on_commit_callbacks,
            **options,
        )

    return _walk


@pytest.mark.parametrize("entry", _sample(), ids=lambda e: e.name[:60])
def test_it_accepts_processes_deidentifies_and_restores_a_real_file(walk: Any, entry) -> None:
    outcome = walk(entry)
    assert outcome.result == "accepted", entry.reason
    assert outcome.problems == []


def test_the_sample_covers_every_transfer_syntax_of_the_corpus() -> None:
    entries = _entries()
    syntaxes = {corpus.transfer_syntax(e.path) for e in entries if e.cls == "valid"}
    assert {corpus.transfer_syntax(e.path) for e in corpus.sample(entries)} == syntaxes


def test_it_refuses_every_file_without_an_image_with_a_clear_code_and_stores_nothing(
    walk: Any,
) -> None:
    def expected(entry: corpus.Entry) -> set[str]:
        if entry.cls == "not_part10" or "no Part 10 header" in entry.reason:
            return {"unsupported_format"}  # A bare data set: its message says so.
        if entry.cls == "broken":
            return {"corrupt_image", "unsupported_format"}  # no transfer syntax is the second
        if "truncated" in entry.name:
            return {"corrupt_image"}  # rtplan_truncated.dcm: cut, whatever it holds
        return {"no_pixel_data"}

    for entry in _entries():
        if entry.cls == "valid":
            continue
        outcome = walk(entry)
        assert outcome.result in expected(entry), (entry.name, outcome.result)
        assert outcome.problems == [], entry.name


@WHOLE
def test_the_whole_corpus(walk: Any, capsys: pytest.CaptureFixture[str]) -> None:
    entries = _entries() + corpus.library_entries()
    only = [part for part in os.environ.get("MEDIMG_CORPUS_ONLY", "").split(",") if part]
    if only:  # Re-walk a few files by name: MEDIMG_CORPUS_ONLY=wave_dfl,RGB_CINE
        entries = [e for e in entries if any(part in e.name for part in only)]
    outcomes = []
    for entry in entries:
        try:
            outcomes.append(walk(entry))
        except Exception as exc:  # Counted and reported, not a stop: the table is the point.
            outcomes.append(corpus.Outcome(entry, "crash", [f"{type(exc).__name__}: {exc}"]))
    must_accept = {"valid", "zip_series"}
    may_accept = must_accept | {"undecodable"}  # see corpus.py: a second decoder may read it
    failures = [
        o
        for o in outcomes
        if o.problems
        or o.result == "crash"
        or (o.entry.cls in must_accept and o.result != "accepted")
        or (o.entry.cls not in may_accept and o.result == "accepted")
    ]
    with capsys.disabled():
        print("\n" + corpus.table(outcomes))
        for outcome in failures:
            print(f"FAIL {outcome.entry.name}: {outcome.result} {outcome.problems}")
        for outcome in outcomes:
            for note in outcome.notes:
                print(f"note {outcome.entry.name}: {note}")
    assert not failures, f"{len(failures)} files failed"
