"""`manage.py redact`: real files in, redacted files out in their own format, one JSON line each.

Two detectors. The YOLO detector (the configured default) on real burned-in text, skipped
only when its weights file is missing; and the classical `bright_text_detector` through
`settings.IMAGING_DETECTOR`, which finds the near-white annotations of the same real
ultrasounds, so the command's own behaviour (formats, DICOM round trip, errors, folders,
exit status) is tested whatever state the weights are in.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image
from pydicom.uid import JPEGLSLossless

from engine.detection import detector as detection
from engine.dicom import io as dicom
from engine.intake.validation import validate_upload
from imaging.tests.conftest import BRIGHT_DETECTOR
from imaging.tests.fixtures.samples import deid_bytes, dicom_bytes, png_bytes

ROOT = Path(__file__).resolve().parents[2]
BURNED_IN = "US1_UNCR.dcm"  # RGB ultrasound, patient name and dates burned in
MULTI_FRAME = "OBXXXX1A_2frame.dcm"  # palette colour, two frames, text on both

# The command reads the scanner rules (imaging.models.ScannerRule) from the database.
pytestmark = pytest.mark.django_db


@pytest.fixture
def yolo(settings: Any) -> None:
    """The configured YOLO detector; skipped only when its weights file does not exist."""
    settings.IMAGING_DETECTOR = "imaging.jobs.detector.detect"
    path = detection.weights_path()
    if not path.is_file():
        pytest.skip(f"no detector weights at {path} (not trained yet)")


def redact(*args: str) -> tuple[list[dict[str, Any]], CommandError | None]:
    """Run the command in-process: its JSON lines, and the CommandError it ended with."""
    out = io.StringIO()
    error = None
    try:
        call_command("redact", *args, stdout=out)
    except CommandError as exc:
        error = exc
    return [json.loads(line) for line in out.getvalue().splitlines()], error


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def decoded(data: bytes) -> np.ndarray:
    return validate_upload(name="x", data=data, max_bytes=10**9, max_pixels=10**9).pixels


def region_mask(shape: tuple[int, ...], regions: list[dict[str, Any]]) -> np.ndarray:
    """True inside any reported box, per frame: (F, H, W)."""
    mask = np.zeros(shape[:3], bool)
    for region in regions:
        x0, y0, x1, y1 = region["box"]
        mask[region["frame"], y0:y1, x0:x1] = True
    return mask


def assert_changed_only_in_boxes(
    before: np.ndarray, after: np.ndarray, regions: list[dict[str, Any]]
) -> None:
    assert after.shape == before.shape and after.dtype == before.dtype
    mask = region_mask(before.shape, regions)
    assert mask.any(), "nothing was found to redact"
    assert np.array_equal(after[~mask], before[~mask])
    assert not after[mask].any(), "a reported box is not filled"
    # The fill reached every frame that had text.
    for frame in {r["frame"] for r in regions}:
        assert not np.array_equal(after[frame], before[frame])


def png_from_deid_data(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """deid-data's RGB ultrasound (real burned-in text) as a PNG; the package ships no PNG."""
    pixels = pydicom.dcmread(io.BytesIO(deid_bytes("ultrasounds/RGB_IMAGE.dcm"))).pixel_array
    return write(tmp_path / "in" / "rgb_ultrasound.png", png_bytes(pixels)), pixels


# --- the command's behaviour, with the classical detector ------------------------------------


@pytest.fixture
def bright(settings: Any) -> None:
    settings.IMAGING_DETECTOR = BRIGHT_DETECTOR
    settings.IMAGING_REDACT_CLASSES = []


def test_it_redacts_a_dicom_keeping_the_dataset(bright: None, tmp_path: Path) -> None:
    source = write(tmp_path / "in" / BURNED_IN, dicom_bytes(BURNED_IN))
    lines, error = redact(str(source), "--out", str(tmp_path / "out"))

    assert error is None
    [line] = lines
    output = Path(line["output"])
    assert output == tmp_path / "out" / "US1_UNCR.redacted.dcm"
    assert line["format"] == "dicom" and line["frames"] == 1
    assert {"class", "confidence", "box", "frame"} <= set(line["regions"][0])
    assert line["ms"] > 0 and "detect_ms" in line["stages_ms"]

    original = pydicom.dcmread(source)
    written = pydicom.dcmread(output)
    assert written.SOPInstanceUID == original.SOPInstanceUID
    assert written.PatientName == original.PatientName  # pixels only: the header is untouched
    assert written.pixel_array.shape == original.pixel_array.shape
    assert_changed_only_in_boxes(
        decoded(source.read_bytes()), decoded(output.read_bytes()), line["regions"]
    )


def test_it_writes_dicom_losslessly_compressed_when_the_setting_says(
    bright: None, settings: Any, tmp_path: Path
) -> None:
    settings.DICOM_OUTPUT_SYNTAX = "jpeg-ls"
    source = write(tmp_path / "in" / BURNED_IN, dicom_bytes(BURNED_IN))
    lines, error = redact(str(source), "--out", str(tmp_path / "out"))
    assert error is None
    [line] = lines
    written = Path(line["output"]).read_bytes()
    assert pydicom.dcmread(io.BytesIO(written)).file_meta.TransferSyntaxUID == JPEGLSLossless
    assert_changed_only_in_boxes(decoded(source.read_bytes()), decoded(written), line["regions"])


def test_it_redacts_each_frame_of_a_multi_frame_dicom(bright: None, tmp_path: Path) -> None:
    source = write(tmp_path / MULTI_FRAME, dicom_bytes(MULTI_FRAME))
    [line], error = redact(str(source), "--out", str(tmp_path / "out"))

    assert error is None
    assert line["frames"] == 2
    assert {r["frame"] for r in line["regions"]} == {0, 1}
    written = pydicom.dcmread(line["output"])
    assert int(written.NumberOfFrames) == 2
    assert written.SOPInstanceUID == pydicom.dcmread(source).SOPInstanceUID
    assert_changed_only_in_boxes(
        decoded(source.read_bytes()), decoded(Path(line["output"]).read_bytes()), line["regions"]
    )


def test_it_writes_8_bit_previews_one_per_frame(bright: None, tmp_path: Path) -> None:
    source = write(tmp_path / MULTI_FRAME, dicom_bytes(MULTI_FRAME))
    [line], _ = redact(str(source), "--out", str(tmp_path / "out"), "--preview-png")

    previews = [Path(p) for p in line["preview"]]
    assert [p.name for p in previews] == [
        "OBXXXX1A_2frame.redacted.preview-1.png",
        "OBXXXX1A_2frame.redacted.preview-2.png",
    ]
    display = validate_upload(
        name="x", data=source.read_bytes(), max_bytes=10**9, max_pixels=10**9
    ).display
    mask = region_mask(display.shape, line["regions"])
    for index, path in enumerate(previews):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "RGB"
            preview = np.asarray(image)
        assert preview.shape == display.shape[1:]
        # The rendering of the redacted file: the same boxes black, the rest as displayed.
        assert not preview[mask[index]].any()
        assert np.array_equal(preview[~mask[index]], display[index][~mask[index]])


def test_it_keeps_a_png_a_png_and_a_jpeg_a_jpeg(bright: None, tmp_path: Path) -> None:
    pixels = decoded(dicom_bytes(BURNED_IN))[0]
    png = write(tmp_path / "in" / "scan.png", png_bytes(pixels))
    jpeg = tmp_path / "in" / "photo.jpeg"
    Image.fromarray(pixels).save(jpeg, format="JPEG", quality=95)
    lines, error = redact(str(png), str(jpeg), "--out", str(tmp_path / "out"))

    assert error is None
    assert [Path(line["output"]).name for line in lines] == [
        "scan.redacted.png",
        "photo.redacted.jpeg",
    ]
    with Image.open(lines[0]["output"]) as image:
        assert image.format == "PNG"
        redacted_png = np.asarray(image)[np.newaxis]
    assert_changed_only_in_boxes(pixels[np.newaxis], redacted_png, lines[0]["regions"])
    with Image.open(lines[1]["output"]) as image:
        assert image.format == "JPEG" and image.size == (pixels.shape[1], pixels.shape[0])
    assert lines[1]["regions"]


def test_a_bad_file_gets_its_error_code_and_the_rest_still_run(
    bright: None, tmp_path: Path
) -> None:
    good = write(tmp_path / "in" / "a_good.dcm", dicom_bytes(BURNED_IN))
    truncated = write(tmp_path / "in" / "b_truncated.dcm", dicom_bytes(BURNED_IN)[:5000])
    text = write(tmp_path / "in" / "c_notes.png", b"not an image at all")
    after = write(tmp_path / "in" / "d_after.dcm", dicom_bytes(MULTI_FRAME))
    missing = tmp_path / "in" / "e_missing.png"
    args = [str(p) for p in (good, truncated, text, after, missing)]
    lines, error = redact(*args, "--out", str(tmp_path / "out"))

    assert error is not None and "3 of 5" in str(error)
    assert [line["input"] for line in lines] == args
    codes = [line.get("error", {}).get("code") for line in lines]
    assert codes == [None, "corrupt_image", "unsupported_format", None, "unreadable_file"]
    assert Path(lines[0]["output"]).is_file() and Path(lines[3]["output"]).is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_good.redacted.dcm",
        "d_after.redacted.dcm",
    ]


def test_it_searches_folders_and_keeps_same_named_files_apart(bright: None, tmp_path: Path) -> None:
    write(tmp_path / "in" / "one" / "scan.dcm", dicom_bytes(BURNED_IN))
    write(tmp_path / "in" / "two" / "scan.dcm", dicom_bytes(MULTI_FRAME))
    write(tmp_path / "in" / "two" / "IM0001", dicom_bytes(BURNED_IN))  # DICOM with no suffix
    write(tmp_path / "in" / "two" / "notes.txt", b"reading notes, not an image")
    lines, error = redact(str(tmp_path / "in"), "--out", str(tmp_path / "out"))

    assert error is None
    assert [Path(line["output"]).name for line in lines] == [
        "scan.redacted.dcm",
        "IM0001.redacted.dcm",
        "scan-2.redacted.dcm",
    ]
    assert pydicom.dcmread(lines[2]["output"]).NumberOfFrames == 2


def test_it_fills_only_the_classes_asked_for(bright: None, tmp_path: Path) -> None:
    source = write(tmp_path / BURNED_IN, dicom_bytes(BURNED_IN))
    [line], error = redact(str(source), "--out", str(tmp_path / "out"), "--classes", "barcode")

    assert error is None and line["regions"] == []
    assert np.array_equal(decoded(Path(line["output"]).read_bytes()), decoded(source.read_bytes()))


def test_it_exits_non_zero_when_a_file_failed(tmp_path: Path) -> None:
    good = write(tmp_path / "good.dcm", dicom_bytes(BURNED_IN))
    bad = write(tmp_path / "bad.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["IMAGING_DETECTOR"] = BRIGHT_DETECTOR
    result = subprocess.run(
        # Another process: it cannot see the test database, so no scanner rules (tested with
        # the database in test_scanner_rules).
        [
            sys.executable,
            "manage.py",
            "redact",
            str(good),
            str(bad),
            "--out",
            str(tmp_path / "o"),
            "--no-scanner-rules",
        ],  # fmt: skip
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert "error" not in lines[0] and lines[1]["error"]["code"] == "corrupt_image"
    assert (tmp_path / "o" / "good.redacted.dcm").is_file()


def test_weights_are_refused_for_a_detector_that_is_not_yolo(bright: None, tmp_path: Path) -> None:
    source = write(tmp_path / BURNED_IN, dicom_bytes(BURNED_IN))
    with pytest.raises(CommandError, match="IMAGING_DETECTOR"):
        call_command("redact", str(source), "--out", str(tmp_path), "--backend", "torch")


def test_missing_weights_stop_the_command_before_any_file(settings: Any, tmp_path: Path) -> None:
    settings.IMAGING_DETECTOR = "imaging.jobs.detector.detect"
    settings.IMAGING_DETECTOR_WEIGHTS = str(tmp_path / "nowhere.onnx")
    source = write(tmp_path / BURNED_IN, dicom_bytes(BURNED_IN))
    out = io.StringIO()
    with pytest.raises(CommandError, match="weights not found"):
        call_command("redact", str(source), "--out", str(tmp_path / "out"), stdout=out)
    assert out.getvalue() == "" and not (tmp_path / "out").exists()


# --- the YOLO detector on real burned-in text ------------------------------------------------


@pytest.mark.parametrize("name", [BURNED_IN, "gdcm-US-ALOKA-16.dcm"])
def test_yolo_redacts_burned_in_text_of_a_real_dicom(yolo: None, tmp_path: Path, name: str) -> None:
    source = write(tmp_path / name, dicom_bytes(name))
    [line], error = redact(str(source), "--out", str(tmp_path / "out"), "--preview-png")

    assert error is None
    assert any(r["class"] == "phi_text" for r in line["regions"])
    written = pydicom.dcmread(line["output"])
    original = pydicom.dcmread(source)
    assert written.SOPInstanceUID == original.SOPInstanceUID
    assert written.pixel_array.shape == original.pixel_array.shape
    assert_changed_only_in_boxes(
        decoded(source.read_bytes()), decoded(Path(line["output"]).read_bytes()), line["regions"]
    )
    assert all(Path(p).is_file() for p in line["preview"])


def test_yolo_redacts_a_multi_frame_dicom_frame_by_frame(yolo: None, tmp_path: Path) -> None:
    source = write(tmp_path / MULTI_FRAME, dicom_bytes(MULTI_FRAME))
    [line], error = redact(str(source), "--out", str(tmp_path / "out"))

    assert error is None
    assert 0 in {r["frame"] for r in line["regions"]}
    written = dicom.read_dataset(Path(line["output"]).read_bytes())
    assert int(written.NumberOfFrames) == 2
    assert_changed_only_in_boxes(
        decoded(source.read_bytes()), decoded(Path(line["output"]).read_bytes()), line["regions"]
    )


def test_yolo_redacts_a_real_ultrasound_png(yolo: None, tmp_path: Path) -> None:
    source, pixels = png_from_deid_data(tmp_path)
    [line], error = redact(str(source), "--out", str(tmp_path / "out"))

    assert error is None
    assert Path(line["output"]).name == "rgb_ultrasound.redacted.png"
    assert any(r["class"] == "phi_text" for r in line["regions"])
    with Image.open(line["output"]) as image:
        assert image.format == "PNG"
        redacted = np.asarray(image)
    assert_changed_only_in_boxes(pixels[np.newaxis], redacted[np.newaxis], line["regions"])
