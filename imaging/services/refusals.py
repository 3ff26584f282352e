"""A request refused before any work starts is audited, then raised by the caller.

raise audited_refusal(errors.scan_not_ready(), action=Action.X, scan=scan, actor=user,
                      request=request, details={...})
"""

from __future__ import annotations

from typing import Any

from audit.models import Action, Outcome
from audit.services import audit_record
from engine.errors import EngineError
from imaging.models import Scan


def audited_refusal(
    refusal: EngineError,
    *,
    action: Action,
    scan: Scan,
    actor: Any,
    request: Any,
    details: dict[str, Any],
) -> EngineError:
    """`refusal`, recorded first as `action` with outcome refused and its error code."""
    audit_record(
        action=action,
        actor=actor,
        target=scan,
        outcome=Outcome.REFUSED,
        request=request,
        details={**details, "error": refusal.code},
    )
    return refusal
