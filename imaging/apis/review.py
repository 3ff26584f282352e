"""Review API: add a missed region, remove a false one, confirm the review.

The routes are shared with reads in imaging.apis.scans (GET regions, GET a decrypted region), so
these views extend those and choose permissions per method:

    GET    /api/images/{id}/regions/   technician, doctor   region metadata
    POST   /api/images/{id}/regions/   technician, doctor   add a region by hand
    GET    /api/regions/{id}/          doctor               the decrypted region (PNG)
    DELETE /api/regions/{id}/          technician           ask for a false region's removal
    POST   /api/regions/{id}/removal/  doctor               approve or reject that removal
    POST   /api/images/{id}/review/    technician           confirm the regions

A removal shows the region's pixels to everyone who sees the redacted image, so a technician
(who may not decrypt) can only ask for it; the region stays filled until a doctor approves.
"""

from __future__ import annotations

from typing import ClassVar, NoReturn

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsClinical, IsDoctor, IsTechnician
from engine.detection.groups import region_groups
from imaging.apis.scans import RegionDecryptApi, RegionOutputSerializer, ScanRegionListApi
from imaging.selectors import scans as selectors
from imaging.services import review
from medimg.api import error_responses


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
        # A field named like the Field attribute `label` (the stubs type that attribute).
        label = serializers.CharField(default=review.MANUAL_LABEL, max_length=32)  # type: ignore[assignment]

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
            **error_responses(400, 401, 403, 404, 409, 500),
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
    ) -> NoReturn:
        # Only a refused GET is a refused decryption; a refused DELETE is a plain 403
        # (the refused-request middleware still logs it).
        if request.method == "GET":
            super().permission_denied(request, message=message, code=code)
        APIView.permission_denied(self, request, message=message, code=code)

    @extend_schema(
        operation_id="regions_remove",
        summary="Ask for a false region to be removed (a doctor decides)",
        description=(
            "Roles: technician only. Nothing is shown yet: the region stays filled in the "
            "redacted and grid images and is marked `removal_pending` until a doctor approves "
            "(POST /api/regions/{id}/removal/), so its pixels are never shown to a role that "
            "may not decrypt. 202 with the region; 409 `scan_not_ready` or "
            "`removal_already_requested`; 500 `review_failed` when the region fails its "
            "integrity check. Audited as region_removal_requested (potential_disclosure)."
        ),
        request=None,
        responses={
            202: RegionOutputSerializer,
            **error_responses(401, 403, 404, 409, 500),
        },
    )
    def delete(self, request: Request, region_id: int) -> Response:
        region = selectors.region_get_for_user(user=request.user, region_id=region_id)
        region = review.region_removal_request(region=region, actor=request.user, request=request)
        return Response(RegionOutputSerializer(region).data, status=status.HTTP_202_ACCEPTED)


class RegionRemovalApi(APIView):
    permission_classes = [IsDoctor]

    class InputSerializer(serializers.Serializer):
        approve = serializers.BooleanField(
            help_text="true: delete the region (its pixels show again in the redacted image "
            "wherever no other region covers them); false: keep it."
        )

        class Meta:
            ref_name = "RegionRemovalDecision"

    @extend_schema(
        operation_id="regions_removal_decide",
        summary="Approve or reject a technician's request to remove a region",
        description=(
            "Roles: doctor only. Approve: the region is deleted, the redacted and grid images "
            "are rebuilt from the original (restore stays exact) and a confirmed review is "
            "re-opened; 204. Reject: the request is dropped and the region stays; 200 with "
            "the region. 409 `no_removal_pending` or `scan_not_ready`; 500 `review_failed` "
            "when the stored data fails its integrity check. Audited as "
            "region_removal_approved (potential_disclosure) or region_removal_rejected."
        ),
        request=InputSerializer,
        responses={
            200: RegionOutputSerializer,
            204: None,
            **error_responses(400, 401, 403, 404, 409, 500),
        },
    )
    def post(self, request: Request, region_id: int) -> Response:
        params = self.InputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        region = selectors.region_get_for_user(user=request.user, region_id=region_id)
        if params.validated_data["approve"]:
            review.region_removal_approve(region=region, actor=request.user, request=request)
            return Response(status=status.HTTP_204_NO_CONTENT)
        region = review.region_removal_reject(region=region, actor=request.user, request=request)
        return Response(RegionOutputSerializer(region).data)


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
        responses={200: OutputSerializer, **error_responses(401, 403, 404, 409)},
    )
    def post(self, request: Request, scan_id: int) -> Response:
        scan = selectors.scan_status_for_user(user=request.user, scan_id=scan_id)
        scan = review.scan_confirm_review(scan=scan, actor=request.user, request=request)
        return Response(self.OutputSerializer(scan).data)


class ScanRegionGroupsApi(APIView):
    """The regions as the pages list them: identical boxes across frames are one row."""

    permission_classes = [IsClinical]

    class OutputSerializer(serializers.Serializer):
        number = serializers.IntegerField(help_text="The number drawn on the grid image.")
        # A field named like the Field attribute `label` (the stubs type that attribute).
        label = serializers.CharField(help_text="Detector class, e.g. phi_text.")  # type: ignore[assignment]
        box = serializers.ListField(
            child=serializers.IntegerField(), help_text="[x1, y1, x2, y2], x2/y2 exclusive."
        )
        confidence = serializers.FloatField(help_text="The highest of the group's regions.")
        frames = serializers.ListField(
            child=serializers.IntegerField(), help_text="Zero-based frames the box is on."
        )
        frames_label = serializers.CharField(help_text='Frames counted from 1, e.g. "1-100".')
        regions = serializers.ListField(
            child=serializers.IntegerField(), help_text="Ids of the group's regions."
        )

        class Meta:
            ref_name = "ScanRegionGroup"

    @extend_schema(
        operation_id="images_region_groups_list",
        summary="Regions grouped across frames (metadata only)",
        description=(
            "Roles: technician, doctor. One row per label and box, with the frames it is on: a "
            "cine's overlay text is sealed frame by frame but listed once (frames 1-100)."
        ),
        responses={200: OutputSerializer(many=True), **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, scan_id: int) -> Response:
        scan = selectors.scan_status_for_user(user=request.user, scan_id=scan_id)
        groups = region_groups(list(selectors.region_list_for_scan(scan=scan)))
        rows = [
            {
                "number": g.number,
                "label": g.label,
                "box": list(g.box),
                "confidence": g.confidence,
                "frames": g.frames,
                "frames_label": g.frames_label,
                "regions": [r.id for r in g.regions],
            }
            for g in groups
        ]
        return Response(self.OutputSerializer(rows, many=True).data)
