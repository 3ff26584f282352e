from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from accounts.models import Role, User
from accounts.tests.otp_codes import code, enrol
from audit.models import Action, AuditEvent

pytestmark = pytest.mark.django_db


def _staff(user: Any) -> Any:
    # A clinical user who somehow got the staff flags (a stale row, a hand-edited database).
    user.is_staff = True
    user.is_superuser = True
    user.save(update_fields=["is_staff", "is_superuser"])
    return user


@pytest.mark.parametrize("persona", ["technician", "doctor", "outsider"])
def test_it_keeps_non_admins_out_of_the_admin_site_even_with_staff_flags(
    client: Client, request: Any, persona: str
) -> None:
    client.force_login(_staff(request.getfixturevalue(persona)))

    for url in ("/admin/", "/admin/accounts/user/", "/admin/audit/"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("persona", ["technician", "doctor"])
def test_it_refuses_non_admins_at_the_admin_login_form(
    client: Client, request: Any, password: str, persona: str
) -> None:
    user = _staff(request.getfixturevalue(persona))

    response = client.post("/admin/login/", {"username": user.username, "password": password})

    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302
    event = AuditEvent.objects.get(action=Action.LOGIN_FAILED)
    assert event.actor_id == user.pk
    assert event.details == {"method": "admin", "reason": "not_admin"}
    assert not AuditEvent.objects.filter(action=Action.LOGIN).exists()


def test_it_lets_an_admin_in(client: Client, admin: Any, password: str) -> None:
    device = enrol(admin)
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": admin.username, "password": password, "otp_token": code(device)},
    )
    assert response.status_code == 302

    index = client.get("/admin/")
    assert index.status_code == 200
    users = client.get("/admin/accounts/user/")
    assert users.status_code == 200
    assert b"Last login" in users.content and b"Role" in users.content


def test_it_refuses_an_inactive_admin(client: Client, admin: Any) -> None:
    admin.is_active = False
    admin.save(update_fields=["is_active"])
    client.force_login(admin)

    assert client.get("/admin/").status_code == 302


def _change(client: Client, user: Any, **fields: Any) -> Any:
    data = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "role": user.role,
        "is_active": "on" if user.is_active else "",
        **fields,
    }
    return client.post(f"/admin/accounts/user/{user.pk}/change/", data)


def test_it_promotes_to_admin_with_staff_flags_and_audits(
    client: Client, admin: Any, doctor: Any
) -> None:
    client.force_login(admin)

    response = _change(client, doctor, role=Role.ADMIN)

    assert response.status_code == 302
    doctor.refresh_from_db()
    assert (doctor.role, doctor.is_staff, doctor.is_superuser) == (Role.ADMIN, True, True)
    event = AuditEvent.objects.get(action=Action.ADMIN_CHANGE, details__change="role")
    assert event.details == {"change": "role", "from": "doctor", "to": "admin"}
    assert event.actor_id == admin.pk


def test_it_demotes_an_admin_and_drops_the_staff_flags(
    client: Client, admin: Any, django_user_model: Any
) -> None:
    other = django_user_model.objects.create_user(
        username="second-admin", role=Role.ADMIN, is_staff=True, is_superuser=True
    )
    client.force_login(admin)

    assert _change(client, other, role=Role.TECHNICIAN).status_code == 302

    other.refresh_from_db()
    assert (other.role, other.is_staff, other.is_superuser) == (Role.TECHNICIAN, False, False)


def test_it_ignores_staff_flags_posted_in_the_form(client: Client, admin: Any, doctor: Any) -> None:
    client.force_login(admin)

    _change(client, doctor, is_staff="on", is_superuser="on")

    doctor.refresh_from_db()
    assert not doctor.is_staff and not doctor.is_superuser


def test_it_does_not_let_an_admin_demote_or_deactivate_themselves(
    client: Client, admin: Any
) -> None:
    client.force_login(admin)

    _change(client, admin, role=Role.DOCTOR, is_active="")

    admin.refresh_from_db()
    assert admin.role == Role.ADMIN and admin.is_active and admin.is_superuser


def test_it_activates_and_deactivates_in_bulk(
    client: Client, admin: Any, technician: Any, doctor: Any
) -> None:
    User.objects.filter(pk__in=[technician.pk, doctor.pk]).update(is_active=False)
    client.force_login(admin)

    response = client.post(
        "/admin/accounts/user/",
        {"action": "activate_users", "_selected_action": [technician.pk, doctor.pk]},
    )

    assert response.status_code == 302
    assert User.objects.filter(pk__in=[technician.pk, doctor.pk], is_active=True).count() == 2
    activated = AuditEvent.objects.filter(action=Action.ADMIN_CHANGE, details__change="activated")
    assert {e.target_id for e in activated} == {str(technician.pk), str(doctor.pk)}

    client.post(
        "/admin/accounts/user/",
        {"action": "deactivate_users", "_selected_action": [technician.pk, admin.pk]},
    )

    technician.refresh_from_db()
    admin.refresh_from_db()
    assert not technician.is_active
    assert admin.is_active  # refused: no one deactivates themselves


def test_it_activates_a_registered_user_who_can_then_log_in(
    client: Client, api: Any, admin: Any
) -> None:
    secret = "quartz-orchard-violet-31"
    api.post(
        "/api/auth/register/",
        {"username": "newdoc", "password": secret, "role": "doctor"},
        format="json",
    )
    newdoc = User.objects.get(username="newdoc")
    client.force_login(admin)

    client.post(
        "/admin/accounts/user/", {"action": "activate_users", "_selected_action": [newdoc.pk]}
    )

    response = api.post(
        "/api/auth/token/", {"username": "newdoc", "password": secret}, format="json"
    )
    assert response.status_code == 200


def test_it_creates_a_user_in_admin_with_consistent_flags(client: Client, admin: Any) -> None:
    client.force_login(admin)
    secret = "juniper-canyon-amber-64"

    response = client.post(
        "/admin/accounts/user/add/",
        {
            "username": "newadmin",
            "role": Role.ADMIN,
            "usable_password": "true",
            "password1": secret,
            "password2": secret,
        },
    )

    assert response.status_code == 302, response.content[:2000]
    user = User.objects.get(username="newadmin")
    assert user.role == Role.ADMIN and user.is_staff and user.is_superuser


def test_it_audits_each_object_of_a_bulk_delete(client: Client, admin: Any) -> None:
    from django.contrib.auth.models import Group

    groups = [Group.objects.create(name=name) for name in ("radiology", "oncology", "triage")]
    client.force_login(admin)

    response = client.post(
        "/admin/auth/group/",
        {"action": "delete_selected", "_selected_action": [g.pk for g in groups], "post": "yes"},
    )

    assert response.status_code == 302
    assert not Group.objects.exists()
    deleted = AuditEvent.objects.filter(action=Action.ADMIN_CHANGE, target_type="group")
    assert sorted(e.details["object"] for e in deleted) == ["oncology", "radiology", "triage"]
    assert {e.actor_id for e in deleted} == {admin.pk}
