"""GET /api/images/{id}/blurred/: the blurred teaching copy of one frame (PNG).

Roles: technician, doctor. See imaging.selectors.blurred for what it is built from."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.views import APIView

from accounts.permissions import IsClinical
from imaging.apis.common import PNG_RESPONSE, FirstRendererNegotiation, binary_response
from imaging.selectors.blurred import scan_blurred_png
from medimg.api import error_responses


class BlurredInputSerializer(serializers.Serializer):
    frame = serializers.IntegerField(
        required=False, default=0, min_value=0, help_text="Frame of a multi-frame image, 0-based."
    )
    download = serializers.BooleanField(
        required=False, default=False, help_text="true: served as an attachment to save."
    )

    class Meta:
        ref_name = "BlurredInput"


class ScanBlurredApi(APIView):
    permission_classes = [IsClinical]
    content_negotiation_class = FirstRendererNegotiation

    @extend_schema(
        operation_id="images_blurred",
        summary="The blurred teaching copy (PNG): regions painted over by a blur",
        description=(
            "Roles: technician, doctor. The redacted frame with each region replaced by a "
            "heavy blur of its surroundings (no original pixel of a region is read: "
            "irreversible and not restorable). `?download=true` serves it as an attachment. "
            "409 `scan_not_ready`, or `needs_review` until the technician confirms the review. "
            "Audited as scan_viewed (view blurred)."
        ),
        parameters=[BlurredInputSerializer],
        responses={(200, "image/png"): PNG_RESPONSE, **error_responses(400, 401, 403, 404, 409)},
    )
    def get(self, request: Request, scan_id: int) -> HttpResponse:
        params = BlurredInputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        frame, download = params.validated_data["frame"], params.validated_data["download"]
        scan, content = scan_blurred_png(
            user=request.user, scan_id=scan_id, frame=frame, download=download, request=request
        )
        response = binary_response(content, filename=f"scan-{scan.pk}-blurred-{frame + 1}.png")
        if download:
            response["Content-Disposition"] = (
                f'attachment; filename="scan-{scan.pk}-blurred-{frame + 1}.png"'
            )
        return response
