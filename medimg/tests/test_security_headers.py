"""Content-Security-Policy and friends on every response; templates that a strict CSP allows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

TEMPLATES = Path(settings.BASE_DIR) / "templates"


def _policy(response: Any) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return {
        part.split(" ", 1)[0]: (part.split(" ", 1) + [""])[1]
        for part in (p.strip() for p in header.split(";"))
        if part
    }


@pytest.mark.django_db
def test_it_sends_a_strict_policy_with_every_page(client: Client, doctor: Any) -> None:
    client.force_login(doctor)
    for path in ("/login/", "/", "/api/auth/me/"):
        response = client.get(path)
        policy = _policy(response)
        assert policy["script-src"] == "'self'", path
        assert policy["style-src"] == "'self'", path
        assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
        assert "blob:" in policy["img-src"]  # the viewer shows restored images from blob: URLs
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["X-Frame-Options"] == "DENY"
        assert "camera=()" in response["Permissions-Policy"]


@pytest.mark.django_db
def test_it_relaxes_only_styles_for_django_admin(client: Client, admin: Any) -> None:
    client.force_login(admin)
    policy = _policy(client.get("/admin/login/"))
    assert policy["script-src"] == "'self'"
    assert "'unsafe-inline'" in policy["style-src"]


@pytest.mark.parametrize(
    "template", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: str(p.relative_to(TEMPLATES))
)
def test_templates_have_nothing_a_strict_policy_blocks(template: Path) -> None:
    source = template.read_text()
    for attributes in re.findall(r"<script\b([^>]*)>", source):
        assert "src=" in attributes, f"inline script in {template}"
    assert not re.search(r"<style\b", source), f"<style> element in {template}"
    assert not re.search(r"\sstyle\s*=", source), f"style attribute in {template}"
    assert not re.search(r"\son[a-z]+\s*=", source), f"event handler attribute in {template}"
    assert "javascript:" not in source
