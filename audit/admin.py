"""Read-only audit log in Django admin: nobody adds, changes or deletes an event here.

Events are read pseudonymised (AuditEventQuerySet.pseudonymised): a patient is shown by its
reference, a search term by its keyed hash, also for events written before pseudonyms. The
search box matches usernames, actions and target types, and a target id only where that
cannot tell a hospital id apart: a non-patient target, or a reference in an event written with
pseudonyms. (Matching the stored target id of an older event would say whether a typed
hospital id has events. Investigators use audit.services.audit_find_patient_events.)
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from audit.models import AuditEvent
from audit.pseudonyms import MARK_KEY, MARK_VERSION, PATIENT_TARGET


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
    search_fields = ["actor_username", "action", "target_type"]
    date_hierarchy = "created_at"
    ordering = ["-sequence"]
    list_per_page = 100
    # Counting millions of rows on every page is slow; the sequence says how many there are.
    show_full_result_count = False
    actions = None
    readonly_fields = [field.name for field in AuditEvent._meta.fields]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        return super().get_queryset(request).pseudonymised()  # type: ignore[attr-defined]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AuditEvent], search_term: str
    ) -> tuple[QuerySet[AuditEvent], bool]:
        results, duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term:
            by_target = Q(target_id=term) & (
                ~Q(target_type=PATIENT_TARGET) | Q(**{f"details__{MARK_KEY}": MARK_VERSION})
            )
            results = results | queryset.filter(by_target)
        return results, duplicates

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
