"""Admins manage departments in Django admin: create them, see member and patient counts, put
users in them. No patient is named on these pages."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from accounts.models import Department
from patients.models import Patient

pytestmark = pytest.mark.django_db


def test_an_admin_creates_a_department(client: Client, admin: Any) -> None:
    client.force_login(admin)

    response = client.post(
        "/admin/accounts/department/add/", {"name": "Oncology", "slug": "oncology"}
    )

    assert response.status_code == 302, response.content
    assert Department.objects.filter(slug="oncology", name="Oncology").exists()


def test_the_list_counts_members_and_patients_and_names_no_patient(
    client: Client, admin: Any, technician: Any, doctor: Any, other_doctor: Any
) -> None:
    Patient.objects.create(id="H-DEPT-4711", name="Counted Person", created_by=technician)
    client.force_login(admin)

    html = client.get("/admin/accounts/department/").content.decode()

    assert "Radiology" in html and "Cardiology" in html
    assert "H-DEPT-4711" not in html and "Counted Person" not in html
    radiology = Department.objects.get(slug="radiology")
    assert (radiology.members.count(), radiology.patients.count()) == (2, 1)


def test_a_users_page_sets_departments(client: Client, admin: Any, doctor: Any) -> None:
    client.force_login(admin)

    html = client.get(f"/admin/accounts/user/{doctor.pk}/change/").content.decode()

    assert 'name="departments"' in html


def test_a_department_with_patients_cannot_be_deleted(
    client: Client, admin: Any, technician: Any
) -> None:
    Patient.objects.create(id="H-DEPT-4712", name="Kept Person", created_by=technician)
    radiology = Department.objects.get(slug="radiology")
    client.force_login(admin)

    response = client.post(f"/admin/accounts/department/{radiology.pk}/delete/", {"post": "yes"})

    assert response.status_code == 403
    assert Department.objects.filter(pk=radiology.pk).exists()
