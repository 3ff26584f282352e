"""Every Django admin list filters only by its own list_filter (accounts.admin_site).

A known patient (MRN, name) and file name are planted; every registered changelist, ours and
the installed apps', is then probed with filters on every field it does not offer, as an
admin would type them into the URL. Each probe must be refused, and a probe that matches the
planted record must get exactly the answer of one that does not: no count to read.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.filters import SimpleListFilter
from django.test import Client
from django.urls import reverse

from imaging.models import Scan, ScanStatus
from patients.models import Patient

pytestmark = pytest.mark.django_db

MRN = "MRN-314159"
NAME = "Grace Hopper"
FILENAME = "hopper-chest.png"


@pytest.fixture
def staff(client: Client, admin: Any) -> Client:
    client.force_login(admin)
    return client


@pytest.fixture
def planted(technician: Any) -> Scan:
    patient = Patient.objects.create(id=MRN, name=NAME, created_by=technician)
    return Scan.objects.create(
        patient=patient,
        uploaded_by=technician,
        original_filename=FILENAME,
        format="png",
        size_bytes=1,
        width=8,
        height=8,
        pixel_dtype="uint8",
        pixels_sha256="0" * 64,
        status=ScanStatus.COMPLETED,
        original_path="scans/planted/original.enc",
        wrapped_key=b"",
        key_id="dev",
    )


def _changelists() -> list[tuple[str, Any]]:
    return [
        (reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"), model_admin)
        for model, model_admin in admin.site._registry.items()
    ]


def _offered(model_admin: Any) -> set[str]:
    fields = {model_admin.date_hierarchy} if model_admin.date_hierarchy else set()
    for item in model_admin.list_filter:
        if isinstance(item, type) and issubclass(item, SimpleListFilter):
            fields.add(item.parameter_name)
        else:
            fields.add(item[0] if isinstance(item, list | tuple) else item)
    return fields


def _refused(response: Any) -> bool:
    # A disallowed lookup is a 400; one Django cannot apply sends the list back with ?e=1.
    if response.status_code == 302:
        return response["Location"].endswith("?e=1")
    return response.status_code == 400


def _foreign_probes(model_admin: Any) -> list[tuple[str, str]]:
    """(lookup, planted value) for every field of the model the list does not offer, and the
    relation traversals an admin would try."""
    offered = _offered(model_admin)
    probes = []
    for field in model_admin.model._meta.get_fields():
        if field.name in offered:
            continue
        probes += [(field.name, MRN), (f"{field.name}__exact", MRN)]
        probes.append((f"{field.name}__startswith", "MRN-3"))
        if field.is_relation:
            probes.append((f"{field.name}__id__exact", MRN))
            probes.append((f"{field.name}__name__startswith", "Gr"))
    return probes


def test_it_covers_every_registered_list_including_scans_and_patients() -> None:
    urls = {url for url, _ in _changelists()}
    assert {
        "/admin/imaging/scan/",
        "/admin/patients/patient/",
        "/admin/accounts/user/",
        "/admin/audit/auditevent/",
        "/admin/axes/accessattempt/",
    } <= urls


def test_it_refuses_foreign_filters_on_every_admin_list(staff: Client, planted: Scan) -> None:
    leaks = []
    for url, model_admin in _changelists():
        for lookup, value in _foreign_probes(model_admin):
            response = staff.get(url, {lookup: value})
            if not _refused(response):
                leaks.append(f"{url}?{lookup}={value}: {response.status_code}")
    assert not leaks, "admin lists that filter by fields they do not offer:\n" + "\n".join(leaks)


@pytest.mark.parametrize(
    "query",
    [
        {"patient__exact": MRN},
        {"patient": MRN},
        {"patient__id__exact": MRN},
        {"patient__id__startswith": "MRN-3"},
        {"patient__name__startswith": "Gr"},
        {"patient__mrn": MRN},
        {"original_filename__startswith": "hopper"},
        {"original_filename__icontains": "chest"},
        {"uploaded_by__username": "tina"},
        {"regions__label": "phi_text"},
    ],
)
def test_scan_counts_do_not_tell_a_planted_mrn_or_file_name_from_a_wrong_guess(
    staff: Client, planted: Scan, query: dict[str, str]
) -> None:
    guess = {key: "zz-no-such-" + value for key, value in query.items()}

    hit = staff.get("/admin/imaging/scan/", query)
    miss = staff.get("/admin/imaging/scan/", guess)

    assert _refused(hit) and _refused(miss)
    assert (hit.status_code, hit.content) == (miss.status_code, miss.content)
    assert MRN.encode() not in hit.content and FILENAME.encode() not in hit.content


@pytest.mark.parametrize(
    ("url", "query"),
    [
        ("/admin/imaging/scan/", {"status__exact": "completed"}),
        ("/admin/imaging/scan/", {"needs_review__exact": "0"}),
        ("/admin/imaging/scan/", {"created_at__year": "2026"}),
        ("/admin/accounts/user/", {"role__exact": "doctor"}),
        ("/admin/audit/auditevent/", {"action__exact": "login"}),
        ("/admin/audit/auditevent/", {"created_at__year": "2026", "created_at__month": "1"}),
        ("/admin/axes/accessattempt/", {"locked_out": "yes"}),
    ],
)
def test_it_keeps_the_filters_each_list_offers(
    staff: Client, planted: Scan, url: str, query: dict[str, str]
) -> None:
    response = staff.get(url, query)
    assert response.status_code == 200, response.get("Location")
