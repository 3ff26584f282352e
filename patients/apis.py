"""Patient API: parse input, call one service or selector, serialize the result.

Roles: technicians create and change records; doctors read them and add notes; admins and
users without a role see no patient data at all (403 on every endpoint).
"""

from __future__ import annotations

from typing import Any, ClassVar

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from accounts.models import CLINICAL_ROLES, Department, User
from accounts.permissions import IsClinical, IsDoctor, IsTechnician
from medimg.api import error_responses
from patients import selectors, services


class PermissionsByMethod(APIView):
    """One role rule per HTTP method; anything not listed needs a clinical role."""

    permissions_by_method: ClassVar[dict[str, list[type[BasePermission]]]] = {}

    def get_permissions(self) -> list[BasePermission]:
        classes = self.permissions_by_method.get(self.request.method or "", [IsClinical])
        return [permission() for permission in classes]


def paginated(view: APIView, items: Any, serializer: type[serializers.Serializer]) -> Response:
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


class PatientDetailApi(PermissionsByMethod):
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


class PatientNoteListCreateApi(PermissionsByMethod):
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
        return paginated(self, notes, self.OutputSerializer)

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


class PatientAccessOutputSerializer(serializers.Serializer):
    class DepartmentSerializer(serializers.Serializer):
        slug = serializers.CharField()
        name = serializers.CharField()

        class Meta:
            ref_name = "PatientAccessDepartment"

    class MemberSerializer(serializers.Serializer):
        username = serializers.CharField()
        role = serializers.CharField()

        class Meta:
            ref_name = "PatientAccessMember"

    departments = DepartmentSerializer(many=True, source="departments.all")
    care_team = MemberSerializer(many=True, source="care_team.all")

    class Meta:
        ref_name = "PatientAccess"


class PatientAccessApi(APIView):
    """Who sees a patient record: its departments and named care team."""

    permission_classes = [IsClinical]

    class InputSerializer(serializers.Serializer):
        departments = serializers.SlugRelatedField(
            slug_field="slug",
            queryset=Department.objects.all(),
            many=True,
            required=False,
            help_text="Department slugs; the record must keep at least one.",
            error_messages={
                "does_not_exist": "There is no department with the {slug_name} {value}."
            },
        )
        care_team = serializers.SlugRelatedField(
            slug_field="username",
            queryset=User.objects.filter(is_active=True, role__in=CLINICAL_ROLES),
            many=True,
            required=False,
            help_text="Usernames of active technicians and doctors; [] empties the team.",
            error_messages={
                "does_not_exist": "No active technician or doctor has the {slug_name} {value}."
            },
        )

        class Meta:
            ref_name = "PatientAccessUpdate"

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            unknown = set(self.initial_data) - set(self.fields)
            if unknown:
                raise serializers.ValidationError(
                    dict.fromkeys(sorted(unknown), "This field cannot be changed here.")
                )
            if not attrs:
                raise serializers.ValidationError("Give departments, care_team or both.")
            return attrs

    @extend_schema(
        operation_id="patients_access_retrieve",
        summary="Who sees a patient: departments and care team",
        description=(
            "Roles: technician, doctor who may see the patient (a patient of another "
            "department is a 404). Audited as patient_viewed (view: access)."
        ),
        responses={200: PatientAccessOutputSerializer, **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, patient_id: str) -> Response:
        patient = selectors.patient_access_get(
            user=request.user, patient_id=patient_id, request=request
        )
        return Response(PatientAccessOutputSerializer(patient).data)

    @extend_schema(
        operation_id="patients_access_partial_update",
        summary="Change a patient's departments or care team",
        description=(
            "Roles: technicians and doctors of one of the patient's departments (a care-team "
            "member from another department or emergency access is a 403; a patient the user "
            "cannot see is a 404). The record keeps at least one department (400 "
            "`invalid_departments`); care-team members are active technicians and doctors. "
            "Audited as patient_departments_changed and patient_care_team_changed, naming the "
            "patient by its reference."
        ),
        request=InputSerializer,
        responses={200: PatientAccessOutputSerializer, **error_responses(400, 401, 403, 404)},
    )
    def patch(self, request: Request, patient_id: str) -> Response:
        patient = selectors.patient_lookup(user=request.user, patient_id=patient_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.patient_change_access(
            patient=patient,
            actor=request.user,
            departments=serializer.validated_data.get("departments"),
            care_team=serializer.validated_data.get("care_team"),
            request=request,
        )
        # As set, even when the user moved the record out of their own department.
        return Response(PatientAccessOutputSerializer(patient).data)
