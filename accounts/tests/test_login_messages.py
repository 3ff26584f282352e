"""What the login page says (issue 16): a pending account, after the right password only, is
told it awaits activation; a locked-out login is told for how long."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

WRONG = "Please enter a correct username and password"


def _login(client: Client, username: str, password: str) -> str:
    response = client.post("/login/", {"username": username, "password": password})
    return response.content.decode()


def test_a_pending_account_is_told_it_awaits_activation(
    client: Client, django_user_model: Any, password: str
) -> None:
    django_user_model.objects.create_user(
        username="newbie", password=password, role="doctor", is_active=False
    )
    html = _login(client, "newbie", password)
    assert "waiting for an administrator to activate it" in html
    assert WRONG not in html
    assert "_auth_user_id" not in client.session


def test_a_wrong_password_says_nothing_about_the_account(
    client: Client, django_user_model: Any, password: str
) -> None:
    django_user_model.objects.create_user(
        username="newbie", password=password, role="doctor", is_active=False
    )
    pending_wrong = _login(client, "newbie", "not-the-password-1")
    unknown = _login(client, "nobody-at-all", "not-the-password-1")
    for html in (pending_wrong, unknown):
        assert WRONG in html
        assert "waiting for an administrator" not in html and "deactivated" not in html


def test_a_deactivated_account_is_told_so_after_the_right_password(
    client: Client, technician: Any, password: str
) -> None:
    client.force_login(technician)
    client.logout()
    technician.refresh_from_db()
    technician.is_active = False
    technician.save(update_fields=["is_active"])
    html = _login(client, technician.username, password)
    assert "account has been deactivated" in html
    assert WRONG not in html


def test_the_lockout_says_for_how_long(
    client: Client, technician: Any, password: str, settings: Any
) -> None:
    settings.AXES_FAILURE_LIMIT = 2
    settings.AXES_COOLOFF_TIME = timedelta(minutes=20)
    for _ in range(2):
        _login(client, technician.username, "nope-1234")
    response = client.post("/login/", {"username": technician.username, "password": password})
    assert response.status_code == 429
    assert "blocked for 20 minutes after the last failed attempt" in response.content.decode()


def test_the_lockout_message_follows_the_setting(api: Any, technician: Any, settings: Any) -> None:
    from accounts.lockout import locked_message

    settings.AXES_COOLOFF_TIME = timedelta(minutes=1)
    assert "blocked for 1 minute after" in locked_message()
