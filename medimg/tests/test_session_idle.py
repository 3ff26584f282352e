"""Inactivity sign-out: the server ends idle sessions; pages know when, to warn first."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

pytestmark = pytest.mark.django_db


def test_the_session_age_is_the_idle_setting_renewed_by_every_request() -> None:
    assert settings.SESSION_COOKIE_AGE == settings.MEDIMG_SESSION_IDLE_MINUTES * 60
    assert settings.SESSION_SAVE_EVERY_REQUEST


def test_pages_carry_the_timeout_and_the_warning(
    client: Client, doctor: Any, settings: Any
) -> None:
    settings.SESSION_COOKIE_AGE = 600
    client.force_login(doctor)
    html = client.get("/").content.decode()
    assert 'data-session-idle="600"' in html
    assert "data-idle-dialog" in html and "Stay signed in" in html
    assert 'data-keepalive-url="/api/auth/me/"' in html
    assert "data-idle-dialog" not in Client().get("/login/").content.decode()


def test_a_request_renews_the_session_and_an_idle_one_ends(client: Client, doctor: Any) -> None:
    client.force_login(doctor)
    key = client.session.session_key
    Session.objects.filter(pk=key).update(expire_date=timezone.now() + timedelta(seconds=30))
    assert client.get("/").status_code == 200
    renewed = Session.objects.get(pk=key).expire_date
    assert renewed > timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE - 60)

    Session.objects.filter(pk=key).update(expire_date=timezone.now() - timedelta(seconds=1))
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_the_login_page_says_why_after_an_idle_sign_out(client: Client) -> None:
    html = client.get("/login/?idle=1").content.decode()
    assert "You were signed out after 15 minutes without activity" in html
