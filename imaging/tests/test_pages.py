"""The scan page, as every role: the technician's grid view, the doctor's viewer with restore,
404 for a scan the user cannot see, and what a scan still processing or failed shows."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from audit.models import Action, AuditEvent
from imaging.models import FailureReason, Scan, ScanStatus

pytestmark = pytest.mark.django_db


def scan_page(client: Client, user: Any, scan_id: int) -> Any:
    if user is not None:
        client.force_login(user)
    return client.get(f"/scans/{scan_id}/")


def assert_csp_ready(html: str) -> None:
    """No inline scripts (json_script data is fine), no event handler or style attributes."""
    for attributes in re.findall(r"<script\b([^>]*)>", html):
        assert "src=" in attributes or 'type="application/json"' in attributes, attributes
    assert not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"\son[a-z]+\s*=", html)


def region_rows(html: str) -> int:
    return len(re.findall(r"<tr data-region[ >]", html))


def test_it_redirects_anonymous_users_to_login(client: Client, completed_scan: Scan) -> None:
    response = scan_page(client, None, completed_scan.id)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("role", ["admin", "outsider"])
def test_it_refuses_non_clinical_roles(
    request: pytest.FixtureRequest, client: Client, completed_scan: Scan, role: str
) -> None:
    response = scan_page(client, request.getfixturevalue(role), completed_scan.id)
    assert response.status_code == 403
    assert completed_scan.original_filename not in response.content.decode()


@pytest.mark.parametrize("role", ["technician", "doctor"])
def test_it_404s_for_a_scan_that_does_not_exist(
    request: pytest.FixtureRequest, client: Client, role: str
) -> None:
    assert scan_page(client, request.getfixturevalue(role), 999_999).status_code == 404


def test_it_shows_the_technician_the_grid_regions_and_no_restore(
    client: Client, technician: Any, completed_scan: Scan
) -> None:
    response = scan_page(client, technician, completed_scan.id)

    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "imaging/scan_technician.html"
    html = response.content.decode()
    assert f'src="/api/images/{completed_scan.id}/grid/"' in html
    regions = list(completed_scan.regions.order_by("index"))
    assert region_rows(html) == len(regions) >= 2
    for region in regions:
        assert f"{region.x1},{region.y1}–{region.x2},{region.y2}" in html
    assert "Patient text" in html and "99%" in html
    assert "/restore/" not in html
    assert "data-restore" not in html
    assert "Restore original" not in html
    # The review tools: draw or type a box, remove buttons per region, confirm.
    assert "data-draw-toggle" in html and 'id="box-x1"' in html
    assert html.count("data-remove-region") == len(regions)
    assert "data-confirm-review" in html
    assert_csp_ready(html)


def test_it_shows_the_doctor_the_viewer_with_restore_and_downloads(
    client: Client, doctor: Any, completed_scan: Scan
) -> None:
    response = scan_page(client, doctor, completed_scan.id)

    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "imaging/scan_doctor.html"
    html = response.content.decode()
    scan_id = completed_scan.id
    assert f'src="/api/images/{scan_id}/redacted/"' in html
    assert f'data-restore-url="/api/images/{scan_id}/restore/"' in html
    assert "Restore original" in html
    # Downloads go through the restore fetch (one audited path, a reason when required).
    assert 'data-download="png"' in html and 'data-download="jpeg"' in html
    assert 'data-download="dicom"' not in html  # A PNG upload has no DICOM to give back.
    # Each decrypted region on request (the decryption API audits it).
    assert html.count("data-show-region") == completed_scan.regions.count()
    assert "data-remove-region" not in html
    assert "data-restore-reason" in html and 'aria-required="true"' not in html
    assert "data-window-select" not in html and "data-frame-input" not in html
    assert "imaging/_segmentation_slot.html" in [t.name for t in response.templates]
    assert region_rows(html) == completed_scan.regions.count()
    # The metrics panel: SSIM and PSNR as stored by processing, and the total time.
    assert f"{completed_scan.metrics['ssim']:.4f}" in html
    assert f"{completed_scan.metrics['psnr']:.2f} dB" in html
    assert "Total" in html
    assert f'data-notes-url="/api/patients/{completed_scan.patient_id}/notes/"' in html
    assert_csp_ready(html)


def test_it_requires_a_restore_reason_when_the_setting_says_so(
    client: Client, doctor: Any, completed_scan: Scan, settings: Any
) -> None:
    settings.MEDIMG_RESTORE_REASON_REQUIRED = True
    html = scan_page(client, doctor, completed_scan.id).content.decode()
    assert 'aria-required="true"' in html and "(optional)" not in html.split("restore-reason")[1]


def test_it_offers_frames_and_windows_for_a_multi_frame_dicom(
    client: Client, doctor: Any, completed_dicom: tuple[Scan, Any]
) -> None:
    scan, _ = completed_dicom
    html = scan_page(client, doctor, scan.id).content.decode()
    assert "data-frame-input" in html and f'max="{scan.frames}"' in html
    assert "data-window-select" in html and 'value="auto"' in html
    assert 'data-download="dicom"' in html


def test_it_audits_the_view(client: Client, doctor: Any, completed_scan: Scan) -> None:
    scan_page(client, doctor, completed_scan.id)
    event = AuditEvent.objects.filter(action=Action.SCAN_VIEWED, actor=doctor).get()
    assert event.target_id == str(completed_scan.id)


@pytest.mark.parametrize("role", ["technician", "doctor"])
def test_it_polls_and_reloads_while_processing(
    request: pytest.FixtureRequest, client: Client, completed_scan: Scan, role: str
) -> None:
    Scan.objects.filter(pk=completed_scan.pk).update(status=ScanStatus.PROCESSING)

    html = scan_page(client, request.getfixturevalue(role), completed_scan.id).content.decode()

    assert f'data-status-url="/api/images/{completed_scan.id}/status/"' in html
    assert 'data-status="processing"' in html and "data-reload-when-done" in html
    assert "data-viewer-image" not in html  # Nothing to show until it is done.
    assert "Restore original" not in html


def test_it_shows_why_processing_failed(client: Client, doctor: Any, completed_scan: Scan) -> None:
    Scan.objects.filter(pk=completed_scan.pk).update(
        status=ScanStatus.FAILED, failure_reason=FailureReason.DETECTION_FAILED
    )
    html = scan_page(client, doctor, completed_scan.id).content.decode()
    assert "The detector failed" in html
    assert "Restore original" not in html


def test_it_shows_the_flags(client: Client, technician: Any, completed_scan: Scan) -> None:
    html = scan_page(client, technician, completed_scan.id).content.decode()
    assert "Needs review." not in html and "Possible duplicate." not in html

    Scan.objects.filter(pk=completed_scan.pk).update(
        needs_review=True, possible_duplicate=True, duplicate_of=completed_scan
    )
    html = client.get(f"/scans/{completed_scan.id}/").content.decode()
    assert "Needs review." in html
    assert "Possible duplicate." in html
    assert f'href="/scans/{completed_scan.id}/">image {completed_scan.id}</a>' in html


def test_it_lists_unconfirmed_images_on_the_technicians_home(
    client: Client, technician: Any, completed_scan: Scan
) -> None:
    client.force_login(technician)
    html = client.get("/").content.decode()
    assert html.count("data-worklist-item") == 1
    assert f'href="/scans/{completed_scan.id}/"' in html
    assert AuditEvent.objects.filter(
        action=Action.PATIENT_LISTED, details__view="review worklist"
    ).exists()

    client.post(f"/api/images/{completed_scan.id}/review/")
    html = client.get("/").content.decode()
    assert "data-worklist-item" not in html
    assert "Nothing to review" in html
