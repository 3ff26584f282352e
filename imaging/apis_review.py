"""Review API: add a missed region, remove a false one, confirm the review.

The routes are shared with reads in imaging.apis (GET regions, GET a decrypted region), so
these views extend those and choose permissions per method:

    GET    /api/images/{id}/regions/   technician, doctor   region metadata
    POST   /api/images/{id}/regions/   technician, doctor   add a region by hand
    GET    /api/regions/{id}/          doctor               the decrypted region (PNG)
    DELETE /api/regions/{id}/          technician           remove a false region
    POST   /api/images/{id}/review/    technician           confirm the regions
"""

from __future__ import annotations

from typing import ClassVar

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsClinical, IsDoctor, IsTechnician
from imaging import review, selectors
from imaging.apis import _ERROR, RegionDecryptApi, RegionOutputSerializer, ScanRegionListApi


def _permissions(view: APIView, table: dict[str, list[type[BasePermission]]]) -> list:
    return [permission() for permission in table.get(view.request.method or "", [IsClinical])]


class ScanRegionsApi(ScanRegionListApi):
    permissions_by_method: ClassVar[dict[str, list[type[BasePermission]]]] = {
        "GET": [IsClinical],
        "POST": [IsClinical],
    }

    def get_permissions(self) -> list[BasePermission]:
        return _permissions(self, self.permissions_by_method)

    class InputSerializer(serializers.Serializer):
        x1 = serializers.IntegerField(min_value=0)
        y1 = serializers.IntegerField(min_value=0)
        x2 = serializers.IntegerField(min_value=1)
        y2 = serializers.IntegerField(min_value=1)
        frame = serializers.IntegerField(min_value=0, default=0)
        label = serializers.CharField(default=review.MANUAL_LABEL, max_length=32)

        class Meta:
            ref_name = "RegionAdd"

    @extend_schema(
        operation_id="images_regions_add",
        summary="Add a region the detector missed",
        description=(
            "Roles: technician, doctor. The box [x1, y1, x2, y2) in original pixels (x2/y2 "
            "exclusive) on `frame` is cropped from the ORIGINAL, encrypted as a new region "
            "(source manual, confidence 1) and filled in the redacted image; the grid image is "
            "redrawn. 400 `box_out_of_bounds`, `invalid_frame` or `invalid_label`; 409 "
            "`scan_not_ready`; 500 `review_failed` when the stored data fails its integrity "
            "check. Re-opens a confirmed review. Audited as regions_edited."
        ),
        request=InputSerializer,
        responses={
            201: RegionOutputSerializer,
            400: _ERROR,
            401: _ERROR,
            403: _ERROR,
            404: _ERROR,
            409: _ERROR,
            500: _ERROR,
        },
    )
    def post(self, request: Request, scan_id: int) -> Response:
        scan = selectors.scan_status_for_user(user=request.user, scan_id=scan_id)
        params = self.InputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        region = review.region_add(
            scan=scan,
            box=(data["x1"], data["y1"], data["x2"], data["y2"]),
            frame=data["frame"],
            label=data["label"],
            actor=request.user,
            request=request,
        )
        return Response(RegionOutputSerializer(region).data, status=status.HTTP_201_CREATED)


class RegionApi(RegionDecryptApi):
    permissions_by_method: ClassVar[dict[str, list[type[BasePermission]]]] = {
        "GET": [IsDoctor],
        "DELETE": [IsTechnician],
    }

    def get_permissions(self) -> list[BasePermission]:
        return _permissions(self, self.permissions_by_method)

    def permission_denied(
        self, request: Request, message: str | None = None, code: str | None = None
    ) -> None:
        # Only a refused GET is a refused decryption; a refused DELETE is a plain 403
        # (the refused-request middleware still logs it).
        if request.method == "GET":
            super().permission_denied(request, message=message, code=code)
        APIView.permission_denied(self, request, message=message, code=code)

    @extend_schema(
        operation_id="regions_remove",
        summary="Remove a false region",
        description=(
            "Roles: technician only. The region is deleted and its original pixels show "
            "again in the redacted image wherever no other region covers them; the grid "
            "image is redrawn. 409 `scan_not_ready`; 500 `review_failed` when the stored "
            "data fails its integrity check. Re-opens a confirmed review. Audited as "
            "regions_edited."
        ),
        request=None,
        responses={204: None, 401: _ERROR, 403: _ERROR, 404: _ERROR, 409: _ERROR, 500: _ERROR},
    )
    def delete(self, request: Request, region_id: int) -> Response:
        region = selectors.region_get_for_user(user=request.user, region_id=region_id)
        review.region_remove(region=region, actor=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ScanReviewApi(APIView):
    permission_classes = [IsTechnician]

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        reviewed_at = serializers.DateTimeField()
        reviewed_by = serializers.CharField(source="reviewed_by.username")
        region_count = serializers.SerializerMethodField()

        class Meta:
            ref_name = "ScanReview"

        def get_region_count(self, scan: object) -> int:
            return scan.regions.count()  # type: ignore[attr-defined]

    @extend_schema(
        operation_id="images_review_confirm",
        summary="Confirm the reviewed regions",
        description=(
            "Roles: technician only. Records who confirmed the image's regions and when; an "
            "edit afterwards re-opens the review. 409 `scan_not_ready`. Audited as "
            "regions_edited (change confirmed)."
        ),
        request=None,
        responses={200: OutputSerializer, 401: _ERROR, 403: _ERROR, 404: _ERROR, 409: _ERROR},
    )
    def post(self, request: Request, scan_id: int) -> Response:
        scan = selectors.scan_status_for_user(user=request.user, scan_id=scan_id)
        scan = review.scan_confirm_review(scan=scan, actor=request.user, request=request)
        return Response(self.OutputSerializer(scan).data)
