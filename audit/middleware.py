"""Every refused request (401 or 403), API or page, lands in the audit log.

Anonymous refusals are rate-limited per client address: anyone can send them, and each one
would otherwise append a row (with the sender's user agent) to a log that is never pruned.
The first MEDIMG_AUDIT_ANONYMOUS_REFUSALS_PER_MINUTE a minute are audited; the rest are only
counted (medimg.ratelimit): the first refusal audited from that address in the following
minute says how many were left out (`details.unaudited_before`), and the server log has one
warning when the limit is first passed. Refusals of signed-in users are always audited.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from audit.models import Action, Outcome
from audit.services import audit_record, client_ip
from medimg.ratelimit import rate_limit_count, rate_limit_hit

logger = logging.getLogger(__name__)

_SCOPE = "refused-anonymous"
_WINDOW = 60


def _anonymous_allowance(request: HttpRequest) -> tuple[bool, dict[str, Any]]:
    """Whether this anonymous refusal is audited, and what its row adds about those left out."""
    limit = settings.MEDIMG_AUDIT_ANONYMOUS_REFUSALS_PER_MINUTE
    ident = client_ip(request) or "unknown"
    count = rate_limit_hit(_SCOPE, ident, window_seconds=_WINDOW)
    if count > limit:
        if count == limit + 1:
            logger.warning(
                "More than %d refused anonymous requests a minute from %s: the rest of this "
                "minute's are counted, not audited.",
                limit,
                ident,
            )
        return False, {}
    extra: dict[str, Any] = {}
    if count == 1:
        before = rate_limit_count(_SCOPE, ident, window_seconds=_WINDOW, windows_ago=1)
        if before > limit:
            extra["unaudited_before"] = before - limit
    return True, extra


class RefusedRequestAuditMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code in (401, 403):
            # DRF copies the user it authenticated (JWT too) onto the Django request.
            user = getattr(request, "user", None)
            extra: dict[str, Any] = {}
            if not getattr(user, "is_authenticated", False):
                try:
                    audited, extra = _anonymous_allowance(request)
                except Exception:
                    # The cache is down: audit it anyway rather than lose the row.
                    logger.exception("refusal rate limit unavailable")
                    audited = True
                if not audited:
                    return response
            audit_record(
                action=Action.REQUEST_REFUSED,
                outcome=Outcome.REFUSED,
                actor=user,
                request=request,
                details={
                    "method": request.method,
                    "path": request.path[:300],
                    "status": response.status_code,
                    **extra,
                },
            )
        return response
