"""The duplicate search: read through the hash-piece indexes, exact, and outside the row lock."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from django.db import connection

from engine.pixels.metrics import hamming
from imaging.jobs import processing as jobs
from imaging.models import Fingerprint, Scan, ScanStatus
from imaging.services.upload import scan_upload
from imaging.tests.conftest import as_upload

pytestmark = pytest.mark.django_db

QUERY = "9c3a5f0e71d2b846"


def _flip(phash: str, bits: list[int]) -> str:
    value = int(phash, 16)
    for bit in bits:
        value ^= 1 << bit
    return f"{value:016x}"


def _fingerprints(patient: Any, hashes: list[str]) -> list[int]:
    scans = Scan.objects.bulk_create(
        Scan(
            patient=patient,
            original_filename=f"{i}.png",
            format="png",
            size_bytes=1,
            width=8,
            height=8,
            pixel_dtype="uint8",
            pixels_sha256="0" * 64,
            original_path=f"scans/{i}/original.enc",
            wrapped_key=b"",
            key_id="dev",
            status=ScanStatus.COMPLETED,
        )
        for i in range(len(hashes))
    )
    ids = [s.pk for s in scans]
    Fingerprint.objects.bulk_create(
        Fingerprint(scan_id=scan_id, average_hash=h, perceptual_hash=h)
        for scan_id, h in zip(ids, hashes, strict=True)
    )
    return ids


def _brute_force(phash: str, limit: int) -> tuple[int | None, int | None]:
    """What the search found before the indexes: every fingerprint measured."""
    best: tuple[int | None, int | None] = (None, None)
    for scan_id, other in Fingerprint.objects.order_by("scan_id").values_list(
        "scan_id", "perceptual_hash"
    ):
        distance = hamming(phash, other)
        if distance <= limit and (best[1] is None or distance < best[1]):
            best = (scan_id, distance)
    return best


@pytest.fixture
def population(patient: Any) -> list[int]:
    """400 random hashes and, hidden among them, hashes 0 to 12 bits from QUERY (each flip
    set spread over the pieces, so that near ones differ in several pieces)."""
    rng = random.Random(15)
    hashes = [f"{rng.getrandbits(64):016x}" for _ in range(400)]
    for distance in (12, 9, 8, 7, 6, 5, 3, 1):
        bits = rng.sample(range(64), distance)
        hashes.insert(rng.randrange(len(hashes)), _flip(QUERY, bits))
    return _fingerprints(patient, hashes)


@pytest.mark.parametrize("limit", [0, 1, 2, 3, 4, 6, 7, 8, 10, 12])
def test_the_duplicate_search_finds_what_measuring_every_fingerprint_finds(
    population: list[int], settings: Any, limit: int
) -> None:
    settings.IMAGING_DUPLICATE_MAX_DISTANCE = limit
    for phash in (QUERY, _flip(QUERY, [0, 9, 18, 27, 36, 45, 54, 63])):
        assert jobs.nearest_duplicate(phash=phash, exclude_scan_id=-1) == _brute_force(phash, limit)


def test_a_hash_within_the_limit_is_found_whichever_pieces_it_differs_in(
    patient: Any, settings: Any
) -> None:
    # Distance 7 with one flipped bit in each of seven pieces (the worst case of the
    # pigeonhole): only the eighth piece agrees.
    settings.IMAGING_DUPLICATE_MAX_DISTANCE = 7
    near = _flip(QUERY, [8 * piece + 3 for piece in range(7)])
    (near_id,) = _fingerprints(patient, [near])
    assert jobs.nearest_duplicate(phash=QUERY, exclude_scan_id=-1) == (near_id, 7)
    assert jobs.nearest_duplicate(phash=QUERY, exclude_scan_id=near_id) == (None, None)


def test_the_duplicate_search_reads_only_candidates_from_the_indexes(
    population: list[int], settings: Any
) -> None:
    settings.IMAGING_DUPLICATE_MAX_DISTANCE = 6
    candidates = jobs.duplicate_candidates(QUERY, limit=6)
    # 7 groups of 8-bit pieces: a random hash matches one with probability about 7/256.
    assert candidates.count() < Fingerprint.objects.count() / 10
    if connection.vendor == "sqlite":
        sql, params = candidates.values_list("scan_id").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            plan = " | ".join(str(row[-1]) for row in cursor.fetchall())
        assert "imaging_fp_phash_piece" in plan, plan
        assert "SCAN imaging_fingerprint" not in plan, plan


def _fingerprint_reads(
    record: list[tuple[str, int]],
) -> Callable[[Any, str, Any, bool, dict[str, Any]], Any]:
    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        if sql.lstrip().upper().startswith("SELECT") and '"perceptual_hash"' in sql:
            record.append((sql, len(connection.atomic_blocks)))
        return execute(sql, params, many, context)

    return wrapper


def test_processing_reads_other_fingerprints_outside_the_scan_lock(
    bright_detector: None,
    technician: Any,
    patient: Any,
    text_png: tuple[bytes, np.ndarray],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        (first,) = scan_upload(
            patient=patient, uploads=[as_upload("a.png", text_png[0])], uploaded_by=technician
        )
        (second,) = scan_upload(
            patient=patient, uploads=[as_upload("b.png", text_png[0])], uploaded_by=technician
        )
    jobs.scan_process(scan_id=first.pk)
    outside = len(connection.atomic_blocks)  # the test's own transaction
    reads: list[tuple[str, int]] = []
    with connection.execute_wrapper(_fingerprint_reads(reads)):
        jobs.scan_process(scan_id=second.pk)

    second.refresh_from_db()
    assert second.possible_duplicate and second.duplicate_of_id == first.pk
    assert reads, "the duplicate search read no fingerprint"
    # The scan's row is locked inside _scan_complete's transaction, one level deeper.
    assert all(depth == outside for _, depth in reads), reads
