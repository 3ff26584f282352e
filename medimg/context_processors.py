"""Values every page template needs."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def session_idle(request: HttpRequest) -> dict[str, Any]:
    """The inactivity timeout, for the sign-out warning (static/js/session.js)."""
    return {"session_idle_seconds": settings.SESSION_COOKIE_AGE}
