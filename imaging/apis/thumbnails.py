"""GET /api/images/<id>/thumbnail/: the redacted image, small, cached
(imaging.selectors.thumbnails)."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.views import APIView

from accounts.permissions import IsClinical
from imaging.apis.common import FirstRendererNegotiation
from imaging.selectors import thumbnails
from medimg.api import error_responses


class ScanThumbnailApi(APIView):
    permission_classes = [IsClinical]
    content_negotiation_class = FirstRendererNegotiation

    class InputSerializer(serializers.Serializer):
        size = serializers.ChoiceField(
            choices=thumbnails.SIZES,
            default=thumbnails.DEFAULT_SIZE,
            help_text="Longest side in pixels.",
        )

        class Meta:
            ref_name = "ScanThumbnailQuery"

    @extend_schema(
        operation_id="images_thumbnail",
        summary="A thumbnail of the redacted image (PNG)",
        description=(
            "Roles: technician, doctor. Frame 0 of the redacted image (regions filled), scaled "
            "to fit `size`. Cached server-side until the redacted image changes; the ETag names "
            "the version, and `If-None-Match` with it answers 304. 409 `scan_not_ready` before "
            "processing completes. Audited as scan_viewed."
        ),
        parameters=[InputSerializer],
        responses={
            (200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, description="A PNG."),
            304: OpenApiResponse(description="Not modified."),
            **error_responses(400, 401, 403, 404, 409),
        },
    )
    def get(self, request: Request, scan_id: int) -> HttpResponse:
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        thumb = thumbnails.scan_thumbnail(
            user=request.user,
            scan_id=scan_id,
            size=params.validated_data["size"],
            if_none_match=request.headers.get("If-None-Match"),
            request=request,
        )
        if not thumb.content:
            response = HttpResponse(status=304)
        else:
            response = HttpResponse(thumb.content, content_type="image/png")
            response["Content-Disposition"] = f'inline; filename="scan-{thumb.scan_id}-thumb.png"'
        response["ETag"] = f'"{thumb.etag}"'
        # The browser may keep it but must ask again (a 304 is cheap); no shared caches.
        response["Cache-Control"] = "private, no-cache"
        return response
