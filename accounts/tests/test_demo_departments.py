"""`create_demo_users` shows access following care on the first login: two departments, two
patients in each, the doctor in one department only."""

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
    assert _visible("doctor") == ["DEMO-R-001", "DEMO-R-002"]
    assert _visible("tech") == ["DEMO-C-001", "DEMO-C-002", "DEMO-R-001", "DEMO-R-002"]
    assert _visible("admin") == []
    # Registered through the services: created and moved, both audited.
    assert AuditEvent.objects.filter(action=Action.PATIENT_CREATED).count() == 4
    assert AuditEvent.objects.filter(action=Action.PATIENT_DEPARTMENTS_CHANGED).count() == 4


def test_running_it_again_adds_nothing() -> None:
    call_command("create_demo_users", stdout=StringIO())
    events = AuditEvent.objects.count()

    call_command("create_demo_users", stdout=StringIO())

    assert Patient.objects.count() == 4
    assert Department.objects.count() == 2
    assert AuditEvent.objects.count() == events
