"""Values every page template needs that come from patient data (the ones that do not are in
medimg.context_processors)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import SimpleLazyObject

from patients.emergency import emergency_grants_active
from patients.models import BreakGlassGrant


def time_left(grant: BreakGlassGrant) -> str:
    """ "3 h 12 min": what is left of a grant, rounded down to the minute."""
    minutes = max(0, int((grant.expires_at - timezone.now()).total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def _banner(user: Any) -> list[BreakGlassGrant]:
    grants = emergency_grants_active(user=user)
    for grant in grants:
        grant.time_left = time_left(grant)  # type: ignore[attr-defined]
    return grants


def emergency_access(request: HttpRequest) -> dict[str, Any]:
    """The signed-in clinical user's active emergency grants, for the banner in base.html.

    Lazy: the query runs only when a template shows the banner."""
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_clinical", False):
        return {}
    return {"emergency_grants": SimpleLazyObject(lambda: _banner(user))}
