"""Content-Security-Policy and related headers on every response.

Django 5.2 has no built-in CSP, and the policy is one string, so a small middleware is
simpler than a dependency. Our pages carry no inline script, no inline style attribute and
no event-handler attribute (the page tests check), so the policy allows only files served
by this site. Restored images are shown from `blob:` URLs made by the viewer.

Two exceptions, by path prefix, for styles only (never scripts): Django admin writes a few
inline `style` attributes, and drf-spectacular's Swagger UI page (/api/docs/, the split view
that loads its start-up script as a file, with Swagger UI from drf-spectacular-sidecar's
static files) has a small inline <style> block.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

BASE_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' blob: data:",
    "font-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}

PATH_OVERRIDES: dict[str, dict[str, str]] = {
    "/admin/": {"style-src": "'self' 'unsafe-inline'"},
    "/api/docs/": {"style-src": "'self' 'unsafe-inline'"},
}

PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"


def policy_for(path: str) -> str:
    policy = dict(BASE_POLICY)
    for prefix, override in PATH_OVERRIDES.items():
        if path.startswith(prefix):
            policy.update(override)
    if getattr(settings, "SECURE_SSL_REDIRECT", False):
        policy["upgrade-insecure-requests"] = ""
    return "; ".join(f"{name} {value}".strip() for name, value in policy.items())


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", policy_for(request.path))
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        return response
