"""`manage.py deidentify`: real DICOM files, folders and zips in; de-identified DICOM, one
report each and an encrypted identity mapping out; the same code and results as an upload."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from engine.detection import detector as detection
from engine.dicom.deid_table.counts import counts, markdown
from imaging.management.commands.deidentify import mapping_open
from imaging.models import Scan, ScanStatus
from imaging.tests import factories
from imaging.tests.deid_checks import private_tags, read, surviving_phi
from imaging.tests.fixtures.samples import deid_bytes, dicom_bytes, png_bytes, real_rgb
from imaging.vault import identity

SECRET = "b2" * 32
BURNED_IN = "US1_UNCR.dcm"


# The command reads the scanner rules (imaging.models.ScannerRule) from the database.
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _deid_settings(settings: Any, bright_detector: None) -> None:
    settings.MEDIMG_DEID_SECRET = SECRET
    settings.DEID_RETAIN_DEVICE_IDENTITY = False
    settings.DEID_RETAIN_PATIENT_CHARACTERISTICS = False
    settings.DEID_SAFE_PRIVATE = []


def deidentify(*args: str) -> tuple[list[dict[str, Any]], CommandError | None]:
    out = io.StringIO()
    error = None
    try:
        call_command("deidentify", *args, stdout=out)
    except CommandError as exc:
        error = exc
    return [json.loads(line) for line in out.getvalue().splitlines()], error


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_it_deidentifies_files_folders_and_zips_with_a_report_each(tmp_path: Path) -> None:
    ct = write(tmp_path / "in" / "Doe_Jane_CT.dcm", dicom_bytes("CT_small.dcm"))
    folder = tmp_path / "in" / "brain"
    write(folder / "one.dcm", deid_bytes("humans/ctbrain1.dcm"))
    write(folder / "notes.txt", b"not an image, not looked at")
    bundle = tmp_path / "in" / "bundle.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("MR/IM0001", dicom_bytes("MR_small.dcm"))  # no suffix: sniffed
        archive.writestr("readme.txt", "skipped")
    out = tmp_path / "out"

    lines, error = deidentify(str(ct), str(folder), str(bundle), "--out", str(out))

    assert error is None
    *files, summary = lines
    assert [f["input"] for f in files] == [str(ct), str(folder / "one.dcm"), f"{bundle}!MR/IM0001"]
    originals = [dicom_bytes("CT_small.dcm"), deid_bytes("humans/ctbrain1.dcm")]
    originals.append(dicom_bytes("MR_small.dcm"))
    for line, original in zip(files, originals, strict=True):
        result = Path(line["output"]).read_bytes()
        assert surviving_phi(original, result) == []
        assert private_tags(result) == []
        assert Path(line["output"]).name == f"{read(result).SOPInstanceUID}.dcm"
        report = json.loads(Path(line["report"]).read_text())
        assert report["edition"] == "DICOM PS3.15 2026c"
        assert report["counts"]["removed"] > 0 and report["counts"]["uid_remapped"] > 0
        assert report["pixels"]["regions"] == len(report["regions"])
        # Neither the report nor the file names carry the input's name or values.
        assert "Doe_Jane" not in json.dumps(report) and "Doe_Jane" not in line["output"]
        assert "CompressedSamples" not in json.dumps(report)
    mapping = Path(summary["mapping"])
    assert summary["files"] == 3 and mapping.name.endswith(".json.enc")
    assert b"CompressedSamples" not in mapping.read_bytes()
    opened = mapping_open(mapping)
    entry = opened["files"][Path(files[0]["output"]).name]
    assert entry["input"] == str(ct)
    names = {r["keyword"]: r["display"] for r in entry["identity"]["removed_values"].values()}
    assert names["PatientName"] == "CompressedSamples^CT1"
    original = read(dicom_bytes("CT_small.dcm"))
    assert (
        entry["uids"][original.StudyInstanceUID]
        == read(Path(files[0]["output"]).read_bytes()).StudyInstanceUID
    )


def test_it_gives_the_same_output_in_every_run_with_the_same_secret(
    tmp_path: Path, settings: Any
) -> None:
    source = write(tmp_path / "ct.dcm", dicom_bytes("CT_small.dcm"))
    first, _ = deidentify(str(source), "--out", str(tmp_path / "a"))
    second, _ = deidentify(str(source), "--out", str(tmp_path / "b"))
    a, b = Path(first[0]["output"]), Path(second[0]["output"])
    assert a.name == b.name
    assert a.read_bytes() == b.read_bytes()
    settings.MEDIMG_DEID_SECRET = "c3" * 32
    other, _ = deidentify(str(source), "--out", str(tmp_path / "c"))
    assert Path(other[0]["output"]).name != a.name


def test_it_gives_the_same_file_as_an_upload(
    tmp_path: Path, upload: Any, api: Any, doctor: Any
) -> None:
    data = dicom_bytes(BURNED_IN)
    lines, _ = deidentify(str(write(tmp_path / "us.dcm", data)), "--out", str(tmp_path / "o"))
    response = upload(("us.dcm", data))
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert scan.status == ScanStatus.COMPLETED
    api.force_authenticate(doctor)
    exported = api.get(f"/api/images/{scan.pk}/export/?format=dicom").content
    assert Path(lines[0]["output"]).read_bytes() == exported
    assert lines[0]["regions"] == scan.regions.count() > 0


def test_it_writes_the_mapping_in_clear_only_when_asked(tmp_path: Path) -> None:
    source = write(tmp_path / "ct.dcm", dicom_bytes("CT_small.dcm"))
    lines, _ = deidentify(str(source), "--out", str(tmp_path / "o"), "--mapping-plain")
    mapping = Path(lines[-1]["mapping"])
    assert mapping.suffix == ".json"
    document = json.loads(mapping.read_text())
    [entry] = document["files"].values()
    assert "CompressedSamples^CT1" in mapping.read_text()
    assert entry["identity"]["pseudonym"] == identity.deid.patient_pseudonym(
        "1CT1", identity.uid_secret()
    )
    # The pixel regions stay sealed even in a clear mapping.
    assert all("ciphertext" in r and "pixels" not in r for r in entry["regions"])


def test_it_reports_bad_files_writes_nothing_for_them_and_exits_non_zero(tmp_path: Path) -> None:
    good = dicom_bytes("CT_small.dcm")
    inputs = [
        write(tmp_path / "truncated.dcm", good[: len(good) // 2]),
        write(tmp_path / "text.dcm", b"not a DICOM file\n" * 20),
        write(tmp_path / "photo.png", png_bytes(real_rgb())),
        write(tmp_path / "good.dcm", good),
    ]
    out = tmp_path / "out"
    lines, error = deidentify(*map(str, inputs), "--out", str(out))
    assert error is not None and "3 of 4" in str(error)
    codes = [line.get("error", {}).get("code") for line in lines[:4]]
    assert codes == ["corrupt_image", "unsupported_format", "not_dicom", None]
    written = sorted(p.name for p in out.iterdir())
    # The good file, its report and the mapping: nothing for the bad ones.
    assert len(written) == 3 and written[-1].startswith("deid-mapping-")


@pytest.fixture
def yolo(settings: Any) -> None:
    settings.IMAGING_DETECTOR = "imaging.jobs.detector.detect"
    path = detection.weights_path()
    if not path.is_file():
        pytest.skip(f"no detector weights at {path} (not trained yet)")


def test_it_removes_burned_in_text_with_the_yolo_detector(tmp_path: Path, yolo: None) -> None:
    data = dicom_bytes(BURNED_IN)
    lines, error = deidentify(str(write(tmp_path / "us.dcm", data)), "--out", str(tmp_path / "o"))
    assert error is None
    report = json.loads(Path(lines[0]["report"]).read_text())
    assert report["regions"], "the detector found no burned-in text"
    before = read(data).pixel_array
    after = read(Path(lines[0]["output"]).read_bytes()).pixel_array
    for region in report["regions"]:
        x0, y0, x1, y1 = region["box"]
        assert not np.array_equal(before[y0:y1, x0:x1], after[y0:y1, x0:x1])


def test_it_documents_the_counts_the_table_gives() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "deidentification.md").read_text()
    block = docs.split("<!-- counts:start -->\n", 1)[1].split("\n<!-- counts:end -->", 1)[0]
    assert block == markdown()
    default = counts(identity.deid.DEFAULT_OPTIONS)
    assert sum(default.values()) == 656 and default["K"] == 0
    # The comparison with the 2020 table that medimg used before.
    assert "DICOM PS3.15 2020a/b (432 rows) against DICOM PS3.15 2026c (656 rows)" in block


SEEN: list[tuple[int, ...]] = []


def recording_detector(frame: np.ndarray) -> list[Any]:
    """The bright-text detector, noting the shape of every image it is shown."""
    SEEN.append(tuple(frame.shape))
    return factories.bright_text_detector(frame)


@pytest.mark.parametrize("scope", ["full", "bands"])
def test_it_verifies_with_the_scope_uploads_use(tmp_path: Path, settings: Any, scope: str) -> None:
    settings.IMAGING_DETECTOR = "imaging.tests.test_deidentify_command.recording_detector"
    settings.IMAGING_VERIFY_SCOPE = scope
    frames = factories.text_image(240, 180, channels=1)[None]
    source = write(tmp_path / "in.dcm", factories.dicom_bytes(frames))
    SEEN.clear()
    records, error = deidentify(str(source), "--out", str(tmp_path / "out"))

    assert error is None and records[0]["regions"] >= 2
    whole = [shape for shape in SEEN if shape[:2] == (180, 240)]
    # The first pass sees the whole frame; "full" verification sees it again, "bands" only
    # strips around what was filled.
    assert len(whole) == (2 if scope == "full" else 1), SEEN
    assert (len(SEEN) > len(whole)) == (scope == "bands"), SEEN
