"""Review API: add a missed region, remove a false one, confirm the review.

The routes are shared with reads in imaging.apis.scans (GET regions, GET a decrypted region), so
these views extend those and choose permissions per method:

    GET    /api/images/{id}/regions/   technician, doctor   region metadata
    POST   /api/images/{id}/regions/   technician, doctor   add a region by hand
    GET    /api/regions/{id}/          doctor               the decrypted region (PNG)
    DELETE /api/regions/{id}/          technician           ask for a false region's removal
    DELETE /api/regions/{id}/removal/  technician           undo that request (before confirm)
    POST   /api/regions/{id}/removal/  doctor               approve or reject that removal
    POST   /api/images/{id}/review/    technician           confirm the regions
    GET    /api/images/{id}/leftovers/ technician, doctor   leftover detections to resolve
    POST   /api/leftovers/{id}/dismissal/ technician        dismiss one, with a typed reason

`?group=true` on the region removal calls acts on every region of the region's group (the
same box on each frame of a cine: one row on the page).

A removal shows the region's pixels to everyone who sees the redacted image, so a technician
(who may not decrypt) can only ask for it; the region stays filled until a doctor approves.
"""

from __future__ import annotations

from typing import ClassVar, NoReturn

from drf_spectacular.utils import OpenApiParameter, extend_schema
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


def _group_param(request: Request) -> bool:
    return str(request.query_params.get("group", "")).lower() in ("1", "true", "yes")


GROUP_PARAMETER = OpenApiParameter(
    "group",
    bool,
    description="true: every region of this region's group (its box on every frame).",
)


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
        frames = serializers.ListField(
            child=serializers.IntegerField(min_value=0),
            required=False,
            allow_empty=False,
            max_length=10_000,
            help_text="The same box on each of these frames (one region each, one rebuild); "
            "overrides `frame`.",
        )
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
            frames=data.get("frames"),
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
        parameters=[GROUP_PARAMETER],
        request=None,
        responses={
            202: RegionOutputSerializer,
            **error_responses(401, 403, 404, 409, 500),
        },
    )
    def delete(self, request: Request, region_id: int) -> Response:
        region = selectors.region_get_for_user(user=request.user, region_id=region_id)
        region = review.region_removal_request(
            region=region, actor=request.user, request=request, group=_group_param(request)
        )
        return Response(RegionOutputSerializer(region).data, status=status.HTTP_202_ACCEPTED)


class RegionRemovalApi(APIView):
    permissions_by_method: ClassVar[dict[str, list[type[BasePermission]]]] = {
        "POST": [IsDoctor],
        "DELETE": [IsTechnician],
    }

    def get_permissions(self) -> list[BasePermission]:
        return _permissions(self, self.permissions_by_method)

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
        parameters=[GROUP_PARAMETER],
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
        group = _group_param(request)
        if params.validated_data["approve"]:
            review.region_removal_approve(
                region=region, actor=request.user, request=request, group=group
            )
            return Response(status=status.HTTP_204_NO_CONTENT)
        region = review.region_removal_reject(
            region=region, actor=request.user, request=request, group=group
        )
        return Response(RegionOutputSerializer(region).data)

    @extend_schema(
        operation_id="regions_removal_withdraw",
        summary="Undo a removal request before the review is confirmed",
        description=(
            "Roles: technician only. The request is dropped and the region stays (it was "
            "never unfilled). 409 `review_confirmed` once the technician has confirmed the "
            "review (the request is then the doctor's to decide), `no_removal_pending`. "
            "Audited as regions_edited (change removal_withdrawn)."
        ),
        parameters=[GROUP_PARAMETER],
        request=None,
        responses={200: RegionOutputSerializer, **error_responses(401, 403, 404, 409)},
    )
    def delete(self, request: Request, region_id: int) -> Response:
        region = selectors.region_get_for_user(user=request.user, region_id=region_id)
        region = review.region_removal_withdraw(
            region=region, actor=request.user, request=request, group=_group_param(request)
        )
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


class LeftoverOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    frame = serializers.IntegerField()
    # A field named like the Field attribute `label` (the stubs type that attribute).
    label = serializers.CharField()  # type: ignore[assignment]
    confidence = serializers.FloatField()
    box = serializers.ListField(child=serializers.IntegerField())
    state = serializers.ChoiceField(
        choices=["open", "covered", "dismissed"],
        help_text="open: to resolve; covered: a region covers it; dismissed: with a reason.",
    )
    dismiss_reason = serializers.CharField()
    dismissed_by = serializers.CharField(allow_null=True)
    dismissed_at = serializers.DateTimeField(allow_null=True)

    class Meta:
        ref_name = "LeftoverDetection"


def leftover_rows(scan: object, leftovers: list) -> list[dict]:
    regions = list(scan.regions.all())  # type: ignore[attr-defined]
    rows = []
    for x in leftovers:
        if x.dismissed:
            state = "dismissed"
        elif review.leftover_covered(x, regions):
            state = "covered"
        else:
            state = "open"
        rows.append(
            {
                "id": x.pk,
                "frame": x.frame,
                "label": x.label,
                "confidence": x.confidence,
                "box": list(x.box),
                "state": state,
                "dismiss_reason": x.dismiss_reason,
                "dismissed_by": x.dismissed_by.username if x.dismissed_by else None,
                "dismissed_at": x.dismissed_at,
            }
        )
    return rows


class ScanLeftoversApi(APIView):
    permission_classes = [IsClinical]

    @extend_schema(
        operation_id="images_leftovers_list",
        summary="Leftover detections of the verification pass",
        description=(
            "Roles: technician, doctor. Text the detector still found after redaction, with "
            "its box and whether it is resolved (a region covers it, or it was dismissed with "
            "a reason). The review cannot be confirmed while one is open."
        ),
        responses={200: LeftoverOutputSerializer(many=True), **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, scan_id: int) -> Response:
        scan = selectors.scan_status_for_user(user=request.user, scan_id=scan_id)
        rows = leftover_rows(scan, selectors.leftover_list_for_scan(scan=scan))
        return Response(LeftoverOutputSerializer(rows, many=True).data)


class LeftoverDismissalApi(APIView):
    permission_classes = [IsTechnician]

    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(
            max_length=500,
            allow_blank=True,
            help_text="Why this is not identifying text, e.g. 'ruler markings'.",
        )

        class Meta:
            ref_name = "LeftoverDismissal"

    @extend_schema(
        operation_id="leftovers_dismiss",
        summary="Dismiss a leftover detection with a typed reason",
        description=(
            "Roles: technician only. 400 `reason_required` under "
            f"{review.DISMISS_REASON_MIN} characters; 409 `leftover_resolved` when already "
            "covered or dismissed, `scan_not_ready`. Audited as regions_edited (change "
            "leftover_dismissed, with the reason). `?group=true`: every open detection with "
            "its label and box (its text on every frame)."
        ),
        parameters=[GROUP_PARAMETER],
        request=InputSerializer,
        responses={200: LeftoverOutputSerializer, **error_responses(400, 401, 403, 404, 409)},
    )
    def post(self, request: Request, leftover_id: int) -> Response:
        params = self.InputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        leftover = selectors.leftover_get_for_user(user=request.user, leftover_id=leftover_id)
        leftover = review.leftover_dismiss(
            leftover=leftover,
            reason=params.validated_data["reason"],
            actor=request.user,
            request=request,
            group=_group_param(request),
        )
        row = leftover_rows(leftover.scan, [leftover])[0]
        return Response(LeftoverOutputSerializer(row).data)
