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


def production_env(**overrides: str) -> dict[str, str]:
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


def run_manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
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
    env = production_env()
    del env["SECRET_KEY"]
    result = run_manage(env, "check")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_refuses_a_short_secret_key() -> None:
    result = run_manage(production_env(SECRET_KEY="short"), "check")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_refuses_debug() -> None:
    result = run_manage(production_env(DEBUG="true"), "check")
    assert result.returncode != 0
    assert "DEBUG" in result.stderr


def test_production_passes_the_deploy_checklist() -> None:
    result = run_manage(production_env(), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr


# --- SECRET_KEY and the shared cache (issue 21 items 11 and 14) ------------------------------


def _import_settings(env: dict[str, str], code: str = "") -> subprocess.CompletedProcess[str]:
    """Import medimg.settings alone (no app loading) in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", f"import medimg.settings as s\n{code}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _development_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "SECRET_KEY_FILE", "MEDIMG_ENV"}
    }
    env.update(MEDIMG_VAR_DIR=str(tmp_path / "var"), MEDIMG_KEY_DIR=str(tmp_path / "keys"))
    env.update(overrides)
    return env


_PRINT_KEY_DIGEST = "import hashlib; print(hashlib.sha256(s.SECRET_KEY.encode()).hexdigest())"


def test_development_generates_its_secret_key_once_under_the_key_dir(tmp_path: Path) -> None:
    first = _import_settings(_development_env(tmp_path), _PRINT_KEY_DIGEST)
    again = _import_settings(_development_env(tmp_path), _PRINT_KEY_DIGEST)
    elsewhere = _import_settings(_development_env(tmp_path / "other"), _PRINT_KEY_DIGEST)

    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "keys" / "secret_key.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert len(key_file.read_text().strip()) == 64
    assert "DEVELOPMENT KEY GENERATED: SECRET_KEY" in first.stderr
    assert "DEVELOPMENT KEY GENERATED" not in again.stderr
    assert first.stdout == again.stdout  # The same key on every start, sessions survive.
    assert elsewhere.stdout != first.stdout  # Not a constant: each installation its own.


@pytest.mark.parametrize("mode", ["development", "test", "production"])
def test_it_refuses_the_published_development_secret_key_in_every_mode(
    tmp_path: Path, mode: str
) -> None:
    published = "django-insecure-medimg-development-only-never-in-production"
    env = (
        production_env(SECRET_KEY=published)
        if mode == "production"
        else _development_env(tmp_path, MEDIMG_ENV=mode, SECRET_KEY=published)
    )

    result = _import_settings(env)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "SECRET_KEY" in result.stderr
    assert not (tmp_path / "keys" / "secret_key.key").exists()


def test_production_refuses_to_generate_a_secret_key(tmp_path: Path) -> None:
    env = production_env(MEDIMG_KEY_DIR=str(tmp_path / "keys"))
    del env["SECRET_KEY"]

    result = _import_settings(env)

    assert result.returncode != 0 and "SECRET_KEY" in result.stderr
    assert not (tmp_path / "keys").exists()


def test_production_refuses_to_start_without_a_shared_cache() -> None:
    result = _import_settings(production_env(REDIS_URL=""))
    assert result.returncode != 0
    assert "REDIS_URL" in result.stderr


def test_it_writes_one_development_key_when_several_start_at_once(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from medimg.keys import dev_key_file

    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = set(pool.map(lambda _: dev_key_file("SECRET_KEY", tmp_path), range(16)))

    assert len(keys) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key.key"]  # no .part left behind


def test_retention_is_off_unless_set_and_refuses_a_bad_value(tmp_path: Path) -> None:
    show = "print(repr(s.MEDIMG_RETENTION_DAYS), s.CELERY_BEAT_SCHEDULE['erase-expired-scans'])"
    off = _import_settings(_development_env(tmp_path), show)
    assert off.returncode == 0, off.stderr
    assert off.stdout.startswith("None ") and "imaging.tasks.erase_expired_scans" in off.stdout
    on = _import_settings(_development_env(tmp_path, MEDIMG_RETENTION_DAYS="3650"), show)
    assert on.returncode == 0 and on.stdout.startswith("3650 "), on.stderr
    for bad in ("0", "ten years"):
        refused = _import_settings(_development_env(tmp_path, MEDIMG_RETENTION_DAYS=bad), show)
        assert refused.returncode != 0 and "MEDIMG_RETENTION_DAYS" in refused.stderr, bad
