"""OpenAPI post-processing: the error answers every operation can give, listed once here.

drf-spectacular documents what each view declares; two answers come from the framework for
whole groups of operations and were missing from many (schemathesis found them,
medimg/tests/test_attacks_schema.py):
- 401 on every operation that needs authentication (no or a bad token);
- 404 on every paginated list (`?page=` past the end or not a number).
"""

from __future__ import annotations

from typing import Any

_ERROR = {"description": '`{"error": {"code": ..., "message": ...}}`'}
_METHODS = {"get", "put", "patch", "post", "delete"}


def add_common_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> Any:
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            # `security: [{}]` or no security at all means anonymous callers are let in.
            security = operation.get("security", result.get("security", []))
            if security and {} not in security:
                responses.setdefault("401", _ERROR)
            names = {
                p.get("name") for p in operation.get("parameters", []) if p.get("in") == "query"
            }
            if "page" in names:
                responses.setdefault("404", _ERROR)
    return result
