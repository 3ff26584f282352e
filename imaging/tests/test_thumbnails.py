"""Redacted thumbnails: rendered from the redacted image, cached, invalidated on change."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from audit.models import Action, AuditEvent
from audit.pseudonyms import patient_reference
from imaging.models import Scan
from imaging.selectors import thumbnails
from imaging.vault.storage import storage_delete, storage_read


def _get(api: Any, user: Any, scan: Scan, **headers: str) -> Any:
    api.force_authenticate(user)
    return api.get(f"/api/images/{scan.pk}/thumbnail/?size=128", **headers)


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_it_serves_a_small_copy_of_the_redacted_image(
    api: Any, technician: Any, completed_scan: Scan
) -> None:
    response = _get(api, technician, completed_scan)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "image/png"
    thumb = _pixels(response.content)
    assert max(thumb.shape[:2]) == 128
    redacted = storage_read(completed_scan.frame_paths["redacted"][0])
    assert response.content == thumbnails.render_thumbnail(redacted, 128)
    # A routine view: summarised per patient (audit_record_routine), not per image.
    assert AuditEvent.objects.filter(
        action=Action.SCAN_VIEWED,
        details__view="thumbnails",
        target_type="patient",
        target_id=patient_reference(completed_scan.patient_id),
    ).exists()


def test_it_serves_the_second_request_from_the_cache(
    api: Any, technician: Any, completed_scan: Scan
) -> None:
    first = _get(api, technician, completed_scan)
    assert first.status_code == 200
    # With the stored file gone, only the cache can answer.
    storage_delete(completed_scan.frame_paths["redacted"][0])
    second = _get(api, technician, completed_scan)
    assert second.status_code == 200
    assert second.content == first.content
    assert second["ETag"] == first["ETag"]


def test_it_answers_304_to_a_matching_etag(api: Any, doctor: Any, completed_scan: Scan) -> None:
    first = _get(api, doctor, completed_scan)
    again = _get(api, doctor, completed_scan, HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304
    assert again.content == b""
    stale = _get(api, doctor, completed_scan, HTTP_IF_NONE_MATCH='"not-the-version"')
    assert stale.status_code == 200


def test_it_renders_again_when_the_redacted_image_changes(
    api: Any,
    technician: Any,
    completed_scan: Scan,
    django_capture_on_commit_callbacks: Any,
) -> None:
    before = _get(api, technician, completed_scan)
    assert before.status_code == 200
    # A technician adds a region over the bottom-right corner: the redacted image is rebuilt.
    width, height = completed_scan.width, completed_scan.height
    box = {"x1": width // 2, "y1": height // 2, "x2": width, "y2": height}
    with django_capture_on_commit_callbacks(execute=True):
        added = api.post(f"/api/images/{completed_scan.pk}/regions/", box, format="json")
    assert added.status_code in (200, 201), added.content

    after = _get(api, technician, completed_scan)
    assert after.status_code == 200
    assert after["ETag"] != before["ETag"]
    old, new = _pixels(before.content), _pixels(after.content)
    assert old.shape == new.shape
    # A margin of 4 thumbnail pixels keeps the resampling filter's reach out of the box.
    corner = (slice(old.shape[0] // 2 + 4, None), slice(old.shape[1] // 2 + 4, None))
    assert np.any(old[corner] != 0)
    assert not np.any(new[corner])  # filled solid in the new redacted image


def test_it_refuses_unknown_sizes_and_unprocessed_scans(
    api: Any, technician: Any, completed_scan: Scan
) -> None:
    api.force_authenticate(technician)
    response = api.get(f"/api/images/{completed_scan.pk}/thumbnail/?size=100")
    assert response.status_code == 400
    Scan.objects.filter(pk=completed_scan.pk).update(status="processing")
    assert _get(api, technician, completed_scan).status_code == 409


def test_it_hides_thumbnails_from_non_clinical_users(
    api: Any, admin: Any, completed_scan: Scan
) -> None:
    assert _get(api, admin, completed_scan).status_code == 403


def test_a_patient_page_of_thumbnails_writes_one_event(
    api: Any, doctor: Any, completed_scan: Any
) -> None:
    api.force_authenticate(doctor)
    for size in (128, 256, 128, 512):
        response = api.get(f"/api/images/{completed_scan.pk}/thumbnail/?size={size}")
        assert response.status_code == 200
    events = AuditEvent.objects.filter(action=Action.SCAN_VIEWED)
    assert [(e.target_type, e.target_id, e.details["view"]) for e in events] == [
        ("patient", patient_reference(completed_scan.patient_id), "thumbnails")
    ]
