"""No error page shows a traceback, a source path, a setting or the exception's text, with
DEBUG off as in production: 400 (bad Host, malformed JSON), 403, 404, 405 and 500 (an
unexpected exception in an API and in a page)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from accounts.apis import MeApi
from pages.views.home import HomeView

pytestmark = pytest.mark.django_db

MARKER = "secret-internal-detail-0xC0FFEE"
LEAKS = ("Traceback", 'File "', ".py", "/work/", "site-packages", MARKER, "SECRET_KEY", "DEBUG")


def _assert_clean(response: Any) -> None:
    text = response.content.decode("utf-8", "replace")
    found = [leak for leak in LEAKS if leak in text]
    assert not found, f"{response.status_code} page shows {found}: {text[:300]}"


@pytest.fixture
def production_errors(settings: Any) -> Client:
    settings.DEBUG = False
    settings.DEBUG_PROPAGATE_EXCEPTIONS = False
    return Client(raise_request_exception=False)


def test_it_shows_no_traceback_on_a_404(production_errors: Client) -> None:
    for path in ("/no-such-page/", "/api/no-such-endpoint/", "/static/../settings.py"):
        response = production_errors.get(path)
        assert response.status_code == 404
        _assert_clean(response)


def test_it_shows_no_traceback_on_a_400(production_errors: Client, technician: Any) -> None:
    bad_host = production_errors.get("/login/", HTTP_HOST="evil.example")
    production_errors.force_login(technician)
    bad_json = production_errors.post(
        "/api/patients/", data="{not json", content_type="application/json"
    )

    assert bad_host.status_code == 400
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["code"] == "parse_error"
    _assert_clean(bad_host)
    _assert_clean(bad_json)


def test_it_shows_no_traceback_on_403_and_405(production_errors: Client, doctor: Any) -> None:
    production_errors.force_login(doctor)
    forbidden = production_errors.get("/api/audit/events/")
    not_allowed = production_errors.delete("/api/auth/me/")

    assert forbidden.status_code == 403
    assert not_allowed.status_code == 405
    _assert_clean(forbidden)
    _assert_clean(not_allowed)


def test_it_shows_no_traceback_on_a_500_in_an_api_or_a_page(
    production_errors: Client, doctor: Any, monkeypatch: Any
) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(MARKER)

    monkeypatch.setattr(MeApi, "get", explode)
    monkeypatch.setattr(HomeView, "get", explode)
    production_errors.force_login(doctor)

    api = production_errors.get("/api/auth/me/")
    page = production_errors.get("/")

    assert api.status_code == 500
    assert api.json()["error"]["code"] == "server_error"
    assert page.status_code == 500
    _assert_clean(api)
    _assert_clean(page)
