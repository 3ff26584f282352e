"""Imaging API: parse input, call one service or selector, render.

Roles: technicians upload and review (list, detail, redacted and grid images, region
metadata, similar scans); doctors do all that plus restore and decrypt regions; admins see
only the processing statistics. Users without a role get 403 everywhere.

Restore and region decryption failures (tampered or lost data) answer 500 with the one code
`restore_failed`: the server's stored data failed its integrity check, nothing the client
can fix, and the message says nothing about which check failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import MethodNotAllowed
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from accounts.permissions import IsAdmin, IsClinical, IsDoctor, IsTechnician
from accounts.session_keys import SealContext, seal_for, session_key_for_request
from audit.models import Action
from engine import errors
from engine.pixels.rendering import WINDOW_NAMES
from imaging.apis.common import (
    PNG_RESPONSE,
    AuditedRefusal,
    FirstRendererNegotiation,
    binary_response,
)
from imaging.models import Region, Scan
from imaging.selectors import scans as selectors
from imaging.services import restore, upload
from imaging.vault.redacted import WindowRequest, frame_param, window_request
from medimg.api import error_responses
from patients.selectors import patient_lookup

# What an image endpoint refuses with: bad parameters, no or wrong login, unknown, not ready.


def _deliver(
    rendered: restore.Rendered, seal: SealContext | None, *, purpose: str, **fields: object
) -> HttpResponse:
    """The image as is, or sealed for the client's session key when it sent X-Medimg-Seal."""
    if seal is None:
        return binary_response(rendered)
    sealed = seal_for(seal, rendered.content, purpose=purpose, **fields)
    response = binary_response(
        restore.Rendered(sealed, "application/octet-stream", f"{rendered.filename}.sealed")
    )
    response["X-Medimg-Sealed"] = seal.key_id
    response["X-Medimg-Content-Type"] = rendered.content_type
    return response


def _paginated(view: APIView, items: Any, serializer: type[serializers.Serializer]) -> Response:
    paginator = view.pagination_class()  # type: ignore[attr-defined]
    page = paginator.paginate_queryset(items, view.request, view=view)
    return paginator.get_paginated_response(serializer(page, many=True).data)


class _PermissionsByMethod(APIView):
    permissions_by_method: ClassVar[dict[str, list[type[BasePermission]]]] = {}

    def get_permissions(self) -> list[BasePermission]:
        classes = self.permissions_by_method.get(self.request.method or "", [IsClinical])
        return [permission() for permission in classes]


# --- Serializers ----------------------------------------------------------------------------


class RegionOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    index = serializers.IntegerField(help_text="The number drawn on the grid image, minus one.")
    frame = serializers.IntegerField()
    # A field named like the Field attribute `label` (the stubs type that attribute).
    label = serializers.CharField(help_text="Detector class, e.g. phi_text.")  # type: ignore[assignment]
    confidence = serializers.FloatField()
    box = serializers.SerializerMethodField(help_text="[x1, y1, x2, y2], padded, x2/y2 exclusive.")
    dtype = serializers.CharField()
    pixel_entropy = serializers.FloatField(allow_null=True)
    ciphertext_entropy = serializers.FloatField(allow_null=True)
    removal_pending = serializers.BooleanField(
        help_text="A technician asked for this region's removal; it stays filled until a "
        "doctor approves (POST /api/regions/{id}/removal/)."
    )
    removal_requested_at = serializers.DateTimeField(allow_null=True)

    class Meta:
        ref_name = "ScanRegion"

    def get_box(self, region: Region) -> list[int]:
        return list(region.box)


class ModelIdentityOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.CharField()
    sha256 = serializers.CharField()

    class Meta:
        ref_name = "ModelIdentity"


class ScanListOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    patient = serializers.CharField(source="patient_id")
    original_filename = serializers.CharField()
    format = serializers.CharField()
    size_bytes = serializers.IntegerField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    frames = serializers.IntegerField()
    status = serializers.CharField()
    failure_reason = serializers.CharField()
    needs_review = serializers.BooleanField()
    possible_duplicate = serializers.BooleanField()
    duplicate_of = serializers.IntegerField(source="duplicate_of_id", allow_null=True)
    region_count = serializers.IntegerField(default=None, allow_null=True)
    uploaded_by = serializers.CharField(
        source="uploaded_by.username", allow_null=True, default=None
    )
    created_at = serializers.DateTimeField()

    class Meta:
        ref_name = "ScanListItem"


class ScanDetailOutputSerializer(ScanListOutputSerializer):
    channels = serializers.IntegerField()
    pixel_dtype = serializers.CharField()
    key_id = serializers.CharField(help_text="Id of the key-encryption key wrapping the data key.")
    metrics = serializers.JSONField(
        help_text="Entropy per region (pixels vs ciphertext), SSIM and PSNR of redacted vs "
        "original, stage timings in ms, verification and duplicate results."
    )
    detection_ms = serializers.FloatField(allow_null=True)
    encryption_ms = serializers.FloatField(allow_null=True)
    total_ms = serializers.FloatField(allow_null=True)
    attempts = serializers.IntegerField()
    processed_at = serializers.DateTimeField(allow_null=True)
    updated_at = serializers.DateTimeField()
    study_uid = serializers.CharField(help_text="DICOM: the remapped (de-identified) Study UID.")
    series_uid = serializers.CharField(help_text="DICOM: the remapped Series UID.")
    deid_report = serializers.JSONField(
        help_text="DICOM: PS3.15 Annex E edition, options and counts (no identifying value)."
    )
    regions = RegionOutputSerializer(many=True)
    model = serializers.SerializerMethodField(
        help_text="The detector that found the regions: name, version (empty when its "
        "directory states none) and the SHA-256 of its weights file (empty for a detector "
        "without weights, named by its dotted path). Null for scans processed before models "
        "were recorded, or not processed yet."
    )

    class Meta:
        ref_name = "ScanDetail"

    @extend_schema_field(ModelIdentityOutputSerializer(allow_null=True))
    def get_model(self, scan: Scan) -> dict[str, str] | None:
        model = (scan.metrics or {}).get("model")
        return {k: model.get(k, "") for k in ("name", "version", "sha256")} if model else None


class ScanStatusOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["uploaded", "processing", "completed", "failed"])
    failure_reason = serializers.CharField()
    needs_review = serializers.BooleanField()
    possible_duplicate = serializers.BooleanField()
    updated_at = serializers.DateTimeField()

    class Meta:
        ref_name = "ScanStatus"


class FrameInputSerializer(serializers.Serializer):
    frame = serializers.IntegerField(
        required=False,
        default=0,
        min_value=0,
        help_text="Frame (slice) of a multi-frame image, 0-based; out of range is a 400 "
        "`invalid_frame`.",
    )

    class Meta:
        ref_name = "ScanFrameQuery"


_WINDOW_HELP = (
    "DICOM greyscale only: a CT preset (Hounsfield units), `file` (the file's own window or "
    "VOI LUT) or `auto` (0.5-99.5 percentiles). 400 `invalid_window` for JPEG/PNG, colour "
    "images, a preset on a non-CT image, a file without a window, or a bad wc/ww."
)


class WindowInputSerializer(FrameInputSerializer):
    window = serializers.ChoiceField(choices=WINDOW_NAMES, required=False, help_text=_WINDOW_HELP)
    wc = serializers.FloatField(required=False, help_text="Window centre (with ww).")
    ww = serializers.FloatField(required=False, help_text="Window width, at least 1 (with wc).")

    class Meta:
        ref_name = "ScanWindowQuery"


# --- Views ----------------------------------------------------------------------------------


class PatientScanListCreateApi(_PermissionsByMethod):
    permissions_by_method: ClassVar[dict[str, list[type[BasePermission]]]] = {
        "GET": [IsClinical],
        "POST": [IsTechnician],
    }
    parser_classes = [MultiPartParser]

    @property
    def pagination_class(self) -> Any:
        # The list is paginated; the upload answers with exactly the scans it created (and
        # the schema generator reads this attribute to decide which responses are pages).
        return api_settings.DEFAULT_PAGINATION_CLASS if self.request.method == "GET" else None

    class InputSerializer(serializers.Serializer):
        files = serializers.ListField(
            # Empty files reach the validator, which answers with the code `empty_file`.
            child=serializers.FileField(allow_empty_file=True, use_url=False),
            allow_empty=False,
            help_text="One or more JPEG, PNG or DICOM files, or zips of them (repeat it).",
        )

        class Meta:
            ref_name = "ScanUpload"

    @extend_schema(
        operation_id="patients_images_list",
        summary="List a patient's images",
        description=(
            "Roles: technician, doctor. Admins and users without a role get 403; an unknown "
            "patient is a 404. Newest first, paginated. Audited as patient_viewed (part "
            "images)."
        ),
        responses={
            200: ScanListOutputSerializer(many=True),
            **error_responses(401, 403, 404),
        },
    )
    def get(self, request: Request, patient_id: str) -> Response:
        scans = selectors.patient_scan_list(
            user=request.user, patient_id=patient_id, request=request
        )
        return _paginated(self, scans, ScanListOutputSerializer)

    @extend_schema(
        operation_id="patients_images_upload",
        summary="Upload images for a patient",
        description=(
            "Roles: technician only (doctors, admins and users without a role get 403). "
            "Multipart, field `files`, one or many; a file may be a zip of a series, whose "
            "every member is validated like a file (folders, hidden files, __MACOSX and "
            "path-traversal names are skipped). All or nothing: a refused file or member "
            "refuses the request (the message names the member) and nothing is stored. "
            "Refusals: 413 `file_too_large`, `archive_too_large` (the zip, or its members "
            "inflated: zip bombs), `decoded_too_large` (a file, or the request's files in all, "
            "decoding past UPLOAD_MAX_DECODED_BYTES; a deflated DICOM inflating past it); 400 "
            "`empty_file`, `unsupported_format`, `corrupt_image`, `too_many_pixels`, "
            "`dicom_too_deep`, `too_many_elements`, `inconsistent_image` (a compressed frame "
            "coded at another size than its header says), `invalid_archive`, `empty_archive`, "
            "`archive_too_many_files`. Files are processed one at a time. Processing (detection, "
            "encryption, redaction) runs after the upload commits; poll the status endpoint. "
            "With header `X-Medimg-Seal: <session key id>` (from /api/auth/key-exchange/) each "
            "file must be sealed under that key with associated data "
            '`transfer_aad("upload", patient=<patient id>, name=<file name>, nonce=<nonce>)`, '
            "the nonce being the request's `X-Medimg-Seal-Nonce` (32 hex, new per request: a "
            "replayed request is a 409 `seal_replayed`); a body that does not open is a 400 "
            "`invalid_sealed_body`. Audited as scan_uploaded."
        ),
        request={"multipart/form-data": InputSerializer},
        responses={
            201: ScanListOutputSerializer(many=True),
            **error_responses(400, 401, 403, 404, 413),
        },
    )
    def post(self, request: Request, patient_id: str) -> Response:
        patient = patient_lookup(user=request.user, patient_id=patient_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        scans = upload.scan_upload(
            patient=patient,
            uploads=serializer.validated_data["files"],
            uploaded_by=request.user,
            request=request,
            seal=session_key_for_request(request),
        )
        # Processing may already have run (in-process mode): show the current state.
        fresh = selectors.scans_by_ids(ids=[scan.id for scan in scans])
        return Response(
            ScanListOutputSerializer(fresh, many=True).data, status=status.HTTP_201_CREATED
        )


class ScanDetailApi(APIView):
    permission_classes = [IsClinical]

    @extend_schema(
        operation_id="images_retrieve",
        summary="An image: status, flags, regions summary, metrics",
        description=(
            "Roles: technician, doctor. Others get 403; an unknown id is a 404. "
            "Audited as scan_viewed."
        ),
        responses={200: ScanDetailOutputSerializer, **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, scan_id: int) -> Response:
        scan = selectors.scan_get_for_user(user=request.user, scan_id=scan_id, request=request)
        return Response(ScanDetailOutputSerializer(scan).data)


class ScanStatusApi(APIView):
    permission_classes = [IsClinical]

    @extend_schema(
        operation_id="images_status",
        summary="Processing status of an image",
        description=(
            "Roles: technician, doctor. uploaded -> processing -> completed | failed "
            "(failure_reason says why)."
        ),
        responses={200: ScanStatusOutputSerializer, **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, scan_id: int) -> Response:
        scan = selectors.scan_status_for_user(user=request.user, scan_id=scan_id)
        return Response(ScanStatusOutputSerializer(scan).data)


class _ScanDisplayApi(APIView):
    permission_classes = [IsClinical]
    content_negotiation_class = FirstRendererNegotiation
    kind: ClassVar[str]

    def get(self, request: Request, scan_id: int) -> HttpResponse:
        frame = frame_param(request.query_params)
        # Windows re-render the redacted pixels: the redacted view only (the grid is drawn).
        window = window_request(request.query_params) if self.kind == "redacted" else None
        scan, content = selectors.scan_display_png(
            user=request.user,
            scan_id=scan_id,
            kind=self.kind,
            frame=frame,
            request=request,
            window=window or WindowRequest(),
        )
        return binary_response(content, filename=f"scan-{scan.pk}-{self.kind}-{frame}.png")


class ScanRedactedApi(_ScanDisplayApi):
    kind = "redacted"

    @extend_schema(
        operation_id="images_redacted",
        summary="The redacted image (PNG)",
        description=(
            "Roles: technician, doctor. Every detected region is filled solid (not "
            "reversible). `?frame=` picks a frame of a multi-frame image. DICOM: `?window=` "
            "or `?wc=&ww=` re-render the redacted pixels (never the original) with that "
            "window, the regions filled again. 409 `scan_not_ready` before processing "
            "completes. Audited as scan_viewed."
        ),
        parameters=[WindowInputSerializer],
        responses={
            (200, "image/png"): PNG_RESPONSE,
            **error_responses(400, 401, 403, 404, 409),
        },
    )
    def get(self, request: Request, scan_id: int) -> HttpResponse:
        return super().get(request, scan_id)


class ScanGridApi(_ScanDisplayApi):
    kind = "grid"

    @extend_schema(
        operation_id="images_grid",
        summary="The grid image (PNG): numbered, labelled boxes over the redacted image",
        description=(
            "Roles: technician, doctor. `?frame=` picks a frame of a multi-frame image. 409 "
            "`scan_not_ready` before processing completes. Audited as scan_viewed."
        ),
        parameters=[FrameInputSerializer],
        responses={
            (200, "image/png"): PNG_RESPONSE,
            **error_responses(400, 401, 403, 404, 409),
        },
    )
    def get(self, request: Request, scan_id: int) -> HttpResponse:
        return super().get(request, scan_id)


class ScanRegionListApi(APIView):
    permission_classes = [IsClinical]

    @extend_schema(
        operation_id="images_regions_list",
        summary="Detected regions of an image (metadata only)",
        description=(
            "Roles: technician, doctor. Boxes, classes and confidences; never pixels or ciphertext."
        ),
        responses={200: RegionOutputSerializer(many=True), **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, scan_id: int) -> Response:
        scan = selectors.scan_status_for_user(user=request.user, scan_id=scan_id)
        regions = selectors.region_list_for_scan(scan=scan)
        return Response(RegionOutputSerializer(regions, many=True).data)


class RegionDecryptApi(AuditedRefusal):
    permission_classes = [IsDoctor]
    content_negotiation_class = FirstRendererNegotiation
    refused_action = Action.REGION_DECRYPTED
    target_type = "region"
    target_kwarg = "region_id"

    @extend_schema(
        operation_id="regions_decrypt",
        summary="One decrypted region (PNG)",
        description=(
            "Roles: doctor only; technicians, admins and users without a role get 403 and "
            "the refusal is audited (region_decrypted, outcome refused). Every decryption is "
            "audited; an integrity failure is a 500 `restore_failed`, audited as a failure. "
            "With headers `X-Medimg-Seal: <session key id>` and `X-Medimg-Seal-Nonce: <32 "
            "hex, new per request>` the PNG comes sealed under that session key "
            '(application/octet-stream, associated data `transfer_aad("region", '
            "nonce=<nonce>, region=<id>)`, the real type in X-Medimg-Content-Type); a nonce "
            "used before is a 409 `seal_replayed`. When MEDIMG_REQUIRE_SEALED_TRANSFERS is on "
            "(the production default) an API client without the headers gets 400 "
            "`seal_required`."
        ),
        responses={
            (200, "image/png"): PNG_RESPONSE,
            **error_responses(401, 403, 404, 409, 500),
        },
    )
    def get(self, request: Request, region_id: int) -> HttpResponse:
        # A bad, expired, replayed or (when required) missing seal is refused before anything
        # is decrypted.
        seal = session_key_for_request(request, api_clients_must_seal=True)
        region = selectors.region_get_for_user(user=request.user, region_id=region_id)
        rendered = restore.region_decrypt(region=region, actor=request.user, request=request)
        return _deliver(rendered, seal, purpose="region", region=region.pk)


class ScanRestoreApi(AuditedRefusal):
    permission_classes = [IsDoctor]
    content_negotiation_class = FirstRendererNegotiation
    parser_classes = [JSONParser]
    refused_action = Action.SCAN_RESTORED
    target_type = "scan"
    target_kwarg = "scan_id"

    class InputSerializer(serializers.Serializer):
        format = serializers.ChoiceField(
            choices=restore.RESTORE_FORMATS,
            default="png",
            help_text="png (default, lossless), jpeg (lossy re-encoding), or dicom (the "
            "original dataset bytes; DICOM uploads only).",
        )
        enhance = serializers.BooleanField(
            default=False, help_text="Apply CLAHE contrast enhancement (png/jpeg)."
        )
        frame = serializers.IntegerField(default=0, min_value=0)
        window = serializers.ChoiceField(
            choices=WINDOW_NAMES, required=False, help_text=_WINDOW_HELP
        )
        wc = serializers.FloatField(required=False, help_text="Window centre (with ww).")
        ww = serializers.FloatField(required=False, help_text="Window width (with wc).")
        reason = serializers.CharField(
            default="",
            allow_blank=True,
            max_length=500,
            help_text="Why the original is needed; recorded in the audit log. Required (400 "
            "`reason_required`) when MEDIMG_RESTORE_REASON_REQUIRED is on.",
        )

        class Meta:
            ref_name = "ScanRestoreRequest"

    @extend_schema(
        operation_id="images_restore",
        summary="Restore the original image",
        description=(
            "Roles: doctor only; technicians, admins and users without a role get 403 and the "
            "refusal is audited (scan_restored, outcome refused). Decrypts every region and "
            "pastes it back: pixel-identical to the upload (PNG and DICOM exact; a JPEG upload "
            "is returned as its decoded pixels, PNG by default). Any integrity failure "
            "(tampered region, nonce, tag, associated data or wrapped key) is a 500 with code "
            "`restore_failed` and an audit event with outcome failure, never a wrong image. "
            "409 `scan_not_ready` before processing completes. A POST with a JSON body (all "
            "fields optional), never a GET (405): a link or an image tag on another site "
            "cannot trigger a restore under a doctor's session (browser sessions also need "
            "the CSRF token), and the reason stays out of URLs and access logs. `frame` picks "
            "a frame; for DICOM, `window` or `wc` and `ww` window the png/jpeg rendering of "
            "the RESTORED pixels (400 `invalid_window` otherwise). With header "
            "`X-Medimg-Seal: <session key id>` (from /api/auth/key-exchange/) the body comes "
            "sealed under that session key: application/octet-stream, the image's type in "
            "X-Medimg-Content-Type, associated data "
            '`transfer_aad("restore", scan=<id>, format=<format>, frame=<frame>, '
            "enhance=<true|false>, nonce=<nonce>)`, where the nonce is the request's "
            "`X-Medimg-Seal-Nonce` (32 hex, new per request; one used before is a 409 "
            "`seal_replayed`). Unknown or expired keys are a 401 `session_key_expired`. When "
            "MEDIMG_REQUIRE_SEALED_TRANSFERS is on (the production default) an API client "
            "without the headers gets 400 `seal_required`; browser pages seal on their own."
        ),
        request=InputSerializer,
        responses={
            (200, "image/png"): PNG_RESPONSE,
            (200, "image/jpeg"): OpenApiResponse(OpenApiTypes.BINARY),
            (200, "application/dicom"): OpenApiResponse(OpenApiTypes.BINARY),
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY, description="Sealed under the X-Medimg-Seal session key."
            ),
            **error_responses(400, 401, 403, 404, 405, 409, 500),
        },
    )
    def post(self, request: Request, scan_id: int) -> HttpResponse:
        body = request.data
        if not isinstance(body, Mapping):
            raise errors.invalid("The body must be a JSON object.")
        # Frame and window have their own codes (invalid_frame, invalid_window); the rest
        # goes through the serializer.
        frame = frame_param(body)
        window = window_request(body)
        rest = {k: v for k, v in body.items() if k not in ("frame", "window", "wc", "ww")}
        params = self.InputSerializer(data=rest)
        params.is_valid(raise_exception=True)
        query = {**params.validated_data, "frame": frame}
        # A bad, expired, replayed or (when required) missing seal is refused before anything
        # is decrypted.
        seal = session_key_for_request(request, api_clients_must_seal=True)
        scan = selectors.scan_for_restore(user=request.user, scan_id=scan_id)
        rendered = restore.scan_restore(
            scan=scan,
            actor=request.user,
            fmt=query["format"],
            enhance=query["enhance"],
            frame=query["frame"],
            request=request,
            window=window,
            reason=query["reason"],
        )
        return _deliver(
            rendered,
            seal,
            purpose="restore",
            scan=scan.pk,
            format=query["format"],
            frame=query["frame"],
            enhance=query["enhance"],
        )

    # DRF calls it with its Request (Django's View types it with HttpRequest).
    def http_method_not_allowed(self, request: Request, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if request.method == "GET":
            # Restore used to be a GET; say what changed rather than a bare 405.
            raise MethodNotAllowed(
                "GET",
                detail="Restore is a POST with its options in a JSON body (format, enhance, "
                "frame, window, wc, ww, reason), so that a link cannot trigger it.",
            )
        return super().http_method_not_allowed(request, *args, **kwargs)


class ScanSimilarApi(APIView):
    permission_classes = [IsClinical]

    class OutputSerializer(serializers.Serializer):
        distance = serializers.IntegerField(help_text="Hamming distance of perceptual hashes.")
        scan = ScanListOutputSerializer()

        class Meta:
            ref_name = "ScanSimilar"

    @extend_schema(
        operation_id="images_similar",
        summary="Images nearest to this one by fingerprint",
        description=(
            "Roles: technician, doctor. Only scans the caller may see; nearest first. Audited "
            "as scan_viewed (view similar) with the ids of the scans listed."
        ),
        responses={200: OutputSerializer(many=True), **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, scan_id: int) -> Response:
        scan = selectors.scan_status_for_user(user=request.user, scan_id=scan_id)
        similar = selectors.scan_similar(user=request.user, scan=scan, request=request)
        return Response(self.OutputSerializer(similar, many=True).data)


class TimingOutputSerializer(serializers.Serializer):
    median = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)

    class Meta:
        ref_name = "ProcessingTiming"


class RegionsPerImageOutputSerializer(serializers.Serializer):
    mean = serializers.FloatField(allow_null=True)
    median = serializers.FloatField(allow_null=True)
    max = serializers.IntegerField(allow_null=True)

    class Meta:
        ref_name = "RegionsPerImage"


class ProcessingStatsApi(APIView):
    permission_classes = [IsAdmin]

    class InputSerializer(serializers.Serializer):
        since = serializers.DateTimeField(required=False, help_text="Uploaded at or after.")
        until = serializers.DateTimeField(required=False, help_text="Uploaded before.")

        class Meta:
            ref_name = "ProcessingStatsQuery"

    class OutputSerializer(serializers.Serializer):
        since = serializers.DateTimeField(allow_null=True)
        until = serializers.DateTimeField(allow_null=True)
        total = serializers.IntegerField()
        by_status = serializers.DictField(child=serializers.IntegerField())
        failure_reasons = serializers.DictField(child=serializers.IntegerField())
        needs_review = serializers.IntegerField()
        possible_duplicates = serializers.IntegerField()
        total_ms = TimingOutputSerializer()
        detection_ms = TimingOutputSerializer()
        encryption_ms = TimingOutputSerializer()
        regions_per_image = RegionsPerImageOutputSerializer()
        classes = serializers.DictField(child=serializers.IntegerField())
        duplicate_max_distance = serializers.IntegerField()

        class Meta:
            ref_name = "ProcessingStats"

    @extend_schema(
        operation_id="stats_processing",
        summary="Processing statistics",
        description=(
            "Roles: admin only (aggregates, no patient data). Counts by status, median and "
            "p95 times, regions per image and detected classes, for uploads in [since, until)."
        ),
        parameters=[InputSerializer],
        responses={200: OutputSerializer, **error_responses(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        stats = selectors.processing_stats(
            since=params.validated_data.get("since"), until=params.validated_data.get("until")
        )
        return Response(self.OutputSerializer(stats).data)
