"""Cines: a static overlay is detected once, listed once, and still restores exactly.

The detector here is the real one (engine.detection.detector.detect), wrapped only to count its
calls.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from django.conf import settings as django_settings
from django.urls import reverse

from bench.cine import cine_dicom, cine_frame
from engine.crypto import envelope as crypto
from engine.crypto.sealed_frames import FileFrames
from engine.detection import pipeline
from engine.detection.detector import detect
from engine.detection.groups import frames_label, region_groups
from engine.dicom import deid
from engine.dicom import io as dicom
from engine.errors import CryptoError
from engine.intake.validation import validate_upload
from imaging.models import Scan, ScanStatus
from imaging.tests import factories
from imaging.vault import identity
from imaging.vault.pixels import scan_restore_pixels

CALLS: list[tuple[int, ...]] = []
COUNTING_DETECTOR = "imaging.tests.test_cine.counting_detector"
FRAMES, HEIGHT, WIDTH = 8, 480, 640


WHOLE_FRAMES: list[np.ndarray] = []


def counting_detector(frame: np.ndarray) -> list[Any]:
    CALLS.append(tuple(frame.shape))
    if frame.shape[:2] == (HEIGHT, WIDTH):
        WHOLE_FRAMES.append(frame.copy())
    return detect(frame)


@pytest.fixture
def counted(settings: Any) -> list[tuple[int, ...]]:
    settings.IMAGING_DETECTOR = COUNTING_DETECTOR
    CALLS.clear()
    WHOLE_FRAMES.clear()
    return CALLS


def _decode(data: bytes) -> Any:
    return validate_upload(name="cine.dcm", data=data, max_bytes=len(data), max_pixels=10**9)


@pytest.fixture
def cine_scan(counted: list[tuple[int, ...]], upload: Any) -> tuple[Scan, bytes]:
    data = cine_dicom(FRAMES, HEIGHT, WIDTH)
    response = upload(("cine.dcm", data))
    assert response.status_code == 201, response.content
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert scan.status == ScanStatus.COMPLETED, scan.failure_reason
    return scan, data


def test_it_detects_a_static_overlay_once_and_restores_exactly(
    cine_scan: tuple[Scan, bytes], counted: list[tuple[int, ...]]
) -> None:
    scan, data = cine_scan
    full_frames = [shape for shape in counted if shape[:2] == (HEIGHT, WIDTH)]
    # One whole-frame detection for eight frames; the rest are verification bands.
    assert len(full_frames) == 1
    assert scan.metrics["frames_detected"] == 1
    assert scan.metrics["detector_calls"] == len(counted) <= 3
    # Every frame still has its overlay sealed and filled: three lines on eight frames.
    assert scan.metrics["region_groups"] == 3
    assert scan.regions.count() == 3 * FRAMES
    assert sorted(set(scan.regions.values_list("frame", flat=True))) == list(range(FRAMES))
    np.testing.assert_array_equal(scan_restore_pixels(scan=scan), _decode(data).pixels)


def test_it_lists_one_row_per_box_across_frames(
    cine_scan: tuple[Scan, bytes], api: Any, client: Any, technician: Any
) -> None:
    scan, _ = cine_scan
    api.force_authenticate(technician)
    response = api.get(reverse("image-region-groups", args=[scan.pk]))
    assert response.status_code == 200
    rows = response.json()
    assert [row["number"] for row in rows] == [1, 2, 3]
    assert {row["frames_label"] for row in rows} == {"1-8"}
    assert all(len(row["regions"]) == FRAMES for row in rows)
    # The flat list still has every sealed region.
    assert len(api.get(reverse("image-regions", args=[scan.pk])).json()) == 3 * FRAMES

    client.force_login(technician)
    page = client.get(reverse("scan-page", args=[scan.pk])).content.decode()
    assert page.count("data-region-id=") == 3
    assert page.count("frames 1-8") == 3


@pytest.mark.parametrize("role", ["admin", "outsider"])
def test_it_refuses_the_region_groups_to_a_role_without_patient_access(
    completed_scan: Scan, api: Any, request: pytest.FixtureRequest, role: str
) -> None:
    api.force_authenticate(request.getfixturevalue(role))
    response = api.get(reverse("image-region-groups", args=[completed_scan.pk]))
    assert response.status_code == 403
    assert "box" not in response.content.decode()


def test_it_detects_again_only_where_the_overlay_changes(counted: list[tuple[int, ...]]) -> None:
    frames = []
    for index in range(FRAMES):
        frame = cine_frame(index, HEIGHT, WIDTH)
        if index >= 5:
            # A new line of text appears in the top margin from frame 6 on.
            cv2.putText(
                frame, "ACC 998877 SMITH", (330, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                (255, 255, 255), 1, cv2.LINE_8,
            )  # fmt: skip
        frames.append(frame)
    image = _decode(factories.dicom_bytes(np.stack(frames), photometric="RGB"))
    result = pipeline.pipeline_run(
        image=image,
        data_key=crypto.new_data_key(),
        scan_ref="cine",
        detector=counting_detector,
        classes=django_settings.IMAGING_REDACT_CLASSES,
    )
    detected = [
        index
        for index in range(FRAMES)
        if any(np.array_equal(frame, image.display[index]) for frame in WHOLE_FRAMES)
    ]
    # Frame 1, then frame 6 where the text changed. (The detector may look again at frame 7:
    # its verification on frame 6 can box speckle next to the new line, and a box over
    # moving anatomy is an overlay area that changes.)
    assert detected[:2] == [0, 5]
    assert result.metrics["frames_detected"] == len(detected) <= 3
    before = {r.box.coords for r in result.regions if r.box.frame == 4}
    after = {r.box.coords for r in result.regions if r.box.frame == 5}
    new = after - before
    line = [(x0, y0, x1, y1) for x0, y0, x1, y1 in new if x1 > 330 and y0 < 40]
    assert len(line) == 1
    # The new text is filled on every frame it is on, and nowhere before.
    x0, y0, x1, y1 = line[0]
    assert not result.redacted_display[5:, y0:y1, x0:x1].any()
    assert result.redacted_display[:5, y0:y1, x0:x1].any()


def test_without_reuse_every_frame_is_detected(counted: list[tuple[int, ...]]) -> None:
    image = _decode(cine_dicom(3, HEIGHT, WIDTH))
    reused = pipeline.pipeline_run(
        image=image, data_key=crypto.new_data_key(), scan_ref="a", detector=counting_detector
    )
    every = pipeline.pipeline_run(
        image=image,
        data_key=crypto.new_data_key(),
        scan_ref="b",
        detector=counting_detector,
        reuse_static=False,
    )
    assert reused.metrics["frames_detected"] == 1
    assert every.metrics["frames_detected"] == 3
    # Reuse changes the cost, not what is covered: every pixel of overlay ink is filled on
    # every frame either way (boxes may differ by a pixel: the JPEG noise differs per frame).
    ink = (np.asarray(image.display) > 200).all(axis=3)
    ink[:, int(HEIGHT * 0.2) : int(HEIGHT * 0.82)] = False  # the speckle, not text
    assert ink.sum() > 1000
    for result in (reused, every):
        assert not result.redacted_display[ink].any()


def test_frames_are_counted_from_one_in_runs() -> None:
    assert frames_label(range(100)) == "1-100"
    assert frames_label([0, 1, 2, 5]) == "1-3, 6"
    assert frames_label([3]) == "4"


def test_groups_are_numbered_by_their_first_region() -> None:
    box = pipeline.Box
    regions = [
        pipeline.SealedRegion(i, b, b"", "uint8", 3, 0.0, 0.0)
        for i, b in enumerate(
            [
                box(0, "phi_text", 0.9, 0, 0, 10, 10),
                box(0, "phi_text", 0.8, 20, 0, 30, 10),
                box(1, "phi_text", 0.7, 0, 0, 10, 10),
                box(1, "barcode", 0.7, 0, 0, 10, 10),
            ]
        )
    ]

    class Row:
        def __init__(self, sealed: pipeline.SealedRegion) -> None:
            self.index, self.frame = sealed.index, sealed.box.frame
            self.label, self.confidence, self.box = (
                sealed.box.label,
                sealed.box.confidence,
                (sealed.box.coords),
            )

    groups = region_groups([Row(r) for r in reversed(regions)])
    assert [(g.number, g.label, g.frames_label) for g in groups] == [
        (1, "phi_text", "1-2"),
        (2, "phi_text", "1"),
        (3, "barcode", "2"),
    ]
    assert groups[0].confidence == 0.9


CHILD = """
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medimg.settings")
import django
django.setup()
from bench.cine import process_cine
from imaging.tests.factories import bright_text_detector
data = open(sys.argv[1], "rb").read()
print(json.dumps(process_cine(data, bright_text_detector, with_dicom=sys.argv[2:] == ["dicom"])))
"""


def _peak_rss_mib(path: Any, *, with_dicom: bool = False) -> float:
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), *(["dicom"] if with_dicom else [])],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=str(django_settings.BASE_DIR),
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return float(report["peak_rss_mib"])


def test_peak_memory_grows_with_the_frame_size_not_the_frame_count(tmp_path: Any) -> None:
    side = 384
    frame_mib = side * side * 3 / 2**20
    peaks = {}
    for count in (10, 40):
        path = tmp_path / f"cine-{count}.dcm"
        path.write_bytes(cine_dicom(count, side, side))
        peaks[count] = _peak_rss_mib(path)
    # Holding the 30 extra frames even once as a whole array adds 30 frames' worth (12.7 MiB
    # here); the whole-array pipeline before this grew by 228 MiB (324 -> 552 MiB, measured
    # with the same cines). Frame by frame, what grows is the compressed file (about 1.5 MiB
    # for 30 JPEG frames, held a few times: upload bytes, dataset, original copy).
    assert peaks[40] - peaks[10] < 30 * frame_mib, peaks


def test_the_deidentified_dicom_copy_is_written_without_holding_the_frames(tmp_path: Any) -> None:
    side = 384
    frame_mib = side * side * 3 / 2**20
    peaks = {}
    for count in (10, 40):
        path = tmp_path / f"cine-{count}.dcm"
        path.write_bytes(cine_dicom(count, side, side))
        peaks[count] = _peak_rss_mib(path, with_dicom=True)
    # The copy built from the whole redacted array (the pixel bytes, the file, the file read
    # again and written de-identified, its ciphertext) grew by 70 MiB from 10 to 40 frames
    # (272 -> 342 MiB, several copies of 30 frames of 12.7 MiB); written frame by frame into
    # a file and encrypted from it, by 4.6 MiB (256 -> 260 MiB), measured with these cines.
    assert peaks[40] - peaks[10] < 30 * frame_mib, peaks


@pytest.mark.parametrize(
    "name",
    ["cine", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "SC_rgb_small_odd.dcm"],
)
def test_the_deidentified_copy_written_frame_by_frame_is_the_whole_file_deidentified(
    name: str, tmp_path: Any
) -> None:
    from pathlib import Path

    from pydicom.data import get_testdata_file

    data = cine_dicom(5, 48, 64) if name == "cine" else Path(get_testdata_file(name)).read_bytes()
    pixels = dicom.decode_pixels(dicom.read_dataset(data)).copy()
    pixels.reshape(-1)[::7] = 0  # "redacted"
    with open(tmp_path / "frames.raw", "w+b") as raw, open(tmp_path / "out.dcm", "w+b") as out:
        raw.write(pixels.tobytes())
        outcome = identity.dicom_deidentify(
            data,
            FileFrames(raw, shape=pixels.shape, dtype=pixels.dtype),
            pixels_clean=True,
            regions=1,
            out=out,
        )
        out.seek(0)
        streamed = out.read()
    # What the whole-array code did: the whole redacted file, then the profile over all of it.
    whole = deid.deidentify(
        dicom.write_redacted_dataset(data, pixels),
        options=identity.deid_options(pixels_clean=True),
        uid_secret=identity.uid_secret(),
        date_shift_days=outcome.date_shift_days,
        safe_private=identity.safe_private(),
        pseudonym=outcome.pseudonym,
    ).data
    assert outcome.data == b""
    assert streamed == whole
    in_memory = identity.dicom_deidentify(data, pixels, pixels_clean=True, regions=1)
    assert in_memory.data == whole
    assert np.array_equal(dicom.decode_pixels(dicom.read_dataset(streamed)), pixels)


def test_a_blob_encrypted_from_a_file_opens_as_an_encrypted_blob(tmp_path: Any) -> None:
    key = crypto.new_data_key()
    plaintext = np.random.default_rng(3).bytes(3 * 2**20 + 5)
    with open(tmp_path / "plain", "w+b") as plain, open(tmp_path / "sealed", "w+b") as sealed:
        plain.write(plaintext)
        crypto.encrypt_blob_file(key, plain, sealed, aad=b"ctx", chunk=2**20)
        sealed.seek(0)
        blob = sealed.read()
    assert crypto.decrypt_blob(key, blob, aad=b"ctx") == plaintext
    with pytest.raises(CryptoError):
        crypto.decrypt_blob(key, blob, aad=b"other")


def test_the_cine_benchmark_reports_time_calls_and_peak_memory(tmp_path: Any) -> None:
    import json

    from django.core.management import call_command

    out = tmp_path / "cine.json"
    call_command(
        "bench_pipeline",
        cine="2,3",
        cine_size="160x120",
        detector="imaging.tests.factories.bright_text_detector",
        json_path=str(out),
        stdout=io.StringIO(),
    )
    rows = json.loads(out.read_text())
    assert [row["cine"]["frames"] for row in rows] == [2, 3]
    for row in rows:
        assert row["one_frame"]["frames"] == 1
        assert row["cine"]["peak_rss_mib"] > 0 and row["cine"]["timings"]["total_ms"] > 0
        assert row["cine"]["timings"]["cpu_ms"] > 0 and row["one_frame"]["timings"]["cpu_ms"] > 0
        assert row["cine"]["pixels_sha256"] != row["one_frame"]["pixels_sha256"]


@pytest.fixture
def stored_cine(
    counted: list[tuple[int, ...]],
    technician: Any,
    patient: Any,
    django_capture_on_commit_callbacks: Any,
) -> tuple[Scan, bytes]:
    """A stored cine upload whose processing has not run yet (its commit hook dropped)."""
    from imaging.services import upload as upload_service
    from imaging.tests.conftest import as_upload

    data = cine_dicom(FRAMES, HEIGHT, WIDTH)
    with django_capture_on_commit_callbacks(execute=False):
        (scan,) = upload_service.scan_upload(
            patient=patient, uploads=[as_upload("cine.dcm", data)], uploaded_by=technician
        )
    assert scan.status == ScanStatus.UPLOADED
    return scan, data


def _decode_spy(monkeypatch: Any) -> list[int]:
    """Every frame index engine.dicom.io.decode_frame is asked for (the real decoder runs)."""
    calls: list[int] = []
    real = dicom.decode_frame

    def spy(ds: Any, index: int) -> np.ndarray:
        calls.append(index)
        return real(ds, index)

    monkeypatch.setattr(dicom, "decode_frame", spy)
    return calls


def test_the_worker_decodes_each_frame_of_a_cine_once(
    stored_cine: tuple[Scan, bytes], monkeypatch: Any
) -> None:
    from imaging.jobs.processing import scan_process

    scan, data = stored_cine
    calls = _decode_spy(monkeypatch)
    scan_process(scan_id=scan.pk)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.COMPLETED, scan.failure_reason
    # Validation and the pipeline share one decode per frame (it was two, plus the digest's).
    assert sorted(calls) == list(range(FRAMES))
    assert scan.metrics["timings"]["read_ms"] > 0
    monkeypatch.undo()
    np.testing.assert_array_equal(scan_restore_pixels(scan=scan), _decode(data).pixels)


def test_the_worker_refuses_a_cine_whose_pixels_do_not_hash_to_the_uploads_digest(
    stored_cine: tuple[Scan, bytes], settings: Any
) -> None:
    from imaging.jobs.processing import scan_process
    from imaging.models import FailureReason

    scan, _data = stored_cine
    Scan.objects.filter(pk=scan.pk).update(pixels_sha256="0" * 64)
    before = {p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()}
    scan_process(scan_id=scan.pk)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.FAILED
    assert scan.failure_reason == FailureReason.DECODE_FAILED
    # The frames written during the pass are deleted again: nothing but the upload is left.
    after = {p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()}
    assert after == before


def test_quality_metrics_are_reused_for_frames_whose_overlay_repeats() -> None:
    data = cine_dicom(FRAMES, HEIGHT, WIDTH)
    image = _decode(data)
    result = pipeline.pipeline_run(
        image=image, data_key=crypto.new_data_key(), scan_ref="q", detector=detect
    )
    # Scored once, reused for the seven frames whose boxes and pixels around them repeat,
    # and the same values as the whole-frame metrics on the stacked frames.
    assert result.metrics["quality_reused"] == FRAMES - 1
    expected = pipeline.quality_metrics(np.asarray(image.display), result.redacted_display)
    assert result.metrics["ssim"] == pytest.approx(expected["ssim"], abs=1e-12)
    assert result.metrics["psnr"] == pytest.approx(expected["psnr"], abs=1e-9)


def _png_pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def test_later_frames_get_their_pngs_on_first_request_the_same_as_processing_drew_them(
    cine_scan: tuple[Scan, bytes], api: Any, technician: Any, settings: Any
) -> None:
    from engine.pixels.restoration import encode_image
    from imaging.jobs.batch import pipeline_options

    scan, data = cine_scan
    # Frame 0 is written by processing (thumbnails, the scan page); the other frames are
    # shown as stored (RGB), so theirs wait for a request.
    for kind in ("redacted", "grid"):
        assert scan.frame_paths[kind][0] and scan.frame_digests[kind][0]
        assert scan.frame_paths[kind][1:] == [""] * (FRAMES - 1)
        assert scan.frame_digests[kind][1:] == [""] * (FRAMES - 1)
    assert scan.metrics["display_pngs_deferred"] == 2 * (FRAMES - 1)
    # What processing would have drawn: the same pipeline, every frame kept.
    image = _decode(data)
    eager = pipeline.pipeline_run(
        image=image,
        data_key=crypto.new_data_key(),
        scan_ref="eager",
        detector=detect,
        **pipeline_options(image),
    )
    api.force_authenticate(technician)
    for frame in range(FRAMES):
        for kind, expected in (
            ("redacted", eager.redacted_display[frame]),
            ("grid", eager.grid_display[frame]),
        ):
            response = api.get(f"/api/images/{scan.pk}/{kind}/?frame={frame}")
            assert response.status_code == 200, (kind, frame)
            assert response.content == encode_image(expected, "png"), (kind, frame)
    scan.refresh_from_db()
    # Stored and bound once drawn: every frame now has its file and its keyed digest.
    for kind in ("redacted", "grid"):
        assert all(scan.frame_paths[kind]) and all(scan.frame_digests[kind])
        assert len(set(scan.frame_paths[kind])) == FRAMES
    again = api.get(f"/api/images/{scan.pk}/grid/?frame=5")
    assert again.status_code == 200
    np.testing.assert_array_equal(_png_pixels(again.content), eager.grid_display[5])
    # ... and checked like any stored frame: another frame's file copied over it is refused.
    media = Path(settings.MEDIA_ROOT)
    (media / scan.frame_paths["grid"][5]).write_bytes(
        (media / scan.frame_paths["grid"][4]).read_bytes()
    )
    tampered = api.get(f"/api/images/{scan.pk}/grid/?frame=5")
    assert tampered.status_code == 500
    assert tampered.json()["error"]["code"] == "restore_failed"


def test_a_deferred_frame_is_drawn_from_the_sealed_pixels_or_not_at_all(
    cine_scan: tuple[Scan, bytes], api: Any, technician: Any, settings: Any
) -> None:
    scan, _ = cine_scan
    sealed = Path(settings.MEDIA_ROOT) / scan.redacted_pixels_path
    blob = bytearray(sealed.read_bytes())
    blob[-20] ^= 1  # A bit of the last frame's chunk.
    sealed.write_bytes(bytes(blob))
    api.force_authenticate(technician)
    assert api.get(f"/api/images/{scan.pk}/redacted/?frame=2").status_code == 200
    response = api.get(f"/api/images/{scan.pk}/redacted/?frame={FRAMES - 1}")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "restore_failed"
    scan.refresh_from_db()
    assert scan.frame_paths["redacted"][FRAMES - 1] == ""
