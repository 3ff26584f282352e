"""Shared OpenAPI parts: the error answer and the one map of error statuses every endpoint
documents, and the errors added to whole groups of operations after generation.

Every API error is `{"error": {"code", "message"}}` (medimg.errors). An endpoint lists the
statuses it can answer with:

    @extend_schema(responses={200: OutputSerializer, **error_responses(401, 403, 404)})

Two descriptions of that one body exist, because the published schema is kept byte for
byte (medimg/tests/test_redesign_nets.py): `ERROR` for most endpoints and `ERROR_ELIDED` for
the account endpoints and the answers `add_common_errors` adds. Making them one is a
deliberate schema change for later, not a refactoring.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse

ERROR = OpenApiResponse(description='`{"error": {"code", "message"}}`')
ERROR_ELIDED = OpenApiResponse(description='`{"error": {"code": ..., "message": ...}}`')


def error_responses(*statuses: int, error: OpenApiResponse = ERROR) -> dict[int, OpenApiResponse]:
    """The error answer under each of `statuses`, in the order given."""
    return dict.fromkeys(statuses, error)


# --- After generation -----------------------------------------------------------------------

_METHODS = {"get", "put", "patch", "post", "delete"}


def add_common_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> Any:
    """drf-spectacular postprocessing hook: the error answers the framework gives for whole
    groups of operations, which no view declares (schemathesis found them missing,
    medimg/tests/test_attacks_schema.py):
    - 401 on every operation that needs authentication (no or a bad token);
    - 404 on every paginated list (`?page=` past the end or not a number).
    """
    common = {"description": ERROR_ELIDED.description}
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            # `security: [{}]` or no security at all means anonymous callers are let in.
            security = operation.get("security", result.get("security", []))
            if security and {} not in security:
                responses.setdefault("401", common)
            names = {
                p.get("name") for p in operation.get("parameters", []) if p.get("in") == "query"
            }
            if "page" in names:
                responses.setdefault("404", common)
    return result
