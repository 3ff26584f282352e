"""Every imaging endpoint refuses the wrong role, and lists cost a fixed number of queries."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import Action, AuditEvent, Outcome
from imaging.models import Scan
from imaging.tests import factories
from imaging.tests.conftest import as_upload

pytestmark = pytest.mark.django_db

# (method, url template, roles allowed)
ENDPOINTS = [
    ("get", "/api/patients/{patient}/images/", {"technician", "doctor"}),
    ("post", "/api/patients/{patient}/images/", {"technician"}),
    ("get", "/api/images/{scan}/", {"technician", "doctor"}),
    ("get", "/api/images/{scan}/status/", {"technician", "doctor"}),
    ("get", "/api/images/{scan}/redacted/", {"technician", "doctor"}),
    ("get", "/api/images/{scan}/grid/", {"technician", "doctor"}),
    ("get", "/api/images/{scan}/regions/", {"technician", "doctor"}),
    ("get", "/api/images/{scan}/similar/", {"technician", "doctor"}),
    ("post", "/api/images/{scan}/restore/", {"doctor"}),
    ("get", "/api/regions/{region}/", {"doctor"}),
    ("get", "/api/stats/processing/", {"admin"}),
]
ROLES = ["technician", "doctor", "admin", "outsider"]


def _call(api: Any, method: str, url: str) -> Any:
    if method == "post" and url.endswith("/restore/"):
        return api.post(url, {}, format="json")
    if method == "post":
        png = factories.png_bytes(factories.text_image(96, 64))
        return api.post(url, {"files": [as_upload("a.png", png)]}, format="multipart")
    return api.get(url)


def _url(template: str, scan: Scan) -> str:
    region = scan.regions.order_by("index").first()
    return template.format(patient=scan.patient_id, scan=scan.pk, region=region.pk if region else 0)


@pytest.mark.parametrize(("method", "template", "allowed"), ENDPOINTS)
@pytest.mark.parametrize("role", ROLES)
def test_it_lets_only_the_right_roles_in(
    request: pytest.FixtureRequest,
    api: Any,
    completed_scan: Scan,
    role: str,
    method: str,
    template: str,
    allowed: set[str],
) -> None:
    user = request.getfixturevalue(role)
    api.force_authenticate(user)

    response = _call(api, method, _url(template, completed_scan))

    if role in allowed:
        assert response.status_code in (200, 201), response.content
    else:
        assert response.status_code == 403, response.content
        assert response.json()["error"]["code"] == "permission_denied"


@pytest.mark.parametrize(("method", "template", "allowed"), ENDPOINTS)
def test_it_wants_authentication(
    api: Any, completed_scan: Scan, method: str, template: str, allowed: set[str]
) -> None:
    response = _call(api, method, _url(template, completed_scan))
    assert response.status_code == 401


@pytest.mark.parametrize(
    "template",
    [
        "/api/patients/NOBODY/images/",
        "/api/images/999999/",
        "/api/images/999999/status/",
        "/api/images/999999/redacted/",
        "/api/images/999999/grid/",
        "/api/images/999999/regions/",
        "/api/images/999999/similar/",
        "/api/images/999999/restore/",
        "/api/regions/999999/",
    ],
)
def test_it_404s_for_unknown_objects(api: Any, doctor: Any, template: str) -> None:
    api.force_authenticate(doctor)
    response = _call(api, "post" if template.endswith("/restore/") else "get", template)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_it_refuses_restore_for_technician_and_audits_it(
    api: Any, technician: Any, completed_scan: Scan
) -> None:
    api.force_authenticate(technician)

    response = api.post(f"/api/images/{completed_scan.pk}/restore/", {}, format="json")

    assert response.status_code == 403
    event = AuditEvent.objects.get(action=Action.SCAN_RESTORED)
    assert event.outcome == Outcome.REFUSED
    assert (event.actor, event.target_type, event.target_id) == (
        technician,
        "scan",
        str(completed_scan.pk),
    )
    assert not AuditEvent.objects.filter(
        action=Action.SCAN_RESTORED, outcome=Outcome.SUCCESS
    ).exists()


def test_it_refuses_region_decryption_for_technician_and_audits_it(
    api: Any, technician: Any, completed_scan: Scan
) -> None:
    region = completed_scan.regions.first()
    assert region is not None
    api.force_authenticate(technician)

    response = api.get(f"/api/regions/{region.pk}/")

    assert response.status_code == 403
    event = AuditEvent.objects.get(action=Action.REGION_DECRYPTED)
    assert event.outcome == Outcome.REFUSED and event.target_id == str(region.pk)


def test_region_metadata_never_carries_pixels_or_ciphertext(
    api: Any, technician: Any, completed_scan: Scan
) -> None:
    api.force_authenticate(technician)
    regions = api.get(f"/api/images/{completed_scan.pk}/regions/").json()
    assert len(regions) == completed_scan.regions.count()
    assert set(regions[0]) == {
        "id",
        "index",
        "frame",
        "label",
        "confidence",
        "box",
        "dtype",
        "pixel_entropy",
        "ciphertext_entropy",
        "removal_pending",
        "removal_requested_at",
    }


def test_the_detail_shows_status_flags_regions_and_metrics(
    api: Any, doctor: Any, completed_scan: Scan
) -> None:
    api.force_authenticate(doctor)
    body = api.get(f"/api/images/{completed_scan.pk}/").json()
    assert body["status"] == "completed"
    assert body["needs_review"] is False and body["possible_duplicate"] is False
    assert len(body["regions"]) == completed_scan.regions.count()
    assert 0 < body["metrics"]["ssim"] < 1
    assert body["metrics"]["regions"] == len(body["regions"])
    assert body["total_ms"] > 0
    viewed = AuditEvent.objects.get(action=Action.SCAN_VIEWED)
    assert viewed.actor == doctor and viewed.target_id == str(completed_scan.pk)


def test_the_patient_image_list_has_no_n_plus_one(
    api: Any,
    technician: Any,
    doctor: Any,
    patient: Any,
    bright_detector: None,
    upload: Any,
    django_assert_max_num_queries: Any,
) -> None:
    for seed in range(4):
        upload((f"s{seed}.png", factories.png_bytes(factories.text_image(96, 64, seed=seed))))
    api.force_authenticate(doctor)

    # Four for the list, four for its audit event (issue 21 item 10) and one for the
    # emergency-grant check of that event (patients.emergency): constant, while a query per
    # scan would add at least four more.
    with django_assert_max_num_queries(9):
        response = api.get(f"/api/patients/{patient.id}/images/")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 4
    assert all(item["region_count"] >= 1 for item in body["results"])
    assert body["results"][0]["uploaded_by"] == technician.username


def test_the_detail_query_count_does_not_grow_with_regions(
    api: Any, doctor: Any, bright_detector: None, upload: Any
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    few = factories.text_image(320, 240, seed=1, lines=("DOE^JANE",))
    many = factories.text_image(320, 240, seed=2, lines=("A1 B2", "C3 D4", "E5 F6", "G7 H8"))
    scans = [
        Scan.objects.get(pk=upload((f"{i}.png", factories.png_bytes(img))).json()[0]["id"])
        for i, img in enumerate((few, many))
    ]
    assert scans[0].regions.count() < scans[1].regions.count()
    api.force_authenticate(doctor)

    counts = []
    for scan in scans:
        with CaptureQueriesContext(connection) as queries:
            assert api.get(f"/api/images/{scan.pk}/").status_code == 200
        counts.append(len(queries))

    # The scan, its regions in one query, and the fixed cost of one audit append.
    assert counts[0] == counts[1] <= 12


def test_similar_lists_the_duplicate_first(
    api: Any, doctor: Any, bright_detector: None, upload: Any
) -> None:
    png = factories.png_bytes(factories.text_image(320, 240, seed=11))
    other = factories.png_bytes(factories.text_image(320, 240, seed=99, lines=("X",)))
    first = upload(("a.png", png)).json()[0]["id"]
    upload(("c.png", other))
    second = Scan.objects.get(pk=upload(("b.png", png)).json()[0]["id"])

    assert second.possible_duplicate is True and second.duplicate_of_id == first
    api.force_authenticate(doctor)
    similar = api.get(f"/api/images/{second.pk}/similar/").json()
    assert similar[0]["scan"]["id"] == first and similar[0]["distance"] == 0
    assert len(similar) == 2


def test_stats_count_by_status_with_times_and_classes(
    api: Any, admin: Any, completed_scan: Scan
) -> None:
    api.force_authenticate(admin)
    body = api.get("/api/stats/processing/").json()
    assert body["by_status"]["completed"] == 1 and body["total"] == 1
    assert body["total_ms"]["median"] > 0 and body["total_ms"]["p95"] >= body["total_ms"]["median"]
    assert body["classes"] == {"phi_text": completed_scan.regions.count()}
    assert body["regions_per_image"]["max"] == completed_scan.regions.count()

    later = api.get("/api/stats/processing/?since=2999-01-01T00:00:00Z").json()
    assert later["total"] == 0


def test_redacted_and_grid_take_a_frame(
    api: Any, technician: Any, completed_dicom: tuple[Scan, Any]
) -> None:
    scan, _ = completed_dicom
    api.force_authenticate(technician)
    for kind in ("redacted", "grid"):
        assert api.get(f"/api/images/{scan.pk}/{kind}/?frame=1").status_code == 200
        bad = api.get(f"/api/images/{scan.pk}/{kind}/?frame=2")
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_frame"
