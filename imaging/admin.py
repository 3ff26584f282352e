"""Admin: operations view of scans (status, failures, timings), never images or keys.

Admins run the system; they do not see patient data. The list shows no patient, file name,
regions or key material, and nothing can be edited here: the only action re-queues failed
or stuck scans for processing.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

import imaging.admin_segmentation  # noqa: F401  (registers SegmentationModel)
from imaging.models import Scan, ScanStatus
from imaging.services.processing import scans_reprocess


@admin.register(Scan)
class ScanAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "format",
        "status",
        "failure_reason",
        "needs_review",
        "possible_duplicate",
        "frames",
        "total_ms",
        "attempts",
        "created_at",
    )
    list_filter = ("status", "format", "failure_reason", "needs_review", "possible_duplicate")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    fields = (
        "id",
        "format",
        "size_bytes",
        "width",
        "height",
        "frames",
        "status",
        "failure_reason",
        "needs_review",
        "possible_duplicate",
        "key_id",
        "detection_ms",
        "encryption_ms",
        "total_ms",
        "attempts",
        "created_at",
        "updated_at",
        "processed_at",
    )
    readonly_fields = fields
    actions = ["requeue"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Viewing only; the form is read-only and has no save button.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Re-run processing for the selected failed or stuck scans")
    def requeue(self, request: HttpRequest, queryset: QuerySet[Scan]) -> None:
        eligible = queryset.exclude(status=ScanStatus.COMPLETED)
        ids = scans_reprocess(
            scan_ids=list(eligible.values_list("id", flat=True)), actor=request.user
        )
        self.message_user(request, f"{len(ids)} scan(s) queued again.", messages.SUCCESS)
