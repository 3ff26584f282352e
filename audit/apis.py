"""Audit API for administrators: the event list, the chain check and the signed export."""

from __future__ import annotations

from typing import Any, cast

from django.http import FileResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import renderers, serializers
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from accounts.permissions import IsAdmin
from audit.chain import HASHED_FIELDS
from audit.models import Action, AuditEvent, Outcome
from audit.selectors import audit_chain_verify, audit_event_list
from audit.services import audit_export
from medimg.api import error_responses


class JSONLinesRenderer(renderers.BaseRenderer):
    """Lets a client ask for the export with `Accept: application/x-ndjson`."""

    media_type = "application/x-ndjson"
    format = "jsonl"
    charset = None

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        # Only errors reach a renderer here (the export itself is a file response).
        return renderers.JSONRenderer().render(data) + b"\n"


class _DateRangeSerializer(serializers.Serializer):
    since = serializers.DateField(required=False, help_text="First UTC day, YYYY-MM-DD.")
    until = serializers.DateField(required=False, help_text="Last UTC day (included), YYYY-MM-DD.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        since, until = attrs.get("since"), attrs.get("until")
        if since and until and since > until:
            raise serializers.ValidationError({"until": "must not be before since"})
        return attrs


class AuditEventListApi(APIView):
    permission_classes = [IsAdmin]
    # DRF imports the class from its dotted path in the settings (the stubs type the raw value).
    pagination_class = cast("type[BasePagination]", api_settings.DEFAULT_PAGINATION_CLASS)

    class FilterSerializer(_DateRangeSerializer):
        action = serializers.ChoiceField(choices=Action.choices, required=False)
        actor = serializers.CharField(
            required=False, max_length=150, help_text="Username as recorded in the log."
        )
        outcome = serializers.ChoiceField(choices=Outcome.choices, required=False)

    # Component names must be unique in the schema; every API's nested serializer is "Output".
    @extend_schema_serializer(component_name="AuditEvent")
    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = AuditEvent
            # Exactly what the hash covers, then the hash: a client can recompute it.
            fields = [*HASHED_FIELDS, "hash"]

    @extend_schema(
        operation_id="audit_events_list",
        summary="List audit events",
        description=(
            "Admins only (others: 403; anonymous: 401). Newest first, paginated; filter by "
            "`action`, `actor` (username), `outcome` and whole UTC days `since`/`until`."
        ),
        parameters=[FilterSerializer],
        responses={200: OutputSerializer(many=True), **error_responses(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        events = audit_event_list(**filters.validated_data)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(events, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


class AuditVerifyApi(APIView):
    permission_classes = [IsAdmin]

    @extend_schema_serializer(component_name="AuditChainReport")
    class OutputSerializer(serializers.Serializer):
        ok = serializers.BooleanField()
        events = serializers.IntegerField(help_text="Events checked and found good.")
        first_bad = serializers.IntegerField(
            allow_null=True, help_text="First bad sequence number, or null when intact."
        )
        reason = serializers.CharField(
            allow_null=True,
            help_text=(
                "edited, missing, out_of_order, link_broken, truncated, anchor_invalid, "
                "anchor_mismatch, unanchored, anchor_missing; null when intact."
            ),
        )
        message = serializers.CharField()

    @extend_schema(
        operation_id="audit_verify",
        summary="Check the audit chain",
        description=(
            "Admins only (others: 403; anonymous: 401). Walks the whole chain against its "
            "signed head, like `manage.py audit_verify`, and names the first bad sequence."
        ),
        responses={200: OutputSerializer, **error_responses(401, 403)},
    )
    def get(self, request: Request) -> Response:
        report = audit_chain_verify()
        return Response(self.OutputSerializer(report.as_dict()).data)


class AuditExportApi(APIView):
    permission_classes = [IsAdmin]
    renderer_classes = [renderers.JSONRenderer, JSONLinesRenderer]

    class FilterSerializer(_DateRangeSerializer):
        pass

    @extend_schema(
        operation_id="audit_export",
        summary="Download a signed audit export",
        description=(
            "Admins only (others: 403; anonymous: 401). The events of whole UTC days "
            "`since`..`until` (both optional) as JSON Lines, one canonical event per line, "
            'then a `{"signature": ...}` line (Ed25519). Check it offline with '
            "`manage.py audit_verify --export FILE [--public-key HEX]`. Audited as "
            "audit_exported (after the file is signed, so never inside it)."
        ),
        parameters=[FilterSerializer],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(
                response=OpenApiTypes.BINARY, description="The signed JSON Lines export."
            ),
            **error_responses(400, 401, 403),
        },
    )
    def get(self, request: Request) -> FileResponse:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        export = audit_export(**filters.validated_data, actor=request.user, request=request)
        name = f"audit-export-{timezone.now():%Y%m%dT%H%M%SZ}.jsonl"
        response = FileResponse(
            export.file, as_attachment=True, filename=name, content_type="application/x-ndjson"
        )
        response["X-Content-SHA256"] = export.sha256
        response["Cache-Control"] = "no-store"
        return response
