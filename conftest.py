"""Shared fixtures: one persona per role, plus an outsider with no role at all."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import Role

# Every log line of the whole run is checked for JWTs, passwords, keys and patient names.
pytest_plugins = ["medimg.tests.log_hygiene"]

PASSWORD = "correct-horse-battery-staple-42"


def _make_user(django_user_model: Any, username: str, role: str) -> Any:
    return django_user_model.objects.create_user(
        username=username,
        password=PASSWORD,
        role=role,
        is_staff=role == Role.ADMIN,
        is_superuser=role == Role.ADMIN,
    )


@pytest.fixture
def password() -> str:
    return PASSWORD


@pytest.fixture
def technician(django_user_model: Any) -> Any:
    return _make_user(django_user_model, "tina", Role.TECHNICIAN)


@pytest.fixture
def doctor(django_user_model: Any) -> Any:
    return _make_user(django_user_model, "doris", Role.DOCTOR)


@pytest.fixture
def admin(django_user_model: Any) -> Any:
    return _make_user(django_user_model, "adam", Role.ADMIN)


@pytest.fixture
def outsider(django_user_model: Any) -> Any:
    """Active and authenticated, but with no role: sees nothing."""
    return _make_user(django_user_model, "oscar", "")


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    """Argon2id with test-sized cost parameters (see medimg/tests/hashers.py)."""
    settings.PASSWORD_HASHERS = [
        "medimg.tests.hashers.FastArgon2PasswordHasher",
        *settings.PASSWORD_HASHERS[1:],
    ]


@pytest.fixture(autouse=True)
def _isolated_media(settings: Any, tmp_path: Any) -> None:
    """Each test writes uploads and generated keys under its own temporary folder."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.KEY_DIR = tmp_path / "keys"


@pytest.fixture(autouse=True)
def _force_login_gives_both_factors(monkeypatch: Any) -> None:
    """`client.force_login` skips the whole login, so it skips the second factor too: an admin
    (who must have one) gets a confirmed TOTP device and an OTP-verified session. The real
    two-step login is tested in accounts/tests/test_otp.py with real codes."""
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    original = Client.force_login

    def force_login(self: Client, user: Any, backend: str | None = None) -> None:
        original(self, user, backend)
        device = TOTPDevice.objects.filter(user_id=user.pk, confirmed=True).first()
        if device is None and user.role == Role.ADMIN:
            device = TOTPDevice.objects.create(user=user, name="test", confirmed=True)
        if device is not None:
            session = self.session
            session[DEVICE_ID_SESSION_KEY] = device.persistent_id
            session.save()

    monkeypatch.setattr(Client, "force_login", force_login)
