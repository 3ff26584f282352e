"""Shared fixtures: one persona per role, plus an outsider with no role at all.

Departments: the technician (tina) and the doctor (doris) both work in `department`
(Radiology), so they see each other's patients as every test before departments assumed. The
other-department personas (`other_technician` otto, `other_doctor` olga) work in
`other_department` (Cardiology) and must see none of those patients.

A patient a test creates straight through the ORM gets its departments the way
`patients.services.patient_create` gives them: its creator's departments, or `department`
when it has no creator (or the creator has none). A test that wants to set a patient's
departments itself is marked `@pytest.mark.own_departments`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import Role

# Every log line of the whole run is checked for JWTs, passwords, keys and patient names.
pytest_plugins = ["medimg.tests.log_hygiene"]

PASSWORD = "correct-horse-battery-staple-42"
CHROMIUM = Path("/usr/bin/chromium")


DEPARTMENT = ("radiology", "Radiology")
OTHER_DEPARTMENT = ("cardiology", "Cardiology")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers",
        "own_departments: patients created through the ORM get no department automatically",
    )
    config.addinivalue_line(
        "markers",
        "second_opinion: processing runs the OCR second opinion as production does (off in "
        "other tests: their synthetic images are not what it is measured on)",
    )


def _department(slug: str, name: str) -> Any:
    from accounts.models import Department

    return Department.objects.get_or_create(slug=slug, defaults={"name": name})[0]


def _make_user(
    django_user_model: Any, username: str, role: str, departments: tuple[Any, ...] = ()
) -> Any:
    user = django_user_model.objects.create_user(
        username=username,
        password=PASSWORD,
        role=role,
        is_staff=role == Role.ADMIN,
        is_superuser=role == Role.ADMIN,
    )
    if departments:
        user.departments.set(departments)
    return user


@pytest.fixture
def department(db: Any) -> Any:
    """The department the technician and the doctor share."""
    return _department(*DEPARTMENT)


@pytest.fixture
def other_department(db: Any) -> Any:
    return _department(*OTHER_DEPARTMENT)


@pytest.fixture(autouse=True)
def _patients_join_departments(request: pytest.FixtureRequest) -> Iterator[None]:
    """ORM-made patients belong where patient_create would put them (see the docstring)."""
    if request.node.get_closest_marker("own_departments") is not None:
        yield
        return
    from django.db.models.signals import post_save

    from patients.models import Patient

    def join(sender: Any, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
        if not created or raw:
            return
        creator = instance.created_by
        departments = list(creator.departments.all()) if creator is not None else []
        instance.departments.add(*(departments or [_department(*DEPARTMENT)]))

    post_save.connect(join, sender=Patient, dispatch_uid="tests-patients-join-departments")
    try:
        yield
    finally:
        post_save.disconnect(sender=Patient, dispatch_uid="tests-patients-join-departments")


@pytest.fixture
def password() -> str:
    return PASSWORD


@pytest.fixture
def technician(django_user_model: Any, department: Any) -> Any:
    return _make_user(django_user_model, "tina", Role.TECHNICIAN, (department,))


@pytest.fixture
def doctor(django_user_model: Any, department: Any) -> Any:
    return _make_user(django_user_model, "doris", Role.DOCTOR, (department,))


@pytest.fixture
def other_technician(django_user_model: Any, other_department: Any) -> Any:
    """A technician of another department: sees none of the technician's patients."""
    return _make_user(django_user_model, "otto", Role.TECHNICIAN, (other_department,))


@pytest.fixture
def other_doctor(django_user_model: Any, other_department: Any) -> Any:
    """A doctor of another department: sees none of the doctor's patients."""
    return _make_user(django_user_model, "olga", Role.DOCTOR, (other_department,))


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
def _second_opinion_only_where_asked(request: pytest.FixtureRequest, settings: Any) -> None:
    """IMAGING_SECOND_OPINION is "margins" by default (medimg/settings.py). Tests of other
    things process synthetic noise images with a classical detector, where an OCR pass would
    add seconds and findings nobody looks at; tests of it carry the second_opinion mark."""
    if request.node.get_closest_marker("second_opinion") is None:
        settings.IMAGING_SECOND_OPINION = "off"


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
def _fresh_rate_limits() -> None:
    """Each test starts with every rate-limit counter at zero (medimg.ratelimit): the whole
    run comes from one address, within the same minutes."""
    from medimg.ratelimit import rate_limits_reset

    rate_limits_reset()


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


# --- Live server and browser (browser tests, the console client) ------------------------------


@pytest.fixture
def serial_live_server(live_server: Any) -> Iterator[Any]:
    """pytest-django's live server, one request at a time on SQLite.

    The in-memory SQLite test database is one connection that the live server's threads
    share; two requests at once (parallel uploads, a thumbnail beside the notes) would
    interleave their transactions on it. PostgreSQL needs no such lock."""
    from django.db import connection

    if connection.vendor != "sqlite":
        yield live_server
        return
    httpd = live_server.thread.httpd
    app = httpd.get_app()
    lock = threading.Lock()

    def one_at_a_time(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with lock:
            result = app(environ, start_response)
            try:
                return list(result)
            finally:
                if hasattr(result, "close"):
                    result.close()

    httpd.set_app(one_at_a_time)
    try:
        yield live_server
    finally:
        httpd.set_app(app)


@pytest.fixture
def eager_tasks(settings: Any) -> Iterator[None]:
    """Celery tasks run in-process, even with REDIS_URL set; errors propagate."""
    from medimg.celery import app as celery_app

    settings.CELERY_TASK_ALWAYS_EAGER = True
    before = (celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates)
    celery_app.conf.task_always_eager = celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = before


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's headless Chromium through Playwright (`playwright install` cannot download
    browsers here). Skips when either is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"needs {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    # Playwright's sync API runs an event loop in this thread for as long as the browser
    # lives; the ORM calls the tests (and their database teardown) make are synchronous.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            yield browser
        finally:
            browser.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous
