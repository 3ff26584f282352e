"""Events Django itself announces: session login, logout, failed login, admin changes."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from audit.models import Action, AuditEvent, Outcome

pytestmark = pytest.mark.django_db


def test_it_records_session_login_and_logout(client: Client, doctor: Any, password: str) -> None:
    assert client.login(username="doris", password=password)
    client.logout()

    events = list(AuditEvent.objects.values_list("action", "actor_username", "outcome"))
    assert events == [
        (Action.LOGIN, "doris", Outcome.SUCCESS),
        (Action.LOGOUT, "doris", Outcome.SUCCESS),
    ]


def test_it_records_a_failed_login_with_the_name_typed(client: Client, doctor: Any) -> None:
    assert not client.login(username="doris", password="wrong password")

    event = AuditEvent.objects.get()
    assert (event.action, event.outcome) == (Action.LOGIN_FAILED, Outcome.FAILURE)
    assert (event.actor_id, event.actor_username) == (None, "doris")
    assert "wrong password" not in str(event.details)


def test_it_records_a_django_admin_change(client: Client, admin: Any) -> None:
    client.force_login(admin)

    response = client.post("/admin/auth/group/add/", {"name": "radiology"})

    assert response.status_code == 302
    group = Group.objects.get(name="radiology")
    event = AuditEvent.objects.get(action=Action.ADMIN_CHANGE)
    assert (event.actor_username, event.role) == ("adam", "admin")
    assert (event.target_type, event.target_id) == ("group", str(group.pk))
    assert event.details["change"] == "added" and event.details["object"] == "radiology"


def test_it_shows_the_log_read_only_in_django_admin(client: Client, admin: Any) -> None:
    client.login(username="nobody", password="x")
    client.force_login(admin)
    event = AuditEvent.objects.get(action=Action.LOGIN_FAILED)
    base = "/admin/audit/auditevent/"

    listing = client.get(base, {"q": "nobody"})
    detail = client.get(f"{base}{event.pk}/change/")
    add = client.get(f"{base}add/")
    change = client.post(f"{base}{event.pk}/change/", {"actor_username": "someone"})
    delete = client.post(f"{base}{event.pk}/delete/", {"post": "yes"})

    assert listing.status_code == 200 and b"nobody" in listing.content
    assert detail.status_code == 200 and b"Save" not in detail.content
    assert add.status_code == 403
    assert change.status_code == 403
    assert delete.status_code == 403
    event.refresh_from_db()
    assert event.actor_username == "nobody"
