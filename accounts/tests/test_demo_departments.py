"""`create_demo_users` shows access following care on the first login: two departments, each
with a technician and a doctor and two patients, and one care-team member from elsewhere."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import Department, User
from audit.models import Action, AuditEvent
from patients.models import Patient

pytestmark = [pytest.mark.django_db, pytest.mark.own_departments]


def _visible(username: str) -> list[str]:
    user = User.objects.get(username=username)
    return sorted(Patient.objects.visible_to(user).values_list("pk", flat=True))


def test_the_demo_has_two_departments_with_patients_in_each() -> None:
    call_command("create_demo_users", stdout=StringIO())

    assert sorted(Department.objects.values_list("slug", flat=True)) == [
        "cardiology",
        "radiology",
    ]
    by_department = {
        department.slug: sorted(department.patients.values_list("pk", flat=True))
        for department in Department.objects.all()
    }
    assert by_department == {
        "cardiology": ["DEMO-C-001", "DEMO-C-002"],
        "radiology": ["DEMO-R-001", "DEMO-R-002"],
    }
    assert _visible("doctor") == _visible("tech") == ["DEMO-R-001", "DEMO-R-002"]
    assert _visible("cardiotech") == ["DEMO-C-001", "DEMO-C-002"]
    # On the care team of one Radiology patient.
    assert _visible("cardiodoctor") == ["DEMO-C-001", "DEMO-C-002", "DEMO-R-001"]
    assert _visible("admin") == []
    members = {
        user.username: sorted(user.departments.values_list("slug", flat=True))
        for user in User.objects.all()
    }
    assert members == {
        "tech": ["radiology"],
        "doctor": ["radiology"],
        "cardiotech": ["cardiology"],
        "cardiodoctor": ["cardiology"],
        "admin": [],
    }
    # Registered through the services, audited.
    assert AuditEvent.objects.filter(action=Action.PATIENT_CREATED).count() == 4
    assert AuditEvent.objects.filter(action=Action.PATIENT_CARE_TEAM_CHANGED).count() == 1


def test_it_prints_who_sees_what_on_every_run() -> None:
    call_command("create_demo_users", stdout=StringIO())
    again = StringIO()

    call_command("create_demo_users", stdout=again)

    lines = again.getvalue().splitlines()
    assert "  doctor        doctor      Radiology    sees DEMO-R-001, DEMO-R-002" in lines
    assert (
        "  cardiodoctor  doctor      Cardiology   sees DEMO-C-001, DEMO-C-002, DEMO-R-001" in lines
    )
    assert "  admin         admin       no department sees none" in lines


def test_running_it_again_adds_nothing() -> None:
    call_command("create_demo_users", stdout=StringIO())
    events = AuditEvent.objects.count()

    call_command("create_demo_users", stdout=StringIO())

    assert Patient.objects.count() == 4
    assert Department.objects.count() == 2
    assert AuditEvent.objects.count() == events
