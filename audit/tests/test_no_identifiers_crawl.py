"""Admins see no patient identifiers, checked by crawling (issue 20): a distinctive hospital id
and name are planted through the real endpoints (create with an image, view, search, note,
care-team and department changes, a refused create from another department, a refused
request, the investigator's search) and in an event written before pseudonyms; then every
Django admin changelist, change and history page, the admin home, the audit log pages, the
investigator page, the statistics page, the audit API and the signed export are fetched as an
admin, and neither the id nor the name may appear in any of them.

(audit/tests/test_no_identifiers.py checks the mapping itself, event by event.)"""

from __future__ import annotations

import contextlib
import io
import re
from typing import Any

import pytest
from django.contrib import admin as django_admin
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import NoReverseMatch, reverse
from PIL import Image
from rest_framework.test import APIClient

from audit.chain import signing_key
from audit.export import verify_export
from audit.models import Action, AuditEvent, Outcome
from audit.services import append_entry
from patients.models import Patient

pytestmark = pytest.mark.django_db

HOSPITAL_ID = "ZZ-PLANTED-9137"
NAME = "Zelda Plantedname"
# Each model's first rows get their change and history pages fetched.
CHANGE_PAGES_PER_MODEL = 25


def _as(user: Any) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


def _png() -> SimpleUploadedFile:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), (120, 120, 120)).save(buffer, format="PNG")
    return SimpleUploadedFile(f"{HOSPITAL_ID}.png", buffer.getvalue(), content_type="image/png")


@pytest.fixture
def planted(
    technician: Any,
    doctor: Any,
    other_technician: Any,
    other_doctor: Any,
    outsider: Any,
    admin: Any,
    other_department: Any,
) -> Patient:
    # An event as the code before pseudonyms wrote it: the id in clear (kept, hash-chained).
    append_entry({
        "actor_id": None, "actor_username": "legacy", "role": "doctor",
        "action": Action.PATIENT_VIEWED, "target_type": "patient", "target_id": HOSPITAL_ID,
        "outcome": Outcome.SUCCESS, "ip": None, "user_agent": "", "details": {},
    })  # fmt: skip
    tech, doc = _as(technician), _as(doctor)
    created = tech.post(
        "/api/patients/",
        {"id": HOSPITAL_ID, "name": NAME, "age": "47", "images": [_png()]},
        format="multipart",
    )
    assert created.status_code == 201, created.content
    base = f"/api/patients/{HOSPITAL_ID}/"
    assert doc.get(base).status_code == 200
    assert doc.get("/api/patients/", {"q": HOSPITAL_ID}).status_code == 200
    assert doc.get("/api/patients/", {"q": NAME}).status_code == 200
    assert doc.post(f"{base}notes/", {"text": f"Seen {NAME}."}, format="json").status_code == 201
    assert tech.patch(base, {"note": f"{NAME} {HOSPITAL_ID}"}, format="json").status_code == 200
    assert doc.get(f"{base}access/").status_code == 200
    assert (
        doc.patch(
            f"{base}access/",
            {"departments": ["radiology", "cardiology"], "care_team": ["olga"]},
            format="json",
        ).status_code
        == 200
    )
    assert doc.patch(f"{base}access/", {"departments": ["radiology"]}, format="json").status_code
    # Another department tries to register the same id: refused, audited.
    refused = _as(other_technician).post(
        "/api/patients/", {"id": HOSPITAL_ID, "name": NAME}, format="json"
    )
    assert refused.status_code == 409
    # A request refused for its role, with the id in its path.
    assert _as(outsider).get(base).status_code == 403
    # The pages, as people use them.
    page = Client()
    page.force_login(doctor)
    assert page.get(f"/patients/{HOSPITAL_ID}/").status_code == 200
    assert page.get("/", {"q": HOSPITAL_ID}).status_code == 200
    # The investigator searched for the id.
    investigator = Client()
    investigator.force_login(admin)
    assert investigator.post("/manage/audit/patient/", {"hospital_id": HOSPITAL_ID}).status_code
    patient = Patient.objects.get(pk=HOSPITAL_ID)
    assert patient.scans.count() == 1
    assert AuditEvent.objects.filter(action=Action.PATIENT_CREATE_REFUSED).count() == 1
    return patient


def _leaks(body: bytes) -> list[str]:
    text = body.decode("utf-8", "replace").lower()
    return [value for value in (HOSPITAL_ID, NAME) if value.lower() in text]


def _admin_pages() -> list[str]:
    pages = ["/admin/"]
    for model in django_admin.site._registry:
        name = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        pages.append(reverse(f"{name}_changelist"))
        for pk in model._default_manager.values_list("pk", flat=True)[:CHANGE_PAGES_PER_MODEL]:
            for view in ("change", "history"):
                with contextlib.suppress(NoReverseMatch):
                    pages.append(reverse(f"{name}_{view}", args=[pk]))
    return pages


def test_the_planted_id_is_really_stored_where_admins_cannot_see_it(
    planted: Patient, doctor: Any
) -> None:
    # Otherwise the crawl below would prove nothing: the old event holds the id in clear,
    # the record holds id and name, the scan's file name holds the id, and the clinical page
    # shows them (so _leaks finds them where they are allowed).
    assert AuditEvent.objects.filter(target_id=HOSPITAL_ID).count() == 1
    assert (planted.pk, planted.name) == (HOSPITAL_ID, NAME)
    assert planted.scans.get().original_filename == f"{HOSPITAL_ID}.png"
    client = Client()
    client.force_login(doctor)
    assert _leaks(client.get(f"/patients/{HOSPITAL_ID}/").content) == [HOSPITAL_ID, NAME]


def test_no_admin_page_export_or_api_shows_the_id_or_the_name(planted: Patient, admin: Any) -> None:
    client = Client()
    client.force_login(admin)
    pages = _admin_pages()
    pages += ["/", "/manage/statistics/", "/manage/audit/patient/"]
    audit_pages = -(-AuditEvent.objects.count() // 50)
    pages += [f"/manage/audit/?page={n}" for n in range(1, audit_pages + 1)]
    pages += [f"/manage/audit/?action={action}" for action in Action.values]
    seen: dict[str, list[str]] = {}
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, (page, response.status_code)
        if leaks := _leaks(response.content):
            seen[page] = leaks
    # The investigator's answer, too, names the patient by reference only.
    answer = client.post("/manage/audit/patient/", {"hospital_id": HOSPITAL_ID})
    assert planted.reference in answer.content.decode()
    if leaks := _leaks(answer.content):
        seen["POST /manage/audit/patient/"] = leaks
    api = _as(admin)
    url: str | None = "/api/audit/events/"
    while url:
        response = api.get(url)
        assert response.status_code == 200
        if leaks := _leaks(response.content):
            seen[url] = leaks
        url = response.json()["next"]
    export = api.get("/api/audit/export/")
    body = b"".join(export.streaming_content)
    if leaks := _leaks(body):
        seen["/api/audit/export/"] = leaks
    assert not seen, f"shown to an admin: {seen}"

    # The crawl reached the patient list (Patient has no object pages, by design) and the
    # planted scan's change page.
    assert reverse("admin:patients_patient_changelist") in pages
    scan_page = reverse("admin:imaging_scan_change", args=[planted.scans.get().pk])
    assert scan_page in pages
    report = verify_export(io.BytesIO(body), public_key=signing_key().public_key())
    assert report.ok, report
    # Every event about the patient is in the export, by reference.
    assert len(re.findall(planted.reference.encode(), body)) >= 10
