"""Viewer endpoints: frames and windows on the redacted and restored images, frame indexes,
studies and series, zip uploads of a series, QC statistics, outliers and clusters."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
import pydicom
import pytest
from django.test import Client
from PIL import Image

from audit.models import Action, AuditEvent, Outcome
from engine.dicom import io as dicom
from engine.pixels import qc, rendering
from engine.pixels.redaction import fill_regions
from imaging.models import Scan, ScanStatus
from imaging.tests import factories
from imaging.tests.conftest import media_files
from imaging.tests.fixtures import samples
from imaging.tests.test_pages import assert_csp_ready
from imaging.vault.pixels import scan_restore_pixels
from imaging.vault.redacted import scan_redacted_pixels

pytestmark = pytest.mark.django_db


def _png(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def _ct_with_text(frames: int = 2) -> tuple[bytes, np.ndarray]:
    """A two-frame CT (HU = stored - 1024) with burned-in text at the top of its range."""
    data, pixels = factories.dicom16_text(frames=frames)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Modality = "CT"
    ds.RescaleSlope = 1
    ds.RescaleIntercept = -1024
    ds.WindowCenter = 1024  # the factory's window, in Hounsfield units now
    ds.PixelSpacing = [0.5, 0.5]
    ds.Manufacturer = "ACME"
    ds.ManufacturerModelName = "Scan 9"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), pixels


@pytest.fixture
def ct_scan(bright_detector: None, upload: Any) -> tuple[Scan, np.ndarray, bytes]:
    data, pixels = _ct_with_text()
    response = upload(("ct.dcm", data))
    assert response.status_code == 201, response.content
    scan = Scan.objects.get(pk=response.json()[0]["id"])
    assert scan.status == ScanStatus.COMPLETED, scan.failure_reason
    assert scan.regions.filter(frame=1).exists()
    return scan, pixels, data


def _get(api: Any, user: Any, url: str) -> Any:
    api.force_authenticate(user)
    return api.get(url)


def _restore(api: Any, user: Any, scan_id: int, **body: Any) -> Any:
    api.force_authenticate(user)
    return api.post(f"/api/images/{scan_id}/restore/", body, format="json")


# --- Windows and frames --------------------------------------------------------------------


def test_it_windows_the_redacted_pixels_with_regions_filled(api, technician, ct_scan):
    scan, pixels, _data = ct_scan
    response = _get(api, technician, f"/api/images/{scan.pk}/redacted/?frame=1&window=bone")
    assert response.status_code == 200, response.content
    shown = _png(response.content)

    header = dicom.read_dataset(_ct_with_text()[0], stop_before_pixels=True)
    redacted = scan_redacted_pixels(scan)
    window = rendering.window_choice(header, window="bone")
    boxes = [r.box for r in scan.regions.filter(frame=1)]
    expected = fill_regions(rendering.render_frame_uint8(header, redacted[1], window=window), boxes)
    assert np.array_equal(shown, expected)
    # The text is white in the bone window of the original, and black here.
    original = rendering.render_frame_uint8(header, pixels[1], window=window)
    x0, y0, x1, y1 = boxes[0]
    ink = pixels[1, y0:y1, x0:x1] == 4095
    assert ink.any() and (original[y0:y1, x0:x1][ink] == 255).all()
    assert (shown[y0:y1, x0:x1] == 0).all()
    event = AuditEvent.objects.filter(action=Action.SCAN_VIEWED).latest("sequence")
    assert event.details["window"]["name"] == "bone" and event.details["frame"] == 1


def test_it_takes_an_explicit_window_and_differs_from_a_preset(api, doctor, ct_scan):
    scan, _pixels, _data = ct_scan
    base = f"/api/images/{scan.pk}/redacted/?frame=0"
    custom = _get(api, doctor, base + "&wc=0&ww=400")
    lung = _get(api, doctor, base + "&window=lung")
    auto = _get(api, doctor, base + "&window=auto")
    assert custom.status_code == lung.status_code == auto.status_code == 200
    assert not np.array_equal(_png(custom.content), _png(lung.content))


@pytest.mark.parametrize(
    "query",
    ["window=spine", "wc=40", "wc=40&ww=0", "wc=abc&ww=10", "window=brain&wc=1&ww=2", "ww=nan"],
)
def test_it_refuses_bad_windows(api, technician, ct_scan, query):
    scan, _pixels, _data = ct_scan
    response = _get(api, technician, f"/api/images/{scan.pk}/redacted/?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_window"


def test_it_refuses_windows_on_png_and_non_ct_presets(
    api, doctor, completed_scan, completed_dicom_upload
):
    png = _get(api, doctor, f"/api/images/{completed_scan.pk}/redacted/?window=auto")
    assert png.status_code == 400 and png.json()["error"]["code"] == "invalid_window"
    restore = _restore(api, doctor, completed_scan.pk, window="auto")
    assert restore.status_code == 400 and restore.json()["error"]["code"] == "invalid_window"
    other, _pixels, _data = completed_dicom_upload  # Modality OT: no Hounsfield presets
    brain = _get(api, doctor, f"/api/images/{other.pk}/redacted/?window=brain")
    assert brain.status_code == 400 and brain.json()["error"]["code"] == "invalid_window"
    assert _get(api, doctor, f"/api/images/{other.pk}/redacted/?window=file").status_code == 200


@pytest.mark.parametrize("kind", ["redacted", "grid", "restore"])
@pytest.mark.parametrize("frame", ["2", "-1", "x"])
def test_it_refuses_frames_out_of_range(api, doctor, ct_scan, kind, frame):
    scan, _pixels, _data = ct_scan
    if kind == "restore":
        response = _restore(api, doctor, scan.pk, frame=frame)
    else:
        response = _get(api, doctor, f"/api/images/{scan.pk}/{kind}/?frame={frame}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_frame"


def test_it_restores_frame_n_exactly(api, doctor, ct_scan):
    scan, pixels, data = ct_scan
    restored = scan_restore_pixels(scan=Scan.objects.get(pk=scan.pk))
    assert np.array_equal(restored[1], pixels[1]) and not np.array_equal(restored[0], restored[1])
    header = dicom.read_dataset(data, stop_before_pixels=True)
    response = _restore(api, doctor, scan.pk, format="png", frame=1)
    assert response.status_code == 200
    assert np.array_equal(
        _png(response.content), rendering.render_frame_uint8(header, pixels[1], index=1)
    )
    # Windowed restore renders the RESTORED pixels: the text is back, white in bone.
    windowed = _restore(api, doctor, scan.pk, frame=1, window="bone")
    window = rendering.window_choice(header, window="bone")
    assert np.array_equal(
        _png(windowed.content), rendering.render_frame_uint8(header, pixels[1], window=window)
    )
    event = AuditEvent.objects.filter(action=Action.SCAN_RESTORED).latest("sequence")
    assert event.outcome == Outcome.SUCCESS and event.details["window"]["name"] == "bone"


def test_it_refuses_a_windowed_restore_to_technicians(api, technician, ct_scan):
    scan, _pixels, _data = ct_scan
    assert _restore(api, technician, scan.pk, window="bone").status_code == 403


def test_it_lists_frames_and_window_presets(api, technician, ct_scan, completed_scan):
    scan, _pixels, _data = ct_scan
    info = _get(api, technician, f"/api/images/{scan.pk}/frames/").json()
    assert info["frames"] == 2 and info["windowable"] is True
    assert [p["name"] for p in info["window_presets"]] == [*rendering.PRESETS, "file", "auto"]
    assert info["file_windows"] == [{"centre": 1024.0, "width": 4096.0, "explanation": ""}]
    assert info["default_window"] == "file"
    png = _get(api, technician, f"/api/images/{completed_scan.pk}/frames/").json()
    assert png["windowable"] is False and png["window_presets"] == [] and png["frames"] == 1


# --- Studies and series --------------------------------------------------------------------


def _scan_row(patient: Any, **fields: Any) -> Scan:
    return Scan.objects.create(
        patient=patient,
        original_filename=fields.pop("name", "x.dcm"),
        format="dicom",
        size_bytes=1,
        width=8,
        height=8,
        pixel_dtype="uint16",
        pixels_sha256="0" * 64,
        original_path="scans/x/original.enc",
        wrapped_key=b"",
        key_id="dev",
        **fields,
    )


def test_it_groups_scans_by_study_and_series(api, doctor, patient, other_patient):
    third = _scan_row(
        patient, study_uid="2.1", series_uid="2.1.1", instance_number=3, modality="CT"
    )
    first = _scan_row(
        patient, study_uid="2.1", series_uid="2.1.1", instance_number=1, modality="CT"
    )
    other_series = _scan_row(patient, study_uid="2.1", series_uid="2.1.2", instance_number=1)
    second_study = _scan_row(patient, study_uid="2.9", series_uid="2.9.1", modality="MR")
    loose = _scan_row(patient, name="photo.png")
    _scan_row(other_patient, study_uid="2.1", series_uid="2.1.1", instance_number=2)

    response = _get(api, doctor, f"/api/patients/{patient.id}/studies/")
    assert response.status_code == 200
    studies = response.json()
    assert [s["study_uid"] for s in studies] == ["2.1", "2.9", None]
    series = studies[0]["series"]
    assert [s["series_uid"] for s in series] == ["2.1.1", "2.1.2"]
    assert [scan["id"] for scan in series[0]["scans"]] == [first.pk, third.pk]
    assert series[0]["modality"] == "CT" and studies[0]["modalities"] == ["CT"]
    assert series[1]["scans"][0]["id"] == other_series.pk
    assert studies[1]["series"][0]["scans"][0]["id"] == second_study.pk
    assert studies[2]["series"][0]["scans"][0]["id"] == loose.pk
    assert AuditEvent.objects.filter(action=Action.PATIENT_VIEWED, actor=doctor).exists()


def test_it_refuses_studies_to_non_clinical_roles(api, admin, outsider, patient):
    assert _get(api, admin, f"/api/patients/{patient.id}/studies/").status_code == 403
    assert _get(api, outsider, f"/api/patients/{patient.id}/studies/").status_code == 403
    assert _get(api, None, f"/api/patients/{patient.id}/studies/").status_code == 401


# --- Zip of a series -----------------------------------------------------------------------


def _zip(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_it_uploads_a_zip_of_a_series(bright_detector, upload, patient):
    archive = _zip(
        {
            "series/CT_small.dcm": samples.dicom_bytes("CT_small.dcm"),
            "series/MR_small.dcm": samples.dicom_bytes("MR_small.dcm"),
            "../../etc/evil.dcm": samples.dicom_bytes("CT_small.dcm"),  # traversal: ignored
            "__MACOSX/series/._CT_small.dcm": b"junk",
            "series/.DS_Store": b"junk",
            "series/": b"",
        }
    )
    response = upload(("series.zip", archive))
    assert response.status_code == 201, response.content
    names = sorted(item["original_filename"] for item in response.json())
    assert names == ["series/CT_small.dcm", "series/MR_small.dcm"]
    assert Scan.objects.filter(patient=patient, status=ScanStatus.COMPLETED).count() == 2


def test_it_refuses_a_zip_with_a_bad_member_and_stores_nothing(upload, settings):
    archive = _zip(
        {
            "a.dcm": samples.dicom_bytes("CT_small.dcm"),
            "b.png": factories.png_bytes(factories.text_image(64, 48))[:-20],  # truncated
        }
    )
    response = upload(("series.zip", archive))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "corrupt_image" and error["message"].startswith("b.png:")
    assert not Scan.objects.exists() and not media_files(settings)


def test_it_refuses_zip_bombs_and_oversized_archives(upload, settings):
    settings.UPLOAD_ARCHIVE_MAX_UNCOMPRESSED = 1024 * 1024
    bomb = _zip({"a.dcm": b"\0" * (2 * 1024 * 1024)})
    assert len(bomb) < 10_000  # 2 MiB of zeros deflates to almost nothing
    response = upload(("bomb.zip", bomb))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "archive_too_large"
    settings.UPLOAD_ARCHIVE_MAX_MEMBERS = 2
    many = _zip({f"{i}.dcm": b"x" for i in range(3)})
    response = upload(("many.zip", many))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "archive_too_many_files"
    response = upload(("broken.zip", b"PK\x03\x04" + b"\x00" * 40))
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_archive"
    response = upload(("empty.zip", _zip({"../x.dcm": b"x"})))
    assert response.status_code == 400 and response.json()["error"]["code"] == "empty_archive"
    assert not Scan.objects.exists() and not media_files(settings)


# --- QC: statistics, outliers, clusters ----------------------------------------------------


def test_it_stores_qc_statistics_with_each_scan(ct_scan, completed_scan):
    scan, pixels, _data = ct_scan
    scan.refresh_from_db()
    stats = scan.qc
    assert stats["modality"] == "CT" and stats["scanner"] == "ACME Scan 9"
    assert stats["spacing_mm"] == [0.5, 0.5]
    assert (stats["frames"], stats["rows"], stats["columns"]) == pixels.shape
    assert stats["intensity"] == "modality"
    hounsfield = scan_redacted_pixels(scan).astype(float) - 1024
    assert stats["p50"] == pytest.approx(float(np.percentile(hounsfield, 50)), abs=1e-3)
    assert stats["snr"] is not None
    assert "qc_ms" in scan.metrics["timings"]
    png_stats = Scan.objects.get(pk=completed_scan.pk).qc
    assert png_stats["intensity"] == "luminance" and png_stats["modality"] == ""


def _qc_scan(patient: Any, p50: float, scanner: str = "ACME 1") -> Scan:
    return _scan_row(
        patient,
        status=ScanStatus.COMPLETED,
        modality="CT",
        scanner=scanner,
        qc={
            "p50": p50,
            "p1": -1000,
            "p99": 1000,
            "mean": 0,
            "std": 100,
            "snr": 5,
            "rows": 8,
            "columns": 8,
        },
    )


def test_it_lists_outliers_for_doctors_and_statistics_only_for_admins(api, doctor, admin, patient):
    normal = [_qc_scan(patient, v) for v in (40, 41, 42, 40, 41)]
    odd = _qc_scan(patient, 400)
    doctor_view = _get(api, doctor, "/api/qc/outliers/").json()
    assert [o["id"] for o in doctor_view["outliers"]] == [odd.pk]
    assert doctor_view["outliers"][0]["patient"] == patient.id
    assert doctor_view["outliers"][0]["flags"][0]["metric"] == "p50"
    assert doctor_view["groups"] == [{"modality": "CT", "scanner": "ACME 1", "scans": 6}]
    admin_view = _get(api, admin, "/api/qc/outliers/").json()
    assert admin_view["outliers"][0]["id"] is None and admin_view["outliers"][0]["patient"] is None
    assert admin_view["outliers"][0]["flags"] == doctor_view["outliers"][0]["flags"]
    assert len(normal) == 5


def test_it_refuses_qc_to_technicians_and_outsiders(api, technician, outsider):
    assert _get(api, technician, "/api/qc/outliers/").status_code == 403
    assert _get(api, outsider, "/api/qc/outliers/").status_code == 403
    assert _get(api, None, "/api/qc/outliers/").status_code == 401


def test_the_qc_page_lists_outliers(client: Client, doctor, admin, technician, patient):
    for value in (40, 41, 42, 40, 41):
        _qc_scan(patient, value)
    odd = _qc_scan(patient, 400)
    client.force_login(doctor)
    html = client.get("/qc/").content.decode()
    assert_csp_ready(html)
    assert f'href="/scans/{odd.pk}/"' in html and "p50" in html
    client.force_login(admin)
    admin_html = client.get("/qc/").content.decode()
    assert "p50" in admin_html and f"/scans/{odd.pk}/" not in admin_html
    client.force_login(technician)
    assert client.get("/qc/").status_code == 403


def test_it_clusters_a_slice_of_the_redacted_pixels(api, technician, outsider, ct_scan):
    scan, _pixels, _data = ct_scan
    response = _get(api, technician, f"/api/images/{scan.pk}/clusters/?frame=1&k=3")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["k"] == 3 and body["frame"] == 1 and body["intensity"] == "modality"
    assert body["centres"] == sorted(body["centres"]) and len(body["centres"]) == 3
    assert -1 <= body["silhouette"] <= 1 and body["sample_size"] == qc.SILHOUETTE_SAMPLE
    image = _get(api, technician, body["image"])
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert float(image["X-Medimg-Silhouette"]) == pytest.approx(body["silhouette"], abs=1e-4)
    colours = _png(image.content)
    assert colours.shape == (scan.height, scan.width, 3)
    x0, y0, x1, y1 = scan.regions.filter(frame=1).first().box
    assert (colours[y0:y1, x0:x1] == 128).all()  # redacted regions are left out
    bad_k = _get(api, technician, f"/api/images/{scan.pk}/clusters/?k=9")
    assert bad_k.status_code == 400 and bad_k.json()["error"]["code"] == "invalid_k"
    bad_frame = _get(api, technician, f"/api/images/{scan.pk}/clusters/?frame=2")
    assert bad_frame.json()["error"]["code"] == "invalid_frame"
    assert _get(api, outsider, f"/api/images/{scan.pk}/clusters/").status_code == 403


def test_the_cluster_page_shows_the_map_and_score(client: Client, doctor, admin, ct_scan):
    scan, _pixels, _data = ct_scan
    client.force_login(doctor)
    response = client.get(f"/scans/{scan.pk}/clusters/?frame=1&k=4")
    assert response.status_code == 200
    html = response.content.decode()
    assert_csp_ready(html)
    assert f"/api/images/{scan.pk}/clusters/image/?frame=1&amp;k=4" in html
    assert "data-silhouette" in html and "vermillion" not in html  # only 4 colours listed
    assert client.get(f"/scans/{scan.pk}/clusters/?frame=7").status_code == 400
    client.force_login(admin)
    assert client.get(f"/scans/{scan.pk}/clusters/").status_code == 403


def test_the_qc_command_fills_in_missing_statistics(ct_scan, completed_scan):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    scan, _pixels, _data = ct_scan
    scan.refresh_from_db()
    computed = scan.qc
    Scan.objects.filter(pk__in=[scan.pk, completed_scan.pk]).update(qc={})
    out = io.StringIO()
    call_command("qc_statistics", stdout=out)
    assert f"{scan.pk} ok" in out.getvalue() and "2 scans updated, 0 failed" in out.getvalue()
    scan.refresh_from_db()
    assert scan.qc == computed  # the same numbers processing stored
    assert Scan.objects.get(pk=completed_scan.pk).qc["intensity"] == "luminance"
    Scan.objects.filter(pk=scan.pk).update(qc={}, redacted_pixels_path="scans/missing.enc")
    with pytest.raises(CommandError):
        call_command("qc_statistics", stdout=io.StringIO())
