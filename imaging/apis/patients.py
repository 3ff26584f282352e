"""POST and GET /api/patients/: create a patient (optionally with first images) and list them.

It lives in imaging, not patients, because a create with `images` is imaging's service
(`patient_create_with_images`: the patient and its scans in one transaction) and patients may
not import imaging. The rest of the patient API is patients/apis.py; the route is in
imaging/urls.py.
"""

from __future__ import annotations

from typing import Any, ClassVar

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings

from accounts.permissions import IsClinical, IsTechnician
from imaging.services.upload import patient_create_with_images
from medimg.api import error_responses
from patients import selectors, services
from patients.apis import PatientDetailOutputSerializer, PermissionsByMethod, paginated


class PatientListCreateApi(PermissionsByMethod):
    permissions_by_method: ClassVar[dict[str, list[type[BasePermission]]]] = {
        "GET": [IsClinical],
        "POST": [IsTechnician],
    }
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS
    # Multipart already parses, so the imaging upload can add an optional `images` file
    # field to InputSerializer (and call its own service wrapping patient_create and the
    # scan uploads in one transaction) without changing how the other fields arrive.
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    class FilterSerializer(serializers.Serializer):
        q = serializers.CharField(
            required=False,
            allow_blank=True,
            max_length=200,
            help_text="Search: part of the patient id or name, any case.",
        )
        created_after = serializers.DateTimeField(
            required=False, help_text="Created at or after this time (ISO 8601; a date works)."
        )
        created_before = serializers.DateTimeField(
            required=False, help_text="Created before this time (ISO 8601; a date works)."
        )
        min_age = serializers.IntegerField(required=False, min_value=0, max_value=services.AGE_MAX)
        max_age = serializers.IntegerField(required=False, min_value=0, max_value=services.AGE_MAX)
        ordering = serializers.ChoiceField(
            choices=selectors.ORDERINGS,
            required=False,
            help_text=f"Sort order; default {selectors.DEFAULT_ORDERING}.",
        )

        class Meta:
            ref_name = "PatientFilter"

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            low, high = attrs.get("min_age"), attrs.get("max_age")
            if low is not None and high is not None and low > high:
                raise serializers.ValidationError({"max_age": "Must not be below min_age."})
            after, before = attrs.get("created_after"), attrs.get("created_before")
            if after is not None and before is not None and after >= before:
                raise serializers.ValidationError(
                    {"created_before": "Must be later than created_after."}
                )
            return attrs

    class InputSerializer(serializers.Serializer):
        # Shapes and lengths here; the id format and other rules live in the service,
        # which the pages call too.
        id = serializers.CharField(
            max_length=services.PATIENT_ID_MAX_LENGTH,
            help_text="The hospital patient id: printable, no slashes, at most 64 characters.",
        )
        name = serializers.CharField(max_length=services.NAME_MAX_LENGTH)
        age = serializers.IntegerField(
            required=False, allow_null=True, min_value=0, max_value=services.AGE_MAX
        )
        note = serializers.CharField(
            required=False, allow_blank=True, max_length=services.NOTE_MAX_LENGTH
        )
        images = serializers.ListField(
            # Empty files reach the imaging validator, which answers `empty_file`.
            child=serializers.FileField(allow_empty_file=True, use_url=False),
            required=False,
            help_text="Multipart only, optional: first images (JPEG, PNG, DICOM), repeat the "
            "field. All or nothing: a refused image creates no patient and stores nothing.",
        )

        class Meta:
            ref_name = "PatientCreate"

    class OutputSerializer(serializers.Serializer):
        id = serializers.CharField()
        name = serializers.CharField()
        age = serializers.IntegerField(allow_null=True)
        created_by = serializers.CharField(
            source="created_by.username", allow_null=True, default=None
        )
        created_at = serializers.DateTimeField()
        updated_at = serializers.DateTimeField()
        note_count = serializers.IntegerField()

        class Meta:
            ref_name = "PatientListItem"

    @extend_schema(
        operation_id="patients_list",
        summary="List and search patients",
        description=(
            "Roles: technician, doctor. Admins and users without a role get 403. "
            "Search by id or name with `q`, filter by creation time and age, paginated. "
            "Audited as patient_listed with the search term."
        ),
        parameters=[FilterSerializer],
        responses={200: OutputSerializer(many=True), **error_responses(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        params = dict(filters.validated_data)
        patients = selectors.patient_list(
            user=request.user, search=params.pop("q", None), request=request, **params
        )
        return paginated(self, patients, self.OutputSerializer)

    @extend_schema(
        operation_id="patients_create",
        summary="Create a patient",
        description=(
            "Roles: technician only (doctors, admins and users without a role get 403). "
            "A hospital id that already exists is a 409 with code `patient_exists`. "
            "Audited as patient_created."
        ),
        request={
            "application/json": InputSerializer,
            "multipart/form-data": InputSerializer,
        },
        responses={
            201: PatientDetailOutputSerializer,
            **error_responses(400, 401, 403, 409),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        images = fields.pop("images", None)
        if images:
            patient, _scans = patient_create_with_images(
                images=images, **fields, created_by=request.user, request=request
            )
        else:
            patient = services.patient_create(**fields, created_by=request.user, request=request)
        patient.note_count = 0  # type: ignore[attr-defined]  # A new record has no notes.
        return Response(PatientDetailOutputSerializer(patient).data, status=status.HTTP_201_CREATED)
