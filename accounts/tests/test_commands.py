from __future__ import annotations

import re
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import Role, User
from accounts.otp import otp_secret_text
from audit.models import Action, AuditEvent

pytestmark = pytest.mark.django_db

STRONG = "saffron-lantern-meadow-58"


def test_it_creates_an_active_user_from_the_environment(monkeypatch: Any) -> None:
    monkeypatch.setenv("MEDIMG_PASSWORD", STRONG)
    out = StringIO()

    call_command("adduser", "carol", "--role", "doctor", stdout=out)

    user = User.objects.get(username="carol")
    assert user.is_active and user.role == Role.DOCTOR
    assert not user.is_staff and not user.is_superuser
    assert user.check_password(STRONG)
    assert STRONG not in out.getvalue()
    event = AuditEvent.objects.get(action=Action.USER_CREATED)
    assert event.target_id == str(user.pk)
    assert event.details == {"role": "doctor", "via": "adduser"}


def test_it_makes_an_admin_staff_and_superuser(monkeypatch: Any) -> None:
    monkeypatch.setenv("MEDIMG_PASSWORD", STRONG)

    call_command("adduser", "root2", "--role", "admin", stdout=StringIO())

    user = User.objects.get(username="root2")
    assert user.is_staff and user.is_superuser and user.role == Role.ADMIN


def test_it_prompts_twice_without_the_environment(monkeypatch: Any) -> None:
    monkeypatch.delenv("MEDIMG_PASSWORD", raising=False)
    answers = iter([STRONG, STRONG])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))

    call_command("adduser", "tom", "--role", "technician", stdout=StringIO())

    assert User.objects.get(username="tom").check_password(STRONG)


def test_it_refuses_mismatched_prompts(monkeypatch: Any) -> None:
    monkeypatch.delenv("MEDIMG_PASSWORD", raising=False)
    answers = iter([STRONG, STRONG + "x"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))

    with pytest.raises(CommandError, match="do not match"):
        call_command("adduser", "tom", "--role", "technician")
    assert not User.objects.filter(username="tom").exists()


def test_it_refuses_a_weak_password(monkeypatch: Any) -> None:
    monkeypatch.setenv("MEDIMG_PASSWORD", "password")

    with pytest.raises(CommandError, match="Password refused"):
        call_command("adduser", "tom", "--role", "technician")
    assert not User.objects.filter(username="tom").exists()
    assert not AuditEvent.objects.filter(action=Action.USER_CREATED).exists()


def test_it_refuses_an_existing_user(monkeypatch: Any, technician: Any) -> None:
    monkeypatch.setenv("MEDIMG_PASSWORD", STRONG)

    with pytest.raises(CommandError, match="already exists"):
        call_command("adduser", technician.username, "--role", "admin")
    technician.refresh_from_db()
    assert technician.role == Role.TECHNICIAN and not technician.is_superuser


def test_it_refuses_an_unknown_role(monkeypatch: Any) -> None:
    monkeypatch.setenv("MEDIMG_PASSWORD", STRONG)

    with pytest.raises(CommandError):
        call_command("adduser", "tom", "--role", "superuser")


def test_it_creates_demo_users_once_and_prints_passwords_once() -> None:
    first = StringIO()
    call_command("create_demo_users", stdout=first)

    users = {u.username: u for u in User.objects.all()}
    assert {name: u.role for name, u in users.items()} == {
        "tech": Role.TECHNICIAN,
        "doctor": Role.DOCTOR,
        "cardiotech": Role.TECHNICIAN,
        "cardiodoctor": Role.DOCTOR,
        "admin": Role.ADMIN,
    }
    assert all(u.is_active for u in users.values())
    assert users["admin"].is_staff and users["admin"].is_superuser
    printed = dict(re.findall(r"^\s+(\w+)\s+\w+\s+(\S+)$", first.getvalue(), re.MULTILINE))
    assert set(printed) == {"tech", "doctor", "cardiotech", "cardiodoctor", "admin"}
    for name, secret in printed.items():
        assert users[name].check_password(secret)
    # The demo admin can pass the two-factor step: its device's secret is printed once.
    device = TOTPDevice.objects.get(user=users["admin"], confirmed=True)
    assert f"secret {otp_secret_text(device)}" in first.getvalue()
    assert not TOTPDevice.objects.exclude(user=users["admin"]).exists()

    second = StringIO()
    call_command("create_demo_users", stdout=second)

    assert User.objects.count() == 5
    assert "already exists" in second.getvalue()
    for secret in printed.values():
        assert secret not in second.getvalue()
    for name, secret in printed.items():
        assert User.objects.get(username=name).check_password(secret)


def test_it_refuses_demo_users_in_production(settings: Any) -> None:
    settings.PRODUCTION = True

    with pytest.raises(CommandError, match="development"):
        call_command("create_demo_users")
    assert not User.objects.exists()
