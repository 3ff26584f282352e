"""Emergency (break-glass) access API, mounted at /api/emergency-access/ (medimg/urls.py):
the same rules as the page (pages/views/emergency.py), through patients.emergency.

Not under /api/patients/: `/api/patients/<id>/` would take "emergency-access" for a hospital id.
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsClinical
from medimg.api import error_responses
from patients import emergency


class GrantOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    patient_id = serializers.CharField(source="patient.pk", help_text="The hospital id.")
    patient_reference = serializers.CharField(source="patient.reference")
    reason = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()

    class Meta:
        ref_name = "EmergencyAccessGrant"


class EmergencyAccessApi(APIView):
    permission_classes = [IsClinical]

    class InputSerializer(serializers.Serializer):
        patient_id = serializers.CharField(max_length=64, help_text="Exact hospital id.")
        reason = serializers.CharField(
            max_length=emergency.REASON_MAX_LENGTH,
            help_text=f"Why, at least {emergency.REASON_MIN_LENGTH} characters. Read by the "
            "privacy officer and administrators: do not type the patient's name or id.",
        )
        confirm = serializers.BooleanField(
            default=False, help_text="True: the user has read the warning."
        )

        class Meta:
            ref_name = "EmergencyAccessRequest"

    @extend_schema(
        operation_id="emergency_access_list",
        summary="My active emergency accesses",
        description="Roles: technician, doctor. The caller's unexpired, unended grants.",
        responses={200: GrantOutputSerializer(many=True), **error_responses(401, 403)},
    )
    def get(self, request: Request) -> Response:
        grants = emergency.emergency_grants_active(user=request.user)
        return Response(GrantOutputSerializer(grants, many=True).data)

    @extend_schema(
        operation_id="emergency_access_create",
        summary="Open emergency access to a patient",
        description=(
            "Roles: technician, doctor. Exact hospital id, a reason and `confirm: true`. "
            "Grants access for BREAK_GLASS_HOURS; audited as break_glass_opened and mailed to "
            "the privacy officer. 400 reason_too_short or confirmation_required; 404 "
            "patient_not_found (no patient has the id; audited as break_glass_refused); 409 "
            "access_not_needed (the caller already sees the patient); 429 too_many_requests "
            "(BREAK_GLASS_REQUESTS_PER_HOUR per user)."
        ),
        request=InputSerializer,
        responses={201: GrantOutputSerializer, **error_responses(400, 401, 403, 404, 409, 429)},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        grant = emergency.emergency_access_open(
            user=request.user,
            patient_id=data["patient_id"],
            reason=data["reason"],
            confirmed=data["confirm"],
            request=request,
        )
        return Response(GrantOutputSerializer(grant).data, status=status.HTTP_201_CREATED)


class EmergencyAccessEndApi(APIView):
    permission_classes = [IsClinical]

    class InputSerializer(serializers.Serializer):
        patient_id = serializers.CharField(max_length=64)

        class Meta:
            ref_name = "EmergencyAccessEnd"

    class OutputSerializer(serializers.Serializer):
        ended = serializers.IntegerField(help_text="How many of the caller's grants ended.")

        class Meta:
            ref_name = "EmergencyAccessEnded"

    @extend_schema(
        operation_id="emergency_access_end",
        summary="End my emergency access to a patient now",
        description=(
            "Roles: technician, doctor. Ends the caller's active grants for the patient "
            "(audited as break_glass_ended); `ended` is 0 when there was none."
        ),
        request=InputSerializer,
        responses={200: OutputSerializer, **error_responses(400, 401, 403)},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        ended = emergency.emergency_access_end(
            user=request.user, patient_id=serializer.validated_data["patient_id"], request=request
        )
        return Response(self.OutputSerializer({"ended": ended}).data)


urlpatterns = [
    path("", EmergencyAccessApi.as_view(), name="api-emergency-access"),
    path("end/", EmergencyAccessEndApi.as_view(), name="api-emergency-access-end"),
]
