"""Technician review: add a missed region, remove a false one, confirm. Restore stays exact."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image

from audit.models import Action, AuditEvent, Outcome
from imaging.models import Region, RegionSource, Scan
from imaging.vault.pixels import scan_restore_pixels

pytestmark = pytest.mark.django_db


def _png(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def _redacted(api: Any, user: Any, scan: Scan, frame: int = 0) -> np.ndarray:
    api.force_authenticate(user)
    response = api.get(f"/api/images/{scan.pk}/redacted/?frame={frame}")
    assert response.status_code == 200
    return _png(response.content)


def _add(api: Any, user: Any, scan: Scan, **body: Any) -> Any:
    api.force_authenticate(user)
    return api.post(f"/api/images/{scan.pk}/regions/", body, format="json")


def _free_box(scan: Scan, size: int = 30) -> tuple[int, int, int, int]:
    """A box in the lower right, away from every detected region."""
    box = (scan.width - size - 10, scan.height - size - 10, scan.width - 10, scan.height - 10)
    for region in scan.regions.all():
        assert region.y2 <= box[1] or region.x2 <= box[0], "the free box overlaps a region"
    return box


def test_it_adds_a_region_and_restore_still_gives_the_original(
    api: Any,
    technician: Any,
    completed_scan: Scan,
    text_png: tuple[bytes, np.ndarray],
    django_capture_on_commit_callbacks: Any,
) -> None:
    original = text_png[1]
    before = _redacted(api, technician, completed_scan)
    x1, y1, x2, y2 = _free_box(completed_scan)
    old_files = list(completed_scan.frame_paths["redacted"])

    with django_capture_on_commit_callbacks(execute=True):
        response = _add(
            api, technician, completed_scan, x1=x1, y1=y1, x2=x2, y2=y2, label="phi_text"
        )

    assert response.status_code == 201, response.content
    body = response.json()
    region = Region.objects.get(pk=body["id"])
    assert (region.source, region.box, region.confidence) == (
        RegionSource.MANUAL,
        (x1, y1, x2, y2),
        1.0,
    )
    assert region.index == max(r.index for r in completed_scan.regions.all())
    after = _redacted(api, technician, completed_scan)
    # The new box is filled solid; nothing else moved.
    assert (after[y1:y2, x1:x2] == 0).all()
    assert not (before[y1:y2, x1:x2] == 0).all()
    outside = np.ones(after.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(after[outside], before[outside])
    scan = Scan.objects.get(pk=completed_scan.pk)
    assert np.array_equal(scan_restore_pixels(scan=scan)[0], original)
    assert scan.metrics["regions"] == scan.regions.count()
    assert scan.metrics["manual_regions"] == 1
    # The grid was redrawn under new names; the superseded files are gone.
    assert scan.frame_paths["redacted"] != old_files
    assert not any(default_storage.exists(name) for name in old_files)
    event = AuditEvent.objects.filter(action=Action.REGIONS_EDITED).get()
    assert event.actor == technician and event.target_id == str(scan.pk)
    assert event.details["change"] == "added" and event.details["box"] == [x1, y1, x2, y2]


def test_a_doctor_may_add_a_region_too(api: Any, doctor: Any, completed_scan: Scan) -> None:
    x1, y1, x2, y2 = _free_box(completed_scan)
    response = _add(api, doctor, completed_scan, x1=x1, y1=y1, x2=x2, y2=y2)
    assert response.status_code == 201
    assert response.json()["label"] == "phi_text"


def test_it_removes_a_region_a_doctor_approved_and_its_pixels_show_again(
    api: Any,
    technician: Any,
    doctor: Any,
    completed_scan: Scan,
    text_png: tuple[bytes, np.ndarray],
) -> None:
    original = text_png[1]
    regions = list(completed_scan.regions.order_by("index"))
    target, others = regions[0], regions[1:]
    assert (
        _redacted(api, technician, completed_scan)[target.y1 : target.y2, target.x1 : target.x2]
        == 0
    ).all()

    api.force_authenticate(technician)
    response = api.delete(f"/api/regions/{target.pk}/")
    assert response.status_code == 202, response.content
    assert response.json()["removal_pending"] is True
    api.force_authenticate(doctor)
    response = api.post(f"/api/regions/{target.pk}/removal/", {"approve": True}, format="json")

    assert response.status_code == 204, response.content
    assert not Region.objects.filter(pk=target.pk).exists()
    after = _redacted(api, technician, completed_scan)
    covered = np.zeros(after.shape[:2], bool)
    for other in others:
        covered[other.y1 : other.y2, other.x1 : other.x2] = True
    mine = np.zeros(after.shape[:2], bool)
    mine[target.y1 : target.y2, target.x1 : target.x2] = True
    # Back where no other region covers; still filled where one does.
    assert mine[~covered].any()
    assert np.array_equal(after[mine & ~covered], original[mine & ~covered])
    assert (after[covered] == 0).all()
    scan = Scan.objects.get(pk=completed_scan.pk)
    assert np.array_equal(scan_restore_pixels(scan=scan)[0], original)
    asked = AuditEvent.objects.get(action=Action.REGION_REMOVAL_REQUESTED)
    assert asked.actor == technician and asked.details["index"] == target.index
    event = AuditEvent.objects.get(action=Action.REGION_REMOVAL_APPROVED)
    assert event.actor == doctor and event.details["index"] == target.index
    assert event.details["requested_by"] == technician.username
    assert event.details["potential_disclosure"] is True


def test_it_confirms_the_review_and_an_edit_reopens_it(
    api: Any, technician: Any, completed_scan: Scan
) -> None:
    api.force_authenticate(technician)
    response = api.post(f"/api/images/{completed_scan.pk}/review/")

    assert response.status_code == 200
    assert response.json()["reviewed_by"] == technician.username
    scan = Scan.objects.get(pk=completed_scan.pk)
    assert scan.reviewed_by == technician and scan.reviewed_at is not None
    event = AuditEvent.objects.get(action=Action.REGIONS_EDITED)
    assert event.details == {
        "change": "confirmed",
        "regions": scan.regions.count(),
        "pending_removals": 0,
        "needs_review_cleared": False,
        "deidentified_copy_rewritten": False,
    }

    x1, y1, x2, y2 = _free_box(scan)
    assert _add(api, technician, scan, x1=x1, y1=y1, x2=x2, y2=y2).status_code == 201
    scan.refresh_from_db()
    assert scan.reviewed_at is None and scan.reviewed_by is None


@pytest.mark.parametrize(
    ("box", "code"),
    [
        ({"x1": 0, "y1": 0, "x2": 321, "y2": 10}, "box_out_of_bounds"),
        ({"x1": 10, "y1": 0, "x2": 10, "y2": 10}, "box_out_of_bounds"),
        ({"x1": 0, "y1": 200, "x2": 10, "y2": 241}, "box_out_of_bounds"),
        ({"x1": 0, "y1": 0, "x2": 10, "y2": 10, "frame": 1}, "invalid_frame"),
        ({"x1": 0, "y1": 0, "x2": 10, "y2": 10, "label": "Bad Label"}, "invalid_label"),
    ],
)
def test_it_refuses_a_bad_box(
    api: Any, technician: Any, completed_scan: Scan, box: dict[str, Any], code: str
) -> None:
    count = completed_scan.regions.count()
    response = _add(api, technician, completed_scan, **box)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert completed_scan.regions.count() == count
    assert not AuditEvent.objects.filter(action=Action.REGIONS_EDITED).exists()


def test_it_adds_a_region_on_a_later_dicom_frame_exactly(
    api: Any, technician: Any, completed_dicom: tuple[Scan, np.ndarray]
) -> None:
    scan, pixels = completed_dicom
    response = _add(api, technician, scan, x1=150, y1=120, x2=200, y2=170, frame=1)
    assert response.status_code == 201, response.content
    scan.refresh_from_db()
    restored = scan_restore_pixels(scan=scan)
    assert restored.dtype == np.uint16 and np.array_equal(restored, pixels)
    assert (_redacted(api, technician, scan, frame=1)[120:170, 150:200] == 0).all()


def test_it_refuses_review_edits_to_the_wrong_roles(
    api: Any, technician: Any, doctor: Any, admin: Any, completed_scan: Scan
) -> None:
    region = completed_scan.regions.first()
    api.force_authenticate(doctor)
    assert api.delete(f"/api/regions/{region.pk}/").status_code == 403
    assert api.post(f"/api/images/{completed_scan.pk}/review/").status_code == 403
    api.force_authenticate(admin)
    assert _add(api, admin, completed_scan, x1=0, y1=0, x2=5, y2=5).status_code == 403
    # A technician still cannot decrypt the region, and that refusal is audited as such.
    api.force_authenticate(technician)
    assert api.get(f"/api/regions/{region.pk}/").status_code == 403
    refused = AuditEvent.objects.filter(action=Action.REGION_DECRYPTED)
    assert [(e.actor, e.outcome) for e in refused] == [(technician, Outcome.REFUSED)]
    assert Region.objects.filter(pk=region.pk).exists()
    assert not AuditEvent.objects.filter(action=Action.REGIONS_EDITED).exists()


def test_it_refuses_review_before_processing_completes(
    api: Any, technician: Any, completed_scan: Scan
) -> None:
    Scan.objects.filter(pk=completed_scan.pk).update(status="processing")
    response = _add(api, technician, completed_scan, x1=0, y1=0, x2=5, y2=5)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "scan_not_ready"


def test_it_refuses_to_remove_a_tampered_region(
    api: Any, technician: Any, completed_scan: Scan
) -> None:
    region = completed_scan.regions.order_by("index").first()
    tampered = bytearray(region.ciphertext)
    tampered[-1] ^= 0x01
    Region.objects.filter(pk=region.pk).update(ciphertext=bytes(tampered))
    paths = dict(Scan.objects.get(pk=completed_scan.pk).frame_paths)

    api.force_authenticate(technician)
    response = api.delete(f"/api/regions/{region.pk}/")

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "review_failed"
    assert Region.objects.filter(pk=region.pk, removal_requested_at=None).exists()
    assert Scan.objects.get(pk=completed_scan.pk).frame_paths == paths
    assert not AuditEvent.objects.filter(action=Action.REGIONS_EDITED).exists()
    assert not AuditEvent.objects.filter(action=Action.REGION_REMOVAL_REQUESTED).exists()
