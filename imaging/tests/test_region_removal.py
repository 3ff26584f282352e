"""Removing a region never shows its pixels to a role that may not decrypt (issue 21, item 7).

The attack: a technician deletes a region, fetches /redacted/ (the pixels used to show), adds
the same box again and confirms; the log said only regions_edited. Now the technician's
DELETE only asks: the region stays filled until a doctor approves (or rejects) the removal.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from audit.models import Action, AuditEvent
from imaging.models import Region, Scan

pytestmark = pytest.mark.django_db


def _png(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def _get(api: Any, user: Any, url: str) -> bytes:
    api.force_authenticate(user)
    response = api.get(url)
    assert response.status_code == 200, response.content
    return bytes(response.content)


def test_it_never_shows_a_technician_the_pixels_of_a_region_they_delete_and_add_back(
    api: Any, technician: Any, completed_scan: Scan, text_png: tuple[bytes, np.ndarray]
) -> None:
    original = text_png[1]
    target = completed_scan.regions.order_by("index").first()
    x1, y1, x2, y2 = target.box
    assert original[y1:y2, x1:x2].any(), "the region must hide something"
    redacted_url = f"/api/images/{completed_scan.pk}/redacted/"
    grid_url = f"/api/images/{completed_scan.pk}/grid/"
    redacted_before = _get(api, technician, redacted_url)
    grid_before = _get(api, technician, grid_url)

    # 1. Delete the region.
    api.force_authenticate(technician)
    response = api.delete(f"/api/regions/{target.pk}/")
    assert response.status_code == 202, response.content
    assert response.json()["removal_pending"] is True
    # 2. Fetch the redacted image: nothing of the region shows, the files are the same.
    during = _get(api, technician, redacted_url)
    assert during == redacted_before
    assert (_png(during)[y1:y2, x1:x2] == 0).all()
    assert _get(api, technician, grid_url) == grid_before
    # 3. Add the same box again, and 4. confirm.
    response = api.post(
        f"/api/images/{completed_scan.pk}/regions/",
        {"x1": x1, "y1": y1, "x2": x2, "y2": y2, "frame": target.frame},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert api.post(f"/api/images/{completed_scan.pk}/review/").status_code == 200

    after = _png(_get(api, technician, redacted_url))
    assert (after[y1:y2, x1:x2] == 0).all()
    assert not np.array_equal(after[y1:y2, x1:x2], original[y1:y2, x1:x2])
    # Never shown at any step; and the log names the attempt for what it is.
    assert Region.objects.get(pk=target.pk).removal_pending
    asked = AuditEvent.objects.get(action=Action.REGION_REMOVAL_REQUESTED)
    assert asked.actor == technician
    assert asked.details["potential_disclosure"] is True
    assert asked.details["box"] == [x1, y1, x2, y2]
    assert not AuditEvent.objects.filter(action=Action.REGION_REMOVAL_APPROVED).exists()


def test_a_doctor_rejects_a_removal_and_the_region_stays(
    api: Any, technician: Any, doctor: Any, completed_scan: Scan
) -> None:
    target = completed_scan.regions.order_by("index").first()
    redacted_url = f"/api/images/{completed_scan.pk}/redacted/"
    before = _get(api, technician, redacted_url)
    api.force_authenticate(technician)
    assert api.delete(f"/api/regions/{target.pk}/").status_code == 202

    api.force_authenticate(doctor)
    response = api.post(f"/api/regions/{target.pk}/removal/", {"approve": False}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["removal_pending"] is False
    assert not Region.objects.get(pk=target.pk).removal_pending
    assert _get(api, technician, redacted_url) == before
    event = AuditEvent.objects.get(action=Action.REGION_REMOVAL_REJECTED)
    assert event.actor == doctor and event.details["requested_by"] == technician.username


def test_it_refuses_removal_decisions_to_technicians_and_without_a_request(
    api: Any, technician: Any, doctor: Any, admin: Any, completed_scan: Scan
) -> None:
    target = completed_scan.regions.order_by("index").first()
    url = f"/api/regions/{target.pk}/removal/"
    api.force_authenticate(doctor)
    response = api.post(url, {"approve": True}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_removal_pending"

    api.force_authenticate(technician)
    assert api.delete(f"/api/regions/{target.pk}/").status_code == 202
    again = api.delete(f"/api/regions/{target.pk}/")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "removal_already_requested"
    # The one who asked cannot approve it, and neither can an admin.
    for user in (technician, admin):
        api.force_authenticate(user)
        assert api.post(url, {"approve": True}, format="json").status_code == 403
    assert Region.objects.filter(pk=target.pk).exists()
    assert not AuditEvent.objects.filter(action=Action.REGION_REMOVAL_APPROVED).exists()


def test_the_region_list_and_pages_show_a_pending_removal(
    api: Any, client: Any, technician: Any, doctor: Any, completed_scan: Scan
) -> None:
    target = completed_scan.regions.order_by("index").first()
    api.force_authenticate(technician)
    assert api.delete(f"/api/regions/{target.pk}/").status_code == 202
    listed = api.get(f"/api/images/{completed_scan.pk}/regions/").json()
    assert {r["id"]: r["removal_pending"] for r in listed} == {
        r.pk: r.pk == target.pk for r in completed_scan.regions.all()
    }

    client.force_login(doctor)
    page = client.get(f"/scans/{completed_scan.pk}/").content.decode()
    assert f'data-removal-url="/api/regions/{target.pk}/removal/?group=true"' in page
    assert "Removal requested by" in page
    client.force_login(technician)
    page = client.get(f"/scans/{completed_scan.pk}/").content.decode()
    # Until the review is confirmed the technician may undo it; after, it waits for a doctor.
    assert "Removal asked: undo until you confirm" in page
    assert f'data-url="/api/regions/{target.pk}/removal/?group=true"' in page
    # No second request offered for the pending one.
    assert f'aria-label="Remove region {target.index + 1}"' not in page
    assert api.post(f"/api/images/{completed_scan.pk}/review/").status_code == 200
    page = client.get(f"/scans/{completed_scan.pk}/").content.decode()
    assert "Removal waiting for a doctor" in page and "data-undo-removal" not in page


def test_the_doctors_home_lists_removals_waiting_for_a_decision(
    api: Any, client: Any, technician: Any, doctor: Any, completed_scan: Scan
) -> None:
    target = completed_scan.regions.order_by("index").first()
    client.force_login(doctor)
    assert "data-removal-item" not in client.get("/").content.decode()

    api.force_authenticate(technician)
    assert api.delete(f"/api/regions/{target.pk}/").status_code == 202
    page = client.get("/").content.decode()
    assert page.count("data-removal-item") == 1
    assert f'href="/scans/{completed_scan.pk}/"' in page and technician.username in page
    listed = AuditEvent.objects.filter(
        action=Action.PATIENT_LISTED, details__view="region removal worklist"
    ).get()
    assert listed.details["scans"] == [completed_scan.pk]

    api.force_authenticate(doctor)
    response = api.post(f"/api/regions/{target.pk}/removal/", {"approve": False}, format="json")
    assert response.status_code == 200
    assert "data-removal-item" not in client.get("/").content.decode()
