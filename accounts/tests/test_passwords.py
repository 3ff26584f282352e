from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.hashers import make_password

pytestmark = pytest.mark.django_db


def test_it_hashes_new_passwords_with_argon2id(technician: Any) -> None:
    assert technician.password.startswith("argon2$argon2id$")


def test_it_accepts_a_bcrypt_hash_and_upgrades_it_on_login(
    api: Any, technician: Any, password: str
) -> None:
    # A hash migrated from an older system: bcrypt over SHA-256.
    technician.password = make_password(password, hasher="bcrypt_sha256")
    technician.save(update_fields=["password"])
    assert technician.password.startswith("bcrypt_sha256$")

    response = api.post(
        "/api/auth/token/", {"username": technician.username, "password": password}, format="json"
    )

    assert response.status_code == 200
    technician.refresh_from_db()
    assert technician.password.startswith("argon2$argon2id$")
    assert technician.check_password(password)


def test_it_refuses_a_wrong_password_against_a_bcrypt_hash(api: Any, technician: Any) -> None:
    technician.password = make_password("the-real-one-123", hasher="bcrypt_sha256")
    technician.save(update_fields=["password"])

    response = api.post(
        "/api/auth/token/", {"username": technician.username, "password": "wrong-1234567"}
    )

    assert response.status_code == 401
    technician.refresh_from_db()
    assert technician.password.startswith("bcrypt_sha256$")
