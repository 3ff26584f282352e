"""Settings: typed helpers fail loudly, and production mode is locked down."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from medimg import settings as medimg_settings

ROOT = Path(__file__).resolve().parents[2]


def _production_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        MEDIMG_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(64),
        DATABASE_URL="postgres://medimg@127.0.0.1:5432/medimg",
        REDIS_URL="redis://127.0.0.1:6379/9",
        ALLOWED_HOSTS="medimg.example.org",
        AUDIT_HMAC_KEY=secrets.token_hex(32),
        AUDIT_SIGNING_KEY=secrets.token_hex(32),
        MEDIMG_DEID_SECRET=secrets.token_hex(32),
        MEDIMG_KEKS=f"k1:{secrets.token_hex(32)}",
        MEDIMG_KEK_CURRENT="k1",
        DJANGO_SETTINGS_MODULE="medimg.settings",
    )
    env.update(overrides)
    return env


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_it_refuses_a_malformed_boolean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="SOME_FLAG"):
        medimg_settings.env_bool("SOME_FLAG", False)


def test_it_refuses_a_malformed_integer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_NUMBER", "12MB")
    with pytest.raises(ImproperlyConfigured, match="SOME_NUMBER"):
        medimg_settings.env_int("SOME_NUMBER", 1)


def test_it_refuses_an_integer_below_its_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_NUMBER", "-1")
    with pytest.raises(ImproperlyConfigured, match="minimum"):
        medimg_settings.env_int("SOME_NUMBER", 1, minimum=0)


def test_it_reads_secrets_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    monkeypatch.setenv("SOME_SECRET_FILE", str(secret_file))
    assert medimg_settings.env_str("SOME_SECRET") == "from-a-file"


def test_it_refuses_an_unreadable_secret_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_SECRET_FILE", "/nonexistent/secret")
    with pytest.raises(ImproperlyConfigured, match="SOME_SECRET_FILE"):
        medimg_settings.env_str("SOME_SECRET")


def test_it_refuses_an_unknown_database_scheme() -> None:
    with pytest.raises(ImproperlyConfigured, match="postgres"):
        medimg_settings._database_from_url("mysql://root@localhost/medimg")


def test_production_refuses_to_start_without_a_real_secret_key() -> None:
    env = _production_env()
    del env["SECRET_KEY"]
    result = _manage(env, "check")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_refuses_a_short_secret_key() -> None:
    result = _manage(_production_env(SECRET_KEY="short"), "check")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_refuses_debug() -> None:
    result = _manage(_production_env(DEBUG="true"), "check")
    assert result.returncode != 0
    assert "DEBUG" in result.stderr


def test_production_passes_the_deploy_checklist() -> None:
    result = _manage(_production_env(), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
