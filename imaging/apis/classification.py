"""Classifier plug-in API (doctors only; every other role gets 403, and the refusal is audited):

GET  /api/classifiers/                       the active classifiers, with intended use and card
GET  /api/images/{id}/classifications/       the scan's classification results, newest first
POST /api/images/{id}/classifications/       run one: {"model": ID, "frame": 0} -> 202
GET  /api/classifications/{id}/              one result

Every result carries `label`: "Research use only — not for diagnosis".
"""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import IsDoctor
from audit.models import Action
from imaging.apis.common import AuditedRefusal
from imaging.models import Classification, ClassifierModel, Scan
from imaging.selectors import classification as selectors
from imaging.services.classification import RESEARCH_LABEL, classification_request
from medimg.api import error_responses


class ClassifierOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    version = serializers.CharField()
    sha256 = serializers.CharField(source="weights_sha256")
    intended_use = serializers.CharField()
    model_card = serializers.CharField(help_text="Markdown.")
    classes = serializers.SerializerMethodField()
    threshold = serializers.SerializerMethodField()
    input = serializers.SerializerMethodField()
    # A field named like the Field attribute `label` (the stubs type that attribute).
    label = serializers.SerializerMethodField()  # type: ignore[assignment]

    class Meta:
        ref_name = "Classifier"

    def get_classes(self, model: ClassifierModel) -> list[str]:
        return list((model.config or {}).get("classes", []))

    def get_threshold(self, model: ClassifierModel) -> float:
        return float((model.config or {}).get("threshold", 0.5))

    def get_input(self, model: ClassifierModel) -> dict[str, Any]:
        return dict((model.config or {}).get("input", {}))

    def get_label(self, model: ClassifierModel) -> str:
        return RESEARCH_LABEL


class ClassificationOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    scan = serializers.IntegerField(source="scan_id")
    classifier = serializers.IntegerField(source="classifier_id")
    frame = serializers.IntegerField()
    status = serializers.CharField(help_text="queued, running, completed or failed")
    failure_reason = serializers.CharField()
    probabilities = serializers.DictField(child=serializers.FloatField())
    prediction = serializers.CharField()
    confidence = serializers.FloatField(allow_null=True)
    threshold = serializers.FloatField(allow_null=True)
    model_name = serializers.CharField()
    model_version = serializers.CharField()
    model_sha256 = serializers.CharField()
    inference_ms = serializers.FloatField(allow_null=True)
    runtime_ms = serializers.FloatField(allow_null=True)
    requested_by = serializers.CharField(source="requested_by.username", default=None)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    # A field named like the Field attribute `label` (the stubs type that attribute).
    label = serializers.SerializerMethodField()  # type: ignore[assignment]

    class Meta:
        ref_name = "Classification"

    def get_label(self, row: Classification) -> str:
        return RESEARCH_LABEL


class _DoctorApi(AuditedRefusal):
    permission_classes = [IsDoctor]
    refused_action = Action.CLASSIFICATION_VIEWED
    target_type = "classification"
    target_kwarg = "classification_id"


class ClassifierListApi(_DoctorApi):
    target_type = "classifiermodel"
    target_kwarg = ""

    @extend_schema(
        operation_id="classifiers",
        summary="Classifiers a doctor can run",
        description="Role: doctor. Active classifiers registered by an admin. Research use only.",
        responses={200: ClassifierOutputSerializer(many=True), **error_responses(401, 403)},
    )
    def get(self, request: Request) -> Response:
        return Response(ClassifierOutputSerializer(selectors.classifier_list(), many=True).data)


class ScanClassificationsApi(_DoctorApi):
    refused_action = Action.CLASSIFICATION_REQUESTED
    target_type = "scan"
    target_kwarg = "scan_id"

    class InputSerializer(serializers.Serializer):
        model = serializers.IntegerField(help_text="The classifier's id (GET /api/classifiers/).")
        frame = serializers.IntegerField(min_value=0, default=0)

        class Meta:
            ref_name = "ClassificationRequest"

    @extend_schema(
        operation_id="images_classifications",
        summary="The image's classification results, newest first",
        description="Role: doctor. Audited as classification_viewed. Research use only.",
        responses={
            200: ClassificationOutputSerializer(many=True),
            **error_responses(401, 403, 404),
        },
    )
    def get(self, request: Request, scan_id: int) -> Response:
        scan = get_object_or_404(Scan.objects.visible_to(request.user), pk=scan_id)
        rows = selectors.classification_list_for_scan(user=request.user, scan=scan, request=request)
        return Response(ClassificationOutputSerializer(rows, many=True).data)

    @extend_schema(
        operation_id="images_classify",
        summary="Run a classifier on the image",
        description=(
            "Role: doctor. Queues a run (202) on one frame of the image's de-identified, "
            "redacted pixels; poll GET /api/classifications/{id}/. 400 `unknown_model`, "
            "`model_disabled`, `invalid_frame`; 409 `scan_not_ready`. Audited as "
            "classification_requested. Research use only — not for diagnosis."
        ),
        request=InputSerializer,
        responses={
            202: ClassificationOutputSerializer,
            **error_responses(400, 401, 403, 404, 409),
        },
    )
    def post(self, request: Request, scan_id: int) -> Response:
        scan = get_object_or_404(Scan.objects.visible_to(request.user), pk=scan_id)
        params = self.InputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        classifier = selectors.classifier_get(classifier_id=params.validated_data["model"])
        row = classification_request(
            scan=scan,
            classifier=classifier,
            actor=request.user,
            request=request,
            frame=params.validated_data["frame"],
        )
        row.refresh_from_db()  # in-process mode has already run it
        return Response(ClassificationOutputSerializer(row).data, status=status.HTTP_202_ACCEPTED)


class ClassificationDetailApi(_DoctorApi):
    @extend_schema(
        operation_id="classifications_detail",
        summary="One classification result",
        description=(
            "Role: doctor. Probability per class, prediction, confidence, the model's name, "
            "version and SHA-256. Audited as classification_viewed. Research use only."
        ),
        responses={200: ClassificationOutputSerializer, **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, classification_id: int) -> Response:
        row = selectors.classification_get_for_user(
            user=request.user, classification_id=classification_id, request=request
        )
        return Response(ClassificationOutputSerializer(row).data)
