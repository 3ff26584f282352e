"""What the imaging APIs that answer with images share: the negotiation that leaves
`?format=` to the endpoint, the no-store binary response, the audited refusal of a restore or
decryption, and the OpenAPI response of a PNG."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, NoReturn

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from audit.models import Action
from imaging.services import restore

PNG_RESPONSE = OpenApiResponse(OpenApiTypes.BINARY, description="A PNG image.")


class FirstRendererNegotiation(BaseContentNegotiation):
    """Binary endpoints own `?format=` (restore's png/jpeg/dicom), so DRF's format-suffix
    negotiation must not read it; the image itself is returned as HttpResponse anyway and
    errors render as JSON."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser:
        return next(iter(parsers))

    def select_renderer(
        self,
        request: Request,
        renderers: Iterable[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
        first = next(iter(renderers))
        return first, first.media_type


def binary_response(
    rendered: restore.Rendered | bytes,
    *,
    content_type: str = "image/png",
    filename: str = "image.png",
) -> HttpResponse:
    if isinstance(rendered, restore.Rendered):
        content, content_type, filename = (
            rendered.content,
            rendered.content_type,
            rendered.filename,
        )
    else:
        content = rendered
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'inline; filename="{filename}"'
    # Restored images carry identity: never in a shared or browser cache.
    response["Cache-Control"] = "no-store, private"
    return response


class AuditedRefusal(APIView):
    """A refused restore or decryption is audited under its own action, not only as a 403."""

    refused_action: ClassVar[Action]
    target_type: ClassVar[str]
    target_kwarg: ClassVar[str]

    def permission_denied(
        self, request: Request, message: str | None = None, code: str | None = None
    ) -> NoReturn:
        restore.access_refused_record(
            action=self.refused_action,
            actor=request.user,
            target_type=self.target_type,
            target_id=self.kwargs.get(self.target_kwarg, ""),
            request=request,
        )
        super().permission_denied(request, message=message, code=code)
