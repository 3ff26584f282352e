"""Small files that cost a great deal (issue 21 items 1-5): refused or failed fast, in bounded
memory. The memory-bound tests run the real validator in a child process and read its peak
resident set size (ru_maxrss) above what it held after its imports."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.utils import timezone
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from audit.models import Action, AuditEvent
from engine.dicom import guards as intake_guards
from engine.errors import ImagingError
from engine.intake.validation import validate_upload
from imaging.models import FailureReason, Scan, ScanStatus
from imaging.services import processing as services
from imaging.services.upload import scan_upload
from imaging.tasks import process_scan
from imaging.tests import factories
from imaging.tests.conftest import as_upload, media_files

ROOT = Path(__file__).resolve().parents[2]
MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 60_000_000
NESTED_TAG = (0x0040, 0x0275)  # Request Attributes Sequence: SQ in the dictionary.
PIXEL_DATA = b"\xe0\x7f\x10\x00"


def _validate(data: bytes, **limits: Any) -> Any:
    return validate_upload(
        name="upload",
        data=data,
        max_bytes=MAX_BYTES,
        max_pixels=limits.pop("max_pixels", MAX_PIXELS),
        max_dicom_bytes=1 << 30,
        **limits,
    )


def _refusal(data: bytes, **limits: Any) -> ImagingError:
    with pytest.raises(ImagingError) as caught:
        _validate(data, **limits)
    return caught.value


# --- Crafted files --------------------------------------------------------------------------


def _dicom(syntax: UID = ExplicitVRLittleEndian, *, declared: UID | None = None) -> bytes:
    """A valid 8x8 8-bit secondary capture in `syntax` (pydicom deflates it when asked),
    its file meta naming `declared` instead when given."""
    if declared is not None:
        head, body = _dicom(declared), _dicom(syntax)
        return head[: _dataset_start(head)] + body[_dataset_start(body) :]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(64))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _dataset_start(data: bytes) -> int:
    meta = intake_guards._file_meta(data)
    assert meta is not None
    return meta[0]


def _element(tag: tuple[int, int], vr: bytes, value: bytes, *, implicit: bool) -> bytes:
    head = struct.pack("<HH", *tag)
    if implicit:
        return head + struct.pack("<I", len(value)) + value
    if vr in (b"SQ", b"UN", b"OB"):
        return head + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + vr + struct.pack("<H", len(value)) + value


def _nested(depth: int, *, mode: str) -> bytes:
    """Sequences nested `depth` deep, in one of the ways pydicom reads a sequence."""
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    sequence_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    open_item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    tag = struct.pack("<HH", *NESTED_TAG)
    if mode in ("explicit-undefined", "implicit-undefined", "un-undefined", "implicit-items"):
        if mode == "explicit-undefined":
            opening = tag + b"SQ\0\0" + b"\xff" * 4
        elif mode in ("un-undefined", "implicit-items"):
            # UN of undefined length: pydicom reads it as a sequence in implicit VR; and an
            # item of an explicit sequence whose first element looks implicit is read so.
            vr = b"UN" if mode == "un-undefined" else b"SQ"
            outer = tag + vr + b"\0\0" + b"\xff" * 4 + open_item
            inner = tag + b"\xff" * 4 + open_item
            return outer + inner * (depth - 1) + (item_end + sequence_end) * depth
        else:
            opening = tag + b"\xff" * 4
        return (opening + open_item) * depth + (item_end + sequence_end) * depth
    implicit = mode == "implicit-defined"
    inner = _element((0x0040, 0x0280), b"ST", b"DEEP", implicit=implicit)
    for _ in range(depth):
        item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
        inner = _element(NESTED_TAG, b"SQ", item, implicit=implicit)
    return inner


def deep_dicom(depth: int, *, mode: str = "explicit-defined", declared: UID | None = None) -> bytes:
    syntax = ImplicitVRLittleEndian if mode.startswith("implicit-") else ExplicitVRLittleEndian
    if mode == "implicit-items":
        syntax = ExplicitVRLittleEndian
    base = _dicom(syntax, declared=declared)
    at = base.index(PIXEL_DATA, 132)
    return base[:at] + _nested(depth, mode=mode) + base[at:]


def deflate_bomb(inflated_bytes: int) -> bytes:
    """A Deflated Explicit VR Little Endian file of about inflated_bytes / 1000 that inflates
    to inflated_bytes: a small valid header, then a Pixel Data value of zeros.

    Built without deflating all those zeros: a full flush ends a deflate block on a byte
    boundary with no history, so one deflated megabyte of zeros can be repeated."""
    small = _dicom(DeflatedExplicitVRLittleEndian)
    start = _dataset_start(small)
    body = zlib.decompress(small[start:], -zlib.MAX_WBITS)
    header = body[: body.index(PIXEL_DATA)]
    megabyte = 1 << 20
    count = inflated_bytes // megabyte
    pixel_header = PIXEL_DATA + b"OB\0\0" + struct.pack("<I", count * megabyte)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = deflater.compress(header + pixel_header) + deflater.flush(zlib.Z_FULL_FLUSH)
    zeros = deflater.compress(bytes(megabyte)) + deflater.flush(zlib.Z_FULL_FLUSH)
    return small[:start] + head + zeros * count + deflater.flush(zlib.Z_FINISH)


def j2k_bomb() -> bytes:
    """pydicom's 64x64 JPEG 2000 MR whose codestream SIZ is rewritten to 20000x20000."""
    data = bytearray(Path(get_testdata_file("MR_small_jp2klossless.dcm")).read_bytes())
    siz = data.index(b"\xff\x4f\xff\x51")
    struct.pack_into(">II", data, siz + 8, 20000, 20000)  # Xsiz, Ysiz
    struct.pack_into(">II", data, siz + 24, 20000, 20000)  # one tile: XTsiz, YTsiz
    return bytes(data)


# --- Peak memory in a child process ---------------------------------------------------------

_PROBE = r"""
import json, resource, sys, time
# A safety net for a regression: it fails the test instead of taking the machine's memory.
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
import django
django.setup()
from engine.dicom import io as dicom
from engine.errors import ImagingError
from engine.intake.validation import validate_upload
data = open(sys.argv[1], "rb").read()
limits = json.loads(sys.argv[2])
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
try:
    image = validate_upload(name="probe", data=data, **limits)
    if image.kind == "dicom":
        # What processing does next with a DICOM: write it back (600 levels took 24 GB here).
        dicom.write_redacted_dataset(data, image.pixels)
    outcome = "accepted"
except ImagingError as exc:
    outcome = exc.code
except MemoryError:
    outcome = "MemoryError"
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline
seconds = time.monotonic() - started
print(json.dumps({"outcome": outcome, "seconds": seconds, "peak_mb": peak / 1024}))
"""


def _probe(tmp_path: Path, data: bytes, **limits: Any) -> dict[str, Any]:
    """Validate `data` in a fresh interpreter: its outcome, seconds, and peak MB above the
    memory it held after importing everything."""
    path = tmp_path / "probe.bin"
    path.write_bytes(data)
    arguments = {
        "max_bytes": MAX_BYTES,
        "max_pixels": MAX_PIXELS,
        "max_dicom_bytes": 1 << 30,
        **limits,
    }
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "medimg.settings"}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), json.dumps(arguments)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- 1. Deep nesting and element count ------------------------------------------------------


def test_it_refuses_sequences_nested_600_deep_fast_in_bounded_memory(tmp_path: Path) -> None:
    data = deep_dicom(600)
    assert len(data) < 64 * 1024  # A small file: the was 51 KB.

    result = _probe(tmp_path, data)

    assert result["outcome"] == "dicom_too_deep", result
    assert result["seconds"] < 2.0, result
    assert result["peak_mb"] < 50, result  # It took 24 GB before.


@pytest.mark.parametrize(
    "mode",
    [
        "explicit-defined",
        "explicit-undefined",
        "implicit-defined",
        "implicit-undefined",
        "un-undefined",
        "implicit-items",
    ],
)
def test_it_refuses_deep_nesting_in_every_encoding(mode: str) -> None:
    refusal = _refusal(deep_dicom(600, mode=mode))

    assert refusal.code == "dicom_too_deep"
    assert refusal.status_code == 400


@pytest.mark.parametrize("mode", ["implicit-defined", "implicit-undefined"])
def test_it_walks_a_data_set_in_the_encoding_pydicom_will_read(mode: str) -> None:
    # The file meta says explicit VR; the elements are implicit, and pydicom reads them so.
    data = deep_dicom(600, mode=mode, declared=ExplicitVRLittleEndian)

    assert _refusal(data).code == "dicom_too_deep"
    shallow = deep_dicom(3, mode=mode, declared=ExplicitVRLittleEndian)
    assert _validate(shallow).frames == 1


@pytest.mark.parametrize("mode", ["explicit-defined", "implicit-undefined", "un-undefined"])
def test_it_accepts_nesting_within_the_limit(mode: str) -> None:
    depth = intake_guards.MAX_SEQUENCE_DEPTH
    data = deep_dicom(depth, mode=mode)

    intake_guards.dicom_structure_check(data)  # Exactly at the limit: passes.
    with pytest.raises(ImagingError) as caught:
        intake_guards.dicom_structure_check(data, max_depth=depth - 1)
    assert caught.value.code == "dicom_too_deep"
    assert _validate(data).frames == 1


def test_it_refuses_too_many_elements_counting_those_in_sequences() -> None:
    data = deep_dicom(10)  # 10 sequences and the element inside, plus the header's.
    top_level = len(list(_dicom_elements(_dicom())))

    intake_guards.dicom_structure_check(data, max_elements=top_level + 11)
    with pytest.raises(ImagingError) as caught:
        intake_guards.dicom_structure_check(data, max_elements=top_level + 10)

    assert caught.value.code == "too_many_elements"


def _dicom_elements(data: bytes) -> list[int]:
    import pydicom

    return [int(e.tag) for e in pydicom.dcmread(io.BytesIO(data))]


def test_real_files_pass_the_walk_with_their_elements_and_depth() -> None:
    # pydicom's own test files: deflated, implicit, big endian, encapsulated, private
    # sequences, enhanced multi-frame with per-frame groups (depth 3).
    names = [
        "image_dfl.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "JPEG2000.dcm",
        "emri_small.dcm",
        "rtplan.dcm",
        "nested_priv_SQ.dcm",
        "SC_rgb_jpeg.dcm",
    ]
    for name in names:
        data = Path(get_testdata_file(name)).read_bytes()
        intake_guards.dicom_structure_check(data)
    # And the walk does see the nesting that is there: rtplan.dcm nests 2 deep.
    rtplan = Path(get_testdata_file("rtplan.dcm")).read_bytes()
    with pytest.raises(ImagingError):
        intake_guards.dicom_structure_check(rtplan, max_depth=1)


def test_it_refuses_a_delimiter_out_of_place_as_damage() -> None:
    base = _dicom()
    at = base.index(PIXEL_DATA, 132)
    stray = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)

    refusal = _refusal(base[:at] + stray + base[at:])

    assert refusal.code == "corrupt_image"


# --- 1. The requeue's attempt cap -----------------------------------------------------------


@pytest.fixture
def stored_scan(
    bright_detector: None, technician: Any, patient: Any, django_capture_on_commit_callbacks: Any
) -> Scan:
    """An upload whose processing never ran (its commit hook dropped, as if lost)."""
    png = factories.png_bytes(factories.text_image(64, 48))
    with django_capture_on_commit_callbacks(execute=False):
        (scan,) = scan_upload(
            patient=patient, uploads=[as_upload("a.png", png)], uploaded_by=technician
        )
    return scan


def _stuck(scan: Scan, *, attempts: int) -> None:
    """As a worker killed mid-task leaves it: processing, some time ago."""
    Scan.objects.filter(pk=scan.pk).update(
        status=ScanStatus.PROCESSING,
        attempts=attempts,
        updated_at=timezone.now() - timedelta(hours=1),
    )


@pytest.mark.django_db
def test_the_requeue_fails_a_scan_out_of_attempts_instead_of_requeueing_it(
    stored_scan: Scan, settings: Any
) -> None:
    settings.IMAGING_MAX_ATTEMPTS = 3
    _stuck(stored_scan, attempts=3)

    requeued = services.scans_requeue(older_than_seconds=60)

    assert requeued == []
    stored_scan.refresh_from_db()
    assert stored_scan.status == ScanStatus.FAILED
    assert stored_scan.failure_reason == FailureReason.TOO_MANY_ATTEMPTS
    assert stored_scan.attempts == 3  # No further run was started.
    failed = AuditEvent.objects.get(action=Action.SCAN_FAILED)
    assert failed.details == {"reason": "too_many_attempts", "attempt": 3}
    # The next round of the requeue leaves it alone.
    assert services.scans_requeue(older_than_seconds=0) == []


@pytest.mark.django_db
def test_the_requeue_still_retries_a_scan_below_the_cap(stored_scan: Scan, settings: Any) -> None:
    settings.IMAGING_MAX_ATTEMPTS = 3
    _stuck(stored_scan, attempts=2)

    assert services.scans_requeue(older_than_seconds=60) == [stored_scan.pk]

    stored_scan.refresh_from_db()
    assert stored_scan.status == ScanStatus.COMPLETED
    assert stored_scan.attempts == 3


@pytest.mark.django_db
def test_the_requeue_waits_the_configured_stuck_time(stored_scan: Scan, settings: Any) -> None:
    _stuck(stored_scan, attempts=0)  # an hour ago
    settings.IMAGING_STUCK_AFTER_SECONDS = 2 * 3600
    assert services.scans_requeue() == []
    settings.IMAGING_STUCK_AFTER_SECONDS = 1800
    assert services.scans_requeue() == [stored_scan.pk]


@pytest.mark.django_db
def test_the_requeue_sends_a_stuck_scan_once_per_stuck_time(stored_scan: Scan) -> None:
    # Every beat sweep used to send the whole backlog older than the stuck time again, so a
    # queue longer than that time grew by its own length on every sweep.
    from imaging.jobs.processing import scans_stuck

    _stuck(stored_scan, attempts=0)
    assert scans_stuck(older_than_seconds=60) == [stored_scan.pk]
    assert scans_stuck(older_than_seconds=60) == []  # the next sweep, seconds later
    stored_scan.refresh_from_db()
    assert stored_scan.status == ScanStatus.PROCESSING  # only its requeue time moved
    Scan.objects.filter(pk=stored_scan.pk).update(updated_at=timezone.now() - timedelta(seconds=61))
    assert scans_stuck(older_than_seconds=60) == [stored_scan.pk]  # a stuck time later


@pytest.mark.django_db
def test_a_redelivered_message_past_the_cap_fails_the_scan_without_running(
    stored_scan: Scan, settings: Any
) -> None:
    # acks_late and reject_on_worker_lost: the broker hands a killed worker's message on.
    settings.IMAGING_MAX_ATTEMPTS = 2
    _stuck(stored_scan, attempts=2)

    process_scan.delay(scan_id=stored_scan.pk)

    stored_scan.refresh_from_db()
    assert stored_scan.status == ScanStatus.FAILED
    assert stored_scan.failure_reason == FailureReason.TOO_MANY_ATTEMPTS
    assert stored_scan.attempts == 2
    assert not stored_scan.regions.exists()


@pytest.mark.django_db
def test_an_admin_reprocess_starts_a_fresh_count(
    stored_scan: Scan, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.IMAGING_MAX_ATTEMPTS = 2
    _stuck(stored_scan, attempts=2)
    services.scans_requeue(older_than_seconds=60)

    with django_capture_on_commit_callbacks(execute=True):
        services.scans_reprocess(scan_ids=[stored_scan.pk])

    stored_scan.refresh_from_db()
    assert stored_scan.status == ScanStatus.COMPLETED
    assert stored_scan.attempts == 1


# --- 2. Deflated transfer syntax ------------------------------------------------------------


def test_it_refuses_a_deflate_bomb_without_inflating_it(tmp_path: Path) -> None:
    data = deflate_bomb(1 << 30)  # 1 GiB of zeros, in about a megabyte.
    assert len(data) < 2 * 1024 * 1024

    result = _probe(tmp_path, data, max_decoded_bytes=64 << 20)

    assert result["outcome"] == "decoded_too_large", result
    assert result["peak_mb"] < 200, result  # pydicom inflated all of it before.
    assert result["seconds"] < 5.0, result


def test_a_deflate_bomb_is_a_413_with_the_settings_budget(settings: Any) -> None:
    refusal = _refusal(deflate_bomb(32 << 20), max_decoded_bytes=16 << 20)

    assert refusal.code == "decoded_too_large"
    assert refusal.status_code == 413


def test_it_still_accepts_valid_deflated_files() -> None:
    real = Path(get_testdata_file("image_dfl.dcm")).read_bytes()
    ours = _dicom(DeflatedExplicitVRLittleEndian)

    image = _validate(real, max_decoded_bytes=2 << 30)
    assert image.kind == "dicom" and image.pixels.size > 0
    assert np.array_equal(_validate(ours).pixels[0], np.arange(64, dtype=np.uint8).reshape(8, 8))


def test_inflate_bounded_gives_the_data_back_or_refuses() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = deflater.compress(payload) + deflater.flush()

    assert bytes(intake_guards.inflate_bounded(stream, max_bytes=len(payload))) == payload
    with pytest.raises(ImagingError) as over:
        intake_guards.inflate_bounded(stream, max_bytes=len(payload) - 1)
    assert over.value.code == "decoded_too_large"
    with pytest.raises(ImagingError) as broken:
        intake_guards.inflate_bounded(b"\xff" * 64, max_bytes=1 << 20)
    assert broken.value.code == "corrupt_image"


# --- 3. Compressed frames' own sizes --------------------------------------------------------


def test_it_refuses_a_jpeg2000_codestream_larger_than_its_header(tmp_path: Path) -> None:
    result = _probe(tmp_path, j2k_bomb())

    assert result["outcome"] == "inconsistent_image", result
    assert result["peak_mb"] < 100, result  # The decoder took about 1 GB before refusing.
    assert result["seconds"] < 2.0, result


@pytest.mark.parametrize(
    ("name", "marker"),
    [
        ("SC_rgb_jpeg.dcm", b"\xff\xc0"),  # baseline JPEG: SOF0
        ("JPEG-lossy.dcm", b"\xff\xc1"),  # extended JPEG: SOF1
        ("MR_small_jpeg_ls_lossless.dcm", b"\xff\xf7"),  # JPEG-LS: SOF55
    ],
)
def test_it_reads_jpeg_and_jpeg_ls_frame_headers_before_decoding(name: str, marker: bytes) -> None:
    original = Path(get_testdata_file(name)).read_bytes()
    assert _validate(original).frames >= 1  # As stored: consistent, accepted.
    data = bytearray(original)
    sof = data.index(marker, data.index(b"\xff\xd8", 132))
    struct.pack_into(">HH", data, sof + 5, 20000, 20000)  # height, width

    refusal = _refusal(bytes(data))

    assert refusal.code == "inconsistent_image"
    assert "20000x20000" in refusal.message


def test_real_compressed_frames_declare_their_header_size() -> None:
    for name in ["JPEG2000.dcm", "MR_small_jp2klossless.dcm", "emri_small_jpeg_2k_lossless.dcm"]:
        data = Path(get_testdata_file(name)).read_bytes()
        image = _validate(data)
        assert image.frames >= 1


# --- 4. The request's budget, one file at a time --------------------------------------------


def _large_pngs(count: int, side: int) -> list[bytes]:
    pngs = []
    for i in range(count):
        frame = np.zeros((side, side, 3), dtype=np.uint8)
        frame[:, :, i % 3] = np.arange(side, dtype=np.uint8)[np.newaxis, :]
        frame[i::7, :, :] = 40 * i
        pngs.append(factories.png_bytes(frame))
    return pngs


@pytest.mark.django_db
def test_it_refuses_a_request_over_its_decoded_budget_and_stores_nothing(
    upload: Any, settings: Any
) -> None:
    pngs = _large_pngs(4, 600)  # 1.08 MB decoded each
    settings.UPLOAD_MAX_DECODED_BYTES = 3 * 600 * 600 * 3 + 1024  # room for three

    response = upload(*[(f"{i}.png", png) for i, png in enumerate(pngs)])

    assert response.status_code == 413, response.content
    assert response.json()["error"]["code"] == "decoded_too_large"
    assert not Scan.objects.exists()
    assert media_files(settings) == []


@pytest.mark.django_db
def test_it_holds_one_decoded_image_at_a_time(
    technician: Any, patient: Any, django_capture_on_commit_callbacks: Any
) -> None:
    side = 1200
    pngs = _large_pngs(4, side)
    one_image = side * side * 3  # the decoded pixels; the display copy is as large again

    tracemalloc.start()
    try:
        with django_capture_on_commit_callbacks(execute=False):
            scans = scan_upload(
                patient=patient,
                uploads=[as_upload(f"{i}.png", png) for i, png in enumerate(pngs)],
                uploaded_by=technician,
            )
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert len(scans) == 4
    # All four decoded at once held about 4 x 2 x one_image (four 60-megapixel PNGs: 6.1 GB).
    assert peak < 3 * one_image, f"peak {peak / 1e6:.1f} MB for {one_image / 1e6:.1f} MB images"


@pytest.mark.django_db
def test_it_holds_one_member_of_a_zip_at_a_time(
    technician: Any, patient: Any, django_capture_on_commit_callbacks: Any
) -> None:
    side = 1200
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for i, png in enumerate(_large_pngs(4, side)):
            zipped.writestr(f"series/{i}.png", png)
    one_image = side * side * 3

    tracemalloc.start()
    try:
        with django_capture_on_commit_callbacks(execute=False):
            scans = scan_upload(
                patient=patient,
                uploads=[as_upload("series.zip", archive.getvalue())],
                uploaded_by=technician,
            )
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert [scan.original_filename for scan in scans] == [f"series/{i}.png" for i in range(4)]
    assert peak < 3 * one_image, f"peak {peak / 1e6:.1f} MB for {one_image / 1e6:.1f} MB images"


# --- 5. A processing error after commit, tasks in-process -----------------------------------


def malformed_detector(frame: np.ndarray) -> list[Any]:
    """A detector bug: a box with no coordinates (NaN), an error outside the detector call."""
    return [factories.Detection(box=(float("nan"), 0, 10, 10), label="phi_text", confidence=0.9)]


@pytest.mark.django_db(transaction=True)
def test_a_processing_error_after_commit_is_no_500_and_fails_the_scan(
    api: Any, technician: Any, patient: Any, settings: Any
) -> None:
    settings.IMAGING_DETECTOR = "imaging.tests.test_intake_guards.malformed_detector"
    api.force_authenticate(technician)
    api.raise_request_exception = False  # What the client gets, as in production.
    png = factories.png_bytes(factories.text_image(64, 48))

    response = api.post(
        f"/api/patients/{patient.id}/images/",
        {"files": [as_upload("a.png", png)]},
        format="multipart",
    )

    assert response.status_code == 201, response.content
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert scan.status == ScanStatus.FAILED
    assert scan.failure_reason == FailureReason.PROCESSING_ERROR
