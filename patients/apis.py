"""Patient API: parse input, call one service or selector, serialize the result.

Roles: technicians create and change records; doctors read them and add notes; admins and
users without a role see no patient data at all (403 on every endpoint).
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
from rest_framework.views import APIView

from accounts.permissions import IsClinical, IsDoctor, IsTechnician
from imaging.services.upload import patient_create_with_images
from medimg.api import error_responses
from patients import selectors, services


class _PermissionsByMethod(APIView):
    """One role rule per HTTP method; anything not listed needs a clinical role."""

    permissions_by_method: ClassVar[dict[str, list[type[BasePermission]]]] = {}

    def get_permissions(self) -> list[BasePermission]:
        classes = self.permissions_by_method.get(self.request.method or "", [IsClinical])
        return [permission() for permission in classes]


def _paginated(view: APIView, items: Any, serializer: type[serializers.Serializer]) -> Response:
    paginator = view.pagination_class()  # type: ignore[attr-defined]
    page = paginator.paginate_queryset(items, view.request, view=view)
    return paginator.get_paginated_response(serializer(page, many=True).data)


class PatientDetailOutputSerializer(serializers.Serializer):
    """The whole record, as returned by create, view and update."""

    id = serializers.CharField()
    name = serializers.CharField()
    age = serializers.IntegerField(allow_null=True)
    note = serializers.CharField()
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    note_count = serializers.IntegerField(help_text="How many doctors' notes the record has.")

    class Meta:
        ref_name = "PatientDetail"


class PatientListCreateApi(_PermissionsByMethod):
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
        return _paginated(self, patients, self.OutputSerializer)

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


class PatientDetailApi(_PermissionsByMethod):
    permissions_by_method: ClassVar[dict[str, list[type[BasePermission]]]] = {
        "GET": [IsClinical],
        "PATCH": [IsTechnician],
    }

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(required=False, max_length=services.NAME_MAX_LENGTH)
        age = serializers.IntegerField(
            required=False, allow_null=True, min_value=0, max_value=services.AGE_MAX
        )
        note = serializers.CharField(
            required=False, allow_blank=True, max_length=services.NOTE_MAX_LENGTH
        )

        class Meta:
            ref_name = "PatientUpdate"

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            unknown = set(self.initial_data) - set(self.fields)
            if unknown:
                # The id is the record's key and never changes; say so rather than ignore it.
                raise serializers.ValidationError(
                    dict.fromkeys(sorted(unknown), "This field cannot be changed.")
                )
            return attrs

    @extend_schema(
        operation_id="patients_retrieve",
        summary="View a patient",
        description=(
            "Roles: technician, doctor. Admins and users without a role get 403; an unknown "
            "id is a 404. Audited as patient_viewed."
        ),
        responses={200: PatientDetailOutputSerializer, **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, patient_id: str) -> Response:
        patient = selectors.patient_get(user=request.user, patient_id=patient_id, request=request)
        return Response(PatientDetailOutputSerializer(patient).data)

    @extend_schema(
        operation_id="patients_partial_update",
        summary="Change a patient's name, age or note",
        description=(
            "Roles: technician only (doctors, admins and users without a role get 403). "
            "The id cannot be changed. Audited as patient_updated with the changed field names."
        ),
        request=InputSerializer,
        responses={
            200: PatientDetailOutputSerializer,
            **error_responses(400, 401, 403, 404),
        },
    )
    def patch(self, request: Request, patient_id: str) -> Response:
        patient = selectors.patient_lookup(user=request.user, patient_id=patient_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        patient = services.patient_update(
            patient=patient, actor=request.user, request=request, **serializer.validated_data
        )
        return Response(PatientDetailOutputSerializer(patient).data)


class PatientNoteListCreateApi(_PermissionsByMethod):
    permissions_by_method: ClassVar[dict[str, list[type[BasePermission]]]] = {
        "GET": [IsClinical],
        "POST": [IsDoctor],
    }
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS

    class InputSerializer(serializers.Serializer):
        text = serializers.CharField(max_length=services.NOTE_MAX_LENGTH)

        class Meta:
            ref_name = "PatientNoteCreate"

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        text = serializers.CharField()
        author = serializers.CharField(source="author.username", allow_null=True, default=None)
        created_at = serializers.DateTimeField()

        class Meta:
            ref_name = "PatientNote"

    @extend_schema(
        operation_id="patients_notes_list",
        summary="List a patient's notes",
        description=(
            "Roles: technician, doctor. Admins and users without a role get 403; an unknown "
            "patient is a 404. Oldest first, paginated. Audited as patient_viewed."
        ),
        responses={200: OutputSerializer(many=True), **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, patient_id: str) -> Response:
        notes = selectors.patient_note_list(
            user=request.user, patient_id=patient_id, request=request
        )
        return _paginated(self, notes, self.OutputSerializer)

    @extend_schema(
        operation_id="patients_notes_create",
        summary="Add a note to a patient",
        description=(
            "Roles: doctor only (technicians, admins and users without a role get 403). "
            "Notes are dated and never edited. Audited as patient_note_added."
        ),
        request=InputSerializer,
        responses={201: OutputSerializer, **error_responses(400, 401, 403, 404)},
    )
    def post(self, request: Request, patient_id: str) -> Response:
        patient = selectors.patient_lookup(user=request.user, patient_id=patient_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        note = services.patient_note_add(
            patient=patient, author=request.user, request=request, **serializer.validated_data
        )
        return Response(self.OutputSerializer(note).data, status=status.HTTP_201_CREATED)
