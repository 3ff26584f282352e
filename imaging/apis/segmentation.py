"""Segmentation API (doctors only; every other role gets 403, and the refusal is audited):

GET  /api/segmentation/models/             the models a doctor can run
GET  /api/images/{id}/segmentations/       the scan's segmentation jobs, newest first
POST /api/images/{id}/segmentations/       run a model: {"model": NAME} -> 202, a job
GET  /api/segmentations/{id}/              status and results (volumes or areas)
GET  /api/segmentations/{id}/overlay/      overlay PNG with legend (?frame=N)
GET  /api/segmentations/{id}/seg/          DICOM SEG (DICOM inputs)
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import IsDoctor
from audit.models import Action
from imaging.apis.common import (
    PNG_RESPONSE,
    AuditedRefusal,
    FirstRendererNegotiation,
    binary_response,
)
from imaging.models import Scan, SegmentationJob, SegmentationModel
from imaging.selectors import segmentation as selectors
from imaging.services.segmentation import segmentation_models_register, segmentation_request
from medimg.api import error_responses

_DICOM = OpenApiResponse(OpenApiTypes.BINARY, description="A DICOM SEG (Part 10 file).")
# Kept out of API answers: storage names are internal.
_INTERNAL_RESULTS = {"overlay_paths"}


class ModelOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    title = serializers.CharField()
    classes = serializers.SerializerMethodField()
    network = serializers.SerializerMethodField()
    # A field named like the Field attribute `source` (the stubs type that attribute).
    source = serializers.SerializerMethodField(help_text="directory (model/segmentation) or admin")  # type: ignore[assignment]

    class Meta:
        ref_name = "SegmentationModel"

    def get_classes(self, model: SegmentationModel) -> dict[str, str]:
        return dict((model.config or {}).get("classes", {}))

    def get_network(self, model: SegmentationModel) -> dict[str, Any]:
        network = (model.config or {}).get("network", {})
        return {k: network.get(k) for k in ("kind", "spatial_dims", "channels", "num_res_units")}

    def get_source(self, model: SegmentationModel) -> str:
        return "admin" if model.weights else "directory"


class JobOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    scan = serializers.IntegerField(source="scan_id")
    model = serializers.CharField(source="model.name")
    status = serializers.CharField()
    failure_reason = serializers.CharField()
    requested_by = serializers.CharField(source="requested_by.username", default=None)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    runtime_ms = serializers.FloatField(allow_null=True)
    results = serializers.SerializerMethodField(
        help_text="classes, colours, frames, pixels per class, areas_mm2 (one image) or "
        "volumes_ml (frames with a slice spacing), spacing_mm, notes, timings_ms"
    )
    has_dicom_seg = serializers.SerializerMethodField()
    model_version = serializers.SerializerMethodField(
        help_text="The model's version when the job ran (empty when its config and directory "
        "state none, or the job has not run)."
    )
    model_sha256 = serializers.SerializerMethodField(
        help_text="SHA-256 of the weights file the job ran with (empty until it has run)."
    )

    class Meta:
        ref_name = "SegmentationJob"

    def get_model_version(self, job: SegmentationJob) -> str:
        return str(((job.results or {}).get("model") or {}).get("version", ""))

    def get_model_sha256(self, job: SegmentationJob) -> str:
        return str(((job.results or {}).get("model") or {}).get("sha256", ""))

    def get_results(self, job: SegmentationJob) -> dict[str, Any]:
        return {k: v for k, v in (job.results or {}).items() if k not in _INTERNAL_RESULTS}

    def get_has_dicom_seg(self, job: SegmentationJob) -> bool:
        return bool(job.seg_path)


class _DoctorApi(AuditedRefusal):
    permission_classes = [IsDoctor]
    refused_action = Action.SEGMENTATION_VIEWED
    target_type = "segmentationjob"
    target_kwarg = "segmentation_id"


class SegmentationModelListApi(_DoctorApi):
    target_type = "segmentationmodel"
    target_kwarg = ""

    @extend_schema(
        operation_id="segmentation_models",
        summary="Segmentation models a doctor can run",
        description=(
            "Role: doctor. Models under model/segmentation/<name>/ (config.json plus "
            "model.onnx, weights.pt or TorchScript model.pt) are registered on first use; "
            "admins add or disable models in Django admin."
        ),
        responses={200: ModelOutputSerializer(many=True), **error_responses(401, 403)},
    )
    def get(self, request: Request) -> Response:
        segmentation_models_register()  # new model directories on disk
        models = selectors.segmentation_model_list()
        return Response(ModelOutputSerializer(models, many=True).data)


class ScanSegmentationsApi(_DoctorApi):
    refused_action = Action.SEGMENTATION_REQUESTED
    target_type = "scan"
    target_kwarg = "scan_id"

    class InputSerializer(serializers.Serializer):
        model = serializers.CharField(max_length=64)
        pixel_spacing_mm = serializers.ListField(
            child=serializers.FloatField(),
            min_length=2,
            max_length=2,
            required=False,
            help_text="[row, column] in mm, for PNG and JPEG (DICOM has its own spacing).",
        )
        series = serializers.BooleanField(
            default=False,
            help_text="DICOM: segment every slice of the image's series as one volume "
            "(volumes in mL from the slice positions).",
        )
        patient_age_years = serializers.FloatField(
            required=False,
            min_value=0,
            max_value=130,
            help_text="Brain-tissue models on a series: the patient's age for the atrophy "
            "z-scores when the DICOM header has none (the header wins). Only the decade band "
            "is stored.",
        )
        patient_sex = serializers.ChoiceField(
            choices=["F", "M"],
            required=False,
            help_text="As patient_age_years, for the sex.",
        )

        class Meta:
            ref_name = "SegmentationRequest"

    @extend_schema(
        operation_id="images_segmentations",
        summary="The image's segmentations, newest first",
        description="Role: doctor. Audited as segmentation_viewed.",
        responses={200: JobOutputSerializer(many=True), **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, scan_id: int) -> Response:
        scan = get_object_or_404(Scan.objects.visible_to(request.user), pk=scan_id)
        jobs = selectors.segmentation_list_for_scan(user=request.user, scan=scan, request=request)
        return Response(JobOutputSerializer(jobs, many=True).data)

    @extend_schema(
        operation_id="images_segment",
        summary="Run a segmentation model on the image",
        description=(
            "Role: doctor. Queues a job (202) that runs the model on the ORIGINAL pixels and "
            "stores the mask, overlays and (DICOM) a DICOM SEG encrypted with the scan's key. "
            "Poll GET /api/segmentations/{id}/. 400 `unknown_model`, `model_disabled`, "
            "`invalid_spacing`, `not_a_series`; 409 `scan_not_ready`. `series: true` segments "
            "every slice of the image's DICOM series as one volume; with a brain-tissue model the "
            "results add `volumetrics` (tissue volumes, ICV, BPF, asymmetry, the mid-sagittal "
            "`hemisphere_split`) and `atrophy` (z-scores with their published references, the "
            "grade, the `flagged` regions; decision support). Audited as "
            "segmentation_requested."
        ),
        request=InputSerializer,
        responses={202: JobOutputSerializer, **error_responses(400, 401, 403, 404)},
    )
    def post(self, request: Request, scan_id: int) -> Response:
        scan = get_object_or_404(Scan.objects.visible_to(request.user), pk=scan_id)
        params = self.InputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        segmentation_models_register()
        model = selectors.segmentation_model_get(name=params.validated_data["model"])
        job = segmentation_request(
            scan=scan,
            model=model,
            actor=request.user,
            request=request,
            pixel_spacing_mm=params.validated_data.get("pixel_spacing_mm"),
            series=params.validated_data["series"],
            patient_age_years=params.validated_data.get("patient_age_years"),
            patient_sex=params.validated_data.get("patient_sex"),
        )
        job.refresh_from_db()  # in-process mode has already run it
        return Response(JobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class SegmentationDetailApi(_DoctorApi):
    @extend_schema(
        operation_id="segmentations_detail",
        summary="Status and results of a segmentation",
        description=(
            "Role: doctor. queued -> running -> completed | failed (failure_reason). Results: "
            "pixels per class, areas_mm2 for one image or volumes_ml for frames with a slice "
            "spacing, the colours the overlay uses. Audited as segmentation_viewed."
        ),
        responses={200: JobOutputSerializer, **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, segmentation_id: int) -> Response:
        job = selectors.segmentation_get_for_user(
            user=request.user, job_id=segmentation_id, request=request
        )
        return Response(JobOutputSerializer(job).data)


class FrameSerializer(serializers.Serializer):
    frame = serializers.IntegerField(min_value=0, default=0)

    class Meta:
        ref_name = "SegmentationFrame"


class OverlayInputSerializer(FrameSerializer):
    labels = serializers.BooleanField(
        default=False,
        help_text="Instead of the tinted image: the frame's label mask as an 8-bit greyscale "
        "PNG, each pixel its class index (the viewer's labelmap).",
    )

    class Meta:
        ref_name = "SegmentationOverlayQuery"


class SegmentationOverlayApi(_DoctorApi):
    content_negotiation_class = FirstRendererNegotiation

    @extend_schema(
        operation_id="segmentations_overlay",
        summary="Overlay PNG: the redacted image with the classes tinted, and a legend",
        description="Role: doctor. `?frame=N`; `?labels=true` gives the label mask instead. "
        "409 `segmentation_not_ready`. Audited.",
        parameters=[OverlayInputSerializer],
        responses={
            (200, "image/png"): PNG_RESPONSE,
            **error_responses(400, 403, 404, 409),
        },
    )
    def get(self, request: Request, segmentation_id: int) -> HttpResponse:
        params = OverlayInputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        frame = params.validated_data["frame"]
        if params.validated_data["labels"]:
            job, content = selectors.segmentation_labels(
                user=request.user, job_id=segmentation_id, frame=frame, request=request
            )
            return binary_response(content, filename=f"segmentation-{job.pk}-labels-{frame}.png")
        job, content = selectors.segmentation_overlay(
            user=request.user, job_id=segmentation_id, frame=frame, request=request
        )
        return binary_response(content, filename=f"segmentation-{job.pk}-overlay-{frame}.png")


class SegmentationDicomSegApi(_DoctorApi):
    content_negotiation_class = FirstRendererNegotiation

    @extend_schema(
        operation_id="segmentations_dicom_seg",
        summary="The segmentation as a DICOM SEG (DICOM inputs)",
        description=(
            "Role: doctor. References the de-identified source dataset. 404 `no_dicom_seg` "
            "for PNG/JPEG inputs and multi-frame images without patient geometry; 409 "
            "`segmentation_not_ready`. Audited."
        ),
        responses={(200, "application/dicom"): _DICOM, **error_responses(403, 404, 409)},
    )
    def get(self, request: Request, segmentation_id: int) -> HttpResponse:
        job, content = selectors.segmentation_dicom_seg(
            user=request.user, job_id=segmentation_id, request=request
        )
        response = binary_response(
            content, content_type="application/dicom", filename=f"segmentation-{job.pk}.dcm"
        )
        response["Content-Disposition"] = f'attachment; filename="segmentation-{job.pk}.dcm"'
        return response
