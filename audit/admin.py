"""Read-only audit log in Django admin: nobody adds, changes or deletes an event here."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = [
        "sequence",
        "created_at",
        "actor_username",
        "role",
        "action",
        "target_type",
        "target_id",
        "outcome",
        "ip",
    ]
    list_filter = ["action", "outcome", "role", "created_at"]
    search_fields = ["actor_username", "action", "target_type", "target_id"]
    date_hierarchy = "created_at"
    ordering = ["-sequence"]
    list_per_page = 100
    # Counting millions of rows on every page is slow; the sequence says how many there are.
    show_full_result_count = False
    actions = None
    readonly_fields = [field.name for field in AuditEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
