"""The second-factor page (/account/2fa/) is linked from every signed-in page's header."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("persona", ["technician", "doctor", "outsider"])
def test_every_signed_in_page_links_the_second_factor_page(
    client: Client, persona: str, request: pytest.FixtureRequest
) -> None:
    user: Any = request.getfixturevalue(persona)
    client.force_login(user)
    html = client.get("/").content.decode()
    assert 'href="/account/2fa/"' in html and "Two-step sign-in" in html
    page = client.get("/account/2fa/")
    assert page.status_code == 200
    assert 'href="/account/2fa/" aria-current="page"' in page.content.decode()


def test_the_login_page_has_no_such_link(client: Client) -> None:
    assert "data-otp-link" not in client.get("/login/").content.decode()
