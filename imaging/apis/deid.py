"""API for de-identified DICOM: a doctor's view of the patient's identity, and exports.

All doctor only: technicians, admins and users without a role get 403, and the refusal is
audited under the endpoint's own action. Errors are `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import IsDoctor
from audit.models import Action
from imaging.apis.common import AuditedRefusal, FirstRendererNegotiation, binary_response
from imaging.selectors import scans as selectors
from imaging.services import deid as deid_services
from medimg.api import error_responses
from patients.selectors import patient_lookup

_ZIP = OpenApiResponse(OpenApiTypes.BINARY, description="A zip of de-identified files.")
_ERRORS = error_responses(400, 401, 403, 404, 409, 500)


def _streamed(stream: deid_services.StreamedZip) -> StreamingHttpResponse:
    """A large download sent as it is made: one file of the zip in memory at a time."""
    response = StreamingHttpResponse(stream.chunks, content_type=stream.content_type)
    response["Content-Disposition"] = f'attachment; filename="{stream.filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _attachment(response: HttpResponse) -> HttpResponse:
    response["Content-Disposition"] = response["Content-Disposition"].replace(
        "inline", "attachment", 1
    )
    return response


class IdentityValueSerializer(serializers.Serializer):
    path = serializers.CharField(help_text='Element path, e.g. "00100010" or "...[0].0008...".')
    keyword = serializers.CharField()
    value = serializers.CharField(help_text="The original value as text.")

    class Meta:
        ref_name = "IdentityValue"


class IdentityOutputSerializer(serializers.Serializer):
    scan = serializers.IntegerField()
    patient = serializers.DictField(
        child=serializers.CharField(),
        help_text="PatientName, PatientID, PatientBirthDate... as the header had them.",
    )
    pseudonym = serializers.CharField(help_text="The Patient ID the de-identified file carries.")
    date_shift_days = serializers.IntegerField(
        help_text="Days added to every date of the de-identified file (negative: earlier)."
    )
    values = IdentityValueSerializer(many=True)

    class Meta:
        ref_name = "ScanIdentity"


class ScanIdentityApi(AuditedRefusal):
    permission_classes = [IsDoctor]
    refused_action = Action.SCAN_RESTORED
    target_type = "scan"
    target_kwarg = "scan_id"

    @extend_schema(
        operation_id="images_identity",
        summary="The patient's identity from the original DICOM header",
        description=(
            "Roles: doctor only. The header values DICOM de-identification removed or changed, "
            "decrypted (they are kept under the scan's data key). Audited as scan_restored with "
            "details part=identity, refusals and integrity failures included. 400 "
            "`invalid_format` for JPEG/PNG scans, 409 `scan_not_ready` before processing ends."
        ),
        responses={200: IdentityOutputSerializer, **_ERRORS},
    )
    def get(self, request: Request, scan_id: int) -> Response:
        scan = selectors.scan_for_restore(user=request.user, scan_id=scan_id)
        identity = deid_services.scan_identity(scan=scan, actor=request.user, request=request)
        response = Response(IdentityOutputSerializer(identity).data)
        response["Cache-Control"] = "no-store, private"
        return response


class ScanExportApi(AuditedRefusal):
    permission_classes = [IsDoctor]
    content_negotiation_class = FirstRendererNegotiation
    refused_action = Action.SCAN_VIEWED
    target_type = "scan"
    target_kwarg = "scan_id"

    class InputSerializer(serializers.Serializer):
        format = serializers.ChoiceField(choices=deid_services.EXPORT_FORMATS, default="dicom")

        class Meta:
            ref_name = "ScanExportQuery"

    @extend_schema(
        operation_id="images_export",
        summary="The de-identified DICOM, for research",
        description=(
            "Roles: doctor only. The stored de-identified dataset: redacted pixels and the "
            "header per DICOM PS3.15 Annex E (see docs/deidentification.md). Audited as "
            "scan_viewed with details view=export. 409 `needs_review` while the detector's "
            "flag is not cleared by a technician's review."
        ),
        parameters=[InputSerializer],
        responses={(200, "application/dicom"): OpenApiResponse(OpenApiTypes.BINARY), **_ERRORS},
    )
    def get(self, request: Request, scan_id: int) -> HttpResponse:
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        scan = selectors.scan_for_restore(user=request.user, scan_id=scan_id)
        rendered = deid_services.scan_export(
            scan=scan, actor=request.user, fmt=params.validated_data["format"], request=request
        )
        return _attachment(binary_response(rendered))


class PatientExportApi(AuditedRefusal):
    permission_classes = [IsDoctor]
    content_negotiation_class = FirstRendererNegotiation
    refused_action = Action.PATIENT_VIEWED
    target_type = "patient"
    target_kwarg = "patient_id"

    @extend_schema(
        operation_id="patients_export",
        summary="A zip of the patient's de-identified scans",
        description=(
            "Roles: doctor only. De-identified DICOM files under <study uid>/<series uid>/ "
            "(remapped UIDs), redacted PNG frames for JPEG/PNG scans, and manifest.json (counts, "
            "UIDs, scans left out and why). Audited as patient_viewed with details view=export. "
            "409 `nothing_to_export` when no scan is processed and cleared."
        ),
        responses={(200, "application/zip"): _ZIP, **_ERRORS},
    )
    def get(self, request: Request, patient_id: str) -> StreamingHttpResponse:
        patient = patient_lookup(user=request.user, patient_id=patient_id)
        scans = deid_services.scans_for_patient_export(user=request.user, patient=patient)
        stream = deid_services.patient_export(
            patient=patient, scans=scans, actor=request.user, request=request
        )
        return _streamed(stream)


class StudyExportApi(AuditedRefusal):
    permission_classes = [IsDoctor]
    content_negotiation_class = FirstRendererNegotiation
    refused_action = Action.SCAN_VIEWED
    target_type = "study"
    target_kwarg = "study_uid"

    @extend_schema(
        operation_id="studies_export",
        summary="A zip of one study's de-identified scans",
        description=(
            "Roles: doctor only. `study_uid` is the remapped (de-identified) Study Instance "
            "UID shown on the scans. Only that patient's scans of the study: a UID shared "
            "with another patient's scans (a merged or mislabelled study) never mixes them "
            "into one zip. Same contents as the patient export; 404 for an unknown patient or "
            "a study with no scan of that patient you may see. Audited as scan_viewed (target "
            "study) with details view=export and the patient."
        ),
        responses={(200, "application/zip"): _ZIP, **_ERRORS},
    )
    def get(self, request: Request, patient_id: str, study_uid: str) -> StreamingHttpResponse:
        patient = patient_lookup(user=request.user, patient_id=patient_id)
        scans = deid_services.scans_for_study_export(
            user=request.user, patient=patient, study_uid=study_uid
        )
        stream = deid_services.study_export(
            patient=patient, study_uid=study_uid, scans=scans, actor=request.user, request=request
        )
        return _streamed(stream)
