"""Viewer and quality-control APIs: frames and windows, studies and series, K-means
intensity clusters, QC outliers. Thin: parse, call one selector, render."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsAdmin, IsClinical, IsDoctor
from engine import errors
from engine.pixels import qc
from imaging.apis.common import FirstRendererNegotiation, binary_response
from imaging.selectors import qc as selectors_qc
from imaging.selectors import viewing as selectors_viewing
from imaging.vault.redacted import frame_param
from medimg.api import error_responses
from patients.selectors import patient_get


class WindowPresetSerializer(serializers.Serializer):
    name = serializers.CharField()
    centre = serializers.FloatField(allow_null=True)
    width = serializers.FloatField(allow_null=True)

    class Meta:
        ref_name = "WindowPreset"


class FileWindowSerializer(serializers.Serializer):
    centre = serializers.FloatField()
    width = serializers.FloatField()
    explanation = serializers.CharField(allow_blank=True)

    class Meta:
        ref_name = "FileWindow"


class UltrasoundRegionSerializer(serializers.Serializer):
    box = serializers.ListField(
        child=serializers.IntegerField(), help_text="[x1, y1, x2, y2], x2/y2 exclusive."
    )
    spatial_format = serializers.IntegerField(allow_null=True)
    data_type = serializers.IntegerField(allow_null=True)
    units_x = serializers.CharField(allow_null=True, help_text='e.g. "cm".')
    units_y = serializers.CharField(allow_null=True)
    delta_x = serializers.FloatField(allow_null=True, help_text="Physical units per pixel.")
    delta_y = serializers.FloatField(allow_null=True)

    class Meta:
        ref_name = "UltrasoundRegion"


class ScanFramesApi(APIView):
    permission_classes = [IsClinical]

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        format = serializers.CharField()
        frames = serializers.IntegerField(help_text="`?frame=` takes 0 to frames - 1.")
        width = serializers.IntegerField()
        height = serializers.IntegerField()
        modality = serializers.CharField(allow_blank=True)
        windowable = serializers.BooleanField(
            help_text="Whether /redacted/ and /restore/ take `?window=` or `?wc=&ww=`."
        )
        window_presets = WindowPresetSerializer(
            many=True, help_text="Names for `?window=`: CT presets, then file and auto."
        )
        file_windows = FileWindowSerializer(many=True)
        default_window = serializers.CharField(allow_null=True)
        overlays = serializers.IntegerField(help_text="Overlay planes burned into the display.")
        ultrasound_regions = UltrasoundRegionSerializer(
            many=True,
            help_text="An ultrasound's data regions and the physical size of a pixel in each: "
            "what calipers measure in (empty for other images).",
        )

        class Meta:
            ref_name = "ScanFrames"

    @extend_schema(
        operation_id="images_frames",
        summary="Frames and display windows of an image",
        description="Roles: technician, doctor. 409 `scan_not_ready` before processing "
        "completes. Audited as scan_viewed.",
        responses={200: OutputSerializer, **error_responses(401, 403, 404, 409)},
    )
    def get(self, request: Request, scan_id: int) -> Response:
        info = selectors_viewing.scan_frames_info(
            user=request.user, scan_id=scan_id, request=request
        )
        return Response(self.OutputSerializer(info).data)


class StudyScanSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    instance_number = serializers.IntegerField(allow_null=True)
    original_filename = serializers.CharField()
    format = serializers.CharField()
    modality = serializers.CharField(allow_blank=True)
    frames = serializers.IntegerField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()

    class Meta:
        ref_name = "StudyScan"


class SeriesSerializer(serializers.Serializer):
    series_uid = serializers.CharField(allow_null=True)
    modality = serializers.CharField(allow_blank=True)
    scanner = serializers.CharField(allow_blank=True)
    scan_count = serializers.IntegerField()
    scans = StudyScanSerializer(many=True)

    class Meta:
        ref_name = "Series"


class PatientStudiesApi(APIView):
    permission_classes = [IsClinical]

    class OutputSerializer(serializers.Serializer):
        study_uid = serializers.CharField(allow_null=True)
        modalities = serializers.ListField(child=serializers.CharField())
        series_count = serializers.IntegerField()
        series = SeriesSerializer(many=True)

        class Meta:
            ref_name = "Study"

    @extend_schema(
        operation_id="patients_studies",
        summary="A patient's images grouped by study and series",
        description=(
            "Roles: technician, doctor. Studies -> series -> scans, by the de-identified "
            "study and series UIDs; scans in a series by instance number. Scans without a "
            "study UID (JPEG/PNG) come last, in one study with study_uid null. Audited as "
            "patient_viewed."
        ),
        responses={200: OutputSerializer(many=True), **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, patient_id: str) -> Response:
        patient = patient_get(user=request.user, patient_id=patient_id, request=request)
        studies = selectors_viewing.patient_studies(user=request.user, patient=patient)
        return Response(self.OutputSerializer(studies, many=True).data)


def _cluster_params(request: Request) -> tuple[int, int]:
    frame = frame_param(request.query_params)
    raw = request.query_params.get("k", "3")
    try:
        k = int(raw)
    except ValueError:
        raise errors.invalid_k(qc.MAX_K) from None
    return frame, k


class ScanClustersApi(APIView):
    permission_classes = [IsClinical]

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField(source="scan.pk")
        frame = serializers.IntegerField()
        k = serializers.IntegerField()
        silhouette = serializers.FloatField(
            allow_null=True, help_text="Silhouette score on a random sample of pixels."
        )
        sample_size = serializers.IntegerField()
        centres = serializers.ListField(child=serializers.FloatField())
        sizes = serializers.ListField(child=serializers.IntegerField())
        intensity = serializers.CharField(help_text="modality (e.g. HU), grey or luminance.")
        image = serializers.SerializerMethodField(help_text="The cluster map (PNG) URL.")

        class Meta:
            ref_name = "ScanClusters"

        def get_image(self, result: selectors_qc.ClusterResult) -> str:
            return f"/api/images/{result.scan.pk}/clusters/image/?frame={result.frame}&k={result.k}"

    @extend_schema(
        operation_id="images_clusters",
        summary="K-means intensity clusters of one slice (redacted pixels)",
        description=(
            "Roles: technician, doctor. `?frame=` (0-based) and `?k=` (2-8, default 3). "
            "K-means (scikit-learn) on the slice's intensities (Hounsfield units for CT), the "
            "redacted regions left out; silhouette score on 3000 sampled pixels. 400 "
            "`invalid_frame`, `invalid_k`; 409 `scan_not_ready`. Audited as scan_viewed."
        ),
        responses={
            200: OutputSerializer,
            **error_responses(400, 401, 403, 404, 409),
        },
    )
    def get(self, request: Request, scan_id: int) -> Response:
        frame, k = _cluster_params(request)
        result = selectors_qc.scan_clusters(
            user=request.user, scan_id=scan_id, frame=frame, k=k, request=request
        )
        return Response(self.OutputSerializer(result).data)


class ScanClustersImageApi(APIView):
    permission_classes = [IsClinical]
    content_negotiation_class = FirstRendererNegotiation

    @extend_schema(
        operation_id="images_clusters_image",
        summary="K-means cluster map of one slice (PNG)",
        description="As images_clusters, the map itself: clusters coloured from darkest "
        "(black) up, redacted regions grey. Header X-Medimg-Silhouette carries the score.",
        responses={
            (200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY),
            **error_responses(400, 401, 403, 404, 409),
        },
    )
    def get(self, request: Request, scan_id: int) -> HttpResponse:
        frame, k = _cluster_params(request)
        result = selectors_qc.scan_clusters(
            user=request.user, scan_id=scan_id, frame=frame, k=k, request=request
        )
        response = binary_response(result.png, filename=f"scan-{scan_id}-clusters-{frame}-k{k}.png")
        if result.silhouette is not None:
            response["X-Medimg-Silhouette"] = f"{result.silhouette:.4f}"
        return response


class DoctorOrAdmin(BasePermission):
    """QC reads statistics, not images: doctors and admins."""

    message = "Your role may not do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return IsDoctor().has_permission(request, view) or IsAdmin().has_permission(request, view)


class QcFlagSerializer(serializers.Serializer):
    metric = serializers.CharField()
    value = serializers.FloatField()
    median = serializers.FloatField()
    z = serializers.FloatField(help_text="Modified z-score, 0.6745 (x - median) / MAD.")

    class Meta:
        ref_name = "QcFlag"


class QcOutlierSerializer(serializers.Serializer):
    id = serializers.IntegerField(allow_null=True, help_text="Null for admins.")
    patient = serializers.CharField(allow_null=True, help_text="Null for admins.")
    modality = serializers.CharField(allow_blank=True)
    scanner = serializers.CharField(allow_blank=True)
    group_size = serializers.IntegerField()
    flags = QcFlagSerializer(many=True)

    class Meta:
        ref_name = "QcOutlier"


class QcGroupSerializer(serializers.Serializer):
    modality = serializers.CharField(allow_blank=True)
    scanner = serializers.CharField(allow_blank=True)
    scans = serializers.IntegerField()

    class Meta:
        ref_name = "QcGroup"


class QcOutliersApi(APIView):
    permission_classes = [DoctorOrAdmin]

    class OutputSerializer(serializers.Serializer):
        threshold = serializers.FloatField()
        min_group = serializers.IntegerField()
        metrics = serializers.ListField(child=serializers.CharField())
        groups = QcGroupSerializer(many=True)
        outliers = QcOutlierSerializer(many=True)

        class Meta:
            ref_name = "QcOutliers"

    @extend_schema(
        operation_id="qc_outliers",
        summary="Scans whose QC statistics are outliers for their scanner and modality",
        description=(
            "Roles: doctor, admin. Robust z-scores (median and MAD) of each statistic within "
            "each (modality, scanner) group of at least `min_group` completed scans; |z| over "
            "`threshold` is an outlier. Admins get the statistics without scan or patient ids."
        ),
        responses={200: OutputSerializer, **error_responses(401, 403)},
    )
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(selectors_qc.qc_outliers(user=request.user)).data)
