"""Shared fixtures: one persona per role, plus an outsider with no role at all."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts import login_guard
from accounts.models import Role

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
def _isolated_login_guard(monkeypatch: Any) -> None:
    """Failed-login counters live in the shared cache (Redis in CI): each test counts its own,
    so failures in one test cannot lock a persona out in another."""
    monkeypatch.setattr(login_guard, "KEY_PREFIX", f"login-failures-test-{uuid.uuid4().hex}")
