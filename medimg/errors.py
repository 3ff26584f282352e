"""The one DRF exception handler: every API error as JSON.

Every API error leaves as `{"error": {"code": ..., "message": ...}}` (plus `fields` for
validation errors). A refusal is an `engine.errors.EngineError` (its code, message and status);
DRF's own exceptions keep their status; anything else becomes a generic 500: no traceback
reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

from engine.errors import EngineError, ErrorCode

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _code_of(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    if isinstance(codes, str):
        return codes
    return exc.default_code


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    if isinstance(exc, EngineError):
        return Response(error_body(exc.code, exc.message), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    if isinstance(exc, exceptions.ValidationError):
        return Response(
            error_body(ErrorCode.INVALID, "The request is not valid.", fields=exc.detail),
            status=exc.status_code,
        )
    if isinstance(exc, exceptions.APIException):
        headers: dict[str, str] = {}
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            headers["WWW-Authenticate"] = auth_header
        wait = getattr(exc, "wait", None)
        if wait:
            headers["Retry-After"] = str(int(wait))
        detail = exc.detail
        message = str(detail.get("detail", detail)) if isinstance(detail, dict) else str(detail)
        return Response(error_body(_code_of(exc), message), status=exc.status_code, headers=headers)

    logger.exception("Unhandled API error", exc_info=exc)
    return Response(
        error_body(ErrorCode.SERVER_ERROR, "Something went wrong on our side. It has been logged."),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
