"""Admin: operations view of scans (status, failures, timings), never images or keys.

Admins run the system; they do not see patient data. The list shows no patient, file name,
regions or key material, and nothing can be edited here: the only action re-queues failed
or stuck scans for processing.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse

import imaging.admin_classification  # noqa: F401  (registers ClassifierModel)
import imaging.admin_segmentation  # noqa: F401  (registers SegmentationModel)
from imaging.models import Scan, ScannerRule, ScanStatus
from imaging.selectors.scanner_rules import rule_suggestions
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


@admin.register(ScannerRule)
class ScannerRuleAdmin(admin.ModelAdmin):
    """Per-scanner rules: fixed boxes always redacted on one scanner model's images. The list
    shows the rules that technicians' hand-added boxes suggest, each with a link that opens
    the add form filled in; saving is an ordinary admin change (audited as admin_change)."""

    list_display = ("manufacturer", "model_name", "size", "box_count", "active", "updated_at")
    list_filter = ("active", "manufacturer")
    search_fields = ("manufacturer", "model_name", "note")
    fields = (
        "manufacturer",
        "model_name",
        "width",
        "height",
        "boxes",
        "note",
        "active",
        "created_by",
        "created_at",
        "updated_at",
    )
    readonly_fields = ("created_by", "created_at", "updated_at")
    change_list_template = "admin/imaging/scannerrule/change_list.html"

    @admin.display(description="image size")
    def size(self, rule: ScannerRule) -> str:
        return f"{rule.width} x {rule.height}" if rule.width else "any"

    @admin.display(description="boxes")
    def box_count(self, rule: ScannerRule) -> int:
        return len(rule.boxes)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        initial = super().get_changeform_initial_data(request)
        if isinstance(initial.get("boxes"), str):
            # A suggestion's link carries the box as JSON text.
            try:
                initial["boxes"] = json.loads(str(initial["boxes"]))
            except ValueError:
                initial.pop("boxes")
        return initial

    def save_model(self, request: HttpRequest, obj: ScannerRule, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        add_url = reverse("admin:imaging_scannerrule_add")
        suggestions = [
            {
                "suggestion": s,
                "add_url": add_url
                + "?"
                + urlencode(
                    {
                        "manufacturer": s.manufacturer,
                        "model_name": s.model_name,
                        "width": s.width,
                        "height": s.height,
                        "boxes": json.dumps([list(s.box)]),
                        "note": f"Suggested: added by hand on {s.scans} scans",
                    }
                ),
            }
            for s in rule_suggestions()
        ]
        extra_context = {
            **(extra_context or {}),
            "rule_suggestions": suggestions,
            "suggest_after": settings.SCANNER_RULE_SUGGEST_AFTER,
        }
        return super().changelist_view(request, extra_context=extra_context)
