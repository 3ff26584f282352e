"""POST /api/images/<id>/move/: an image uploaded under the wrong patient goes to the right one
(imaging.services.reassign)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsTechnician
from imaging.services.reassign import scan_move
from medimg.api import error_responses


class ScanMoveApi(APIView):
    permission_classes = [IsTechnician]

    class InputSerializer(serializers.Serializer):
        patient = serializers.CharField(
            max_length=64, help_text="The hospital id of the patient the image belongs to."
        )

        class Meta:
            ref_name = "ScanMove"

    class OutputSerializer(serializers.Serializer):
        scans = serializers.ListField(child=serializers.IntegerField(), source="scan_ids")
        from_patient = serializers.CharField(source="from_patient.pk")
        to_patient = serializers.CharField(source="to_patient.pk")

        class Meta:
            ref_name = "ScanMoveResult"

    @extend_schema(
        operation_id="images_move",
        summary="Move an image to another patient",
        description=(
            "Roles: technician only. Both patients must be visible to the technician (an "
            "image or patient they cannot see is a 404). An image of a DICOM study moves with "
            "the rest of that study on the same patient; `scans` lists every image moved. "
            "400 `invalid_patient_id` when the target is empty or is the image's own patient. "
            "Audited as patient_updated on both records."
        ),
        request=InputSerializer,
        responses={200: OutputSerializer, **error_responses(400, 401, 403, 404)},
    )
    def post(self, request: Request, scan_id: int) -> Response:
        params = self.InputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        moved = scan_move(
            scan_id=scan_id,
            to_patient_id=params.validated_data["patient"],
            actor=request.user,
            request=request,
        )
        return Response(self.OutputSerializer(moved).data)
