"""Every refused request (401 or 403), API or page, lands in the audit log."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from audit.models import Action, Outcome
from audit.services import audit_record


class RefusedRequestAuditMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code in (401, 403):
            # DRF copies the user it authenticated (JWT too) onto the Django request.
            user = getattr(request, "user", None)
            audit_record(
                action=Action.REQUEST_REFUSED,
                outcome=Outcome.REFUSED,
                actor=user,
                request=request,
                details={
                    "method": request.method,
                    "path": request.path[:300],
                    "status": response.status_code,
                },
            )
        return response
