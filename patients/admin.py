"""Patients in Django admin: counts and dates only, never patient data.

An admin without a clinical role sees no patient data, and Django admin is the admins'
tool, so this page is deliberately thin. What an admin can use it for: how many records
there are, when they were created and changed, by which staff account, and how many
doctors' notes each has (to answer "is the system being used?" or "who created records
yesterday?") without learning who any patient is.

- Each row is named by `Patient.reference`, a keyed pseudonym of the hospital id, never the id,
  name, age or note. A technician can read the same reference out to an admin for support.
- Only the list exists: no add, change, view, delete or history pages (their URLs are not
  even routed), no row links, no bulk actions, no search box.
- The list accepts no filters from the query string except the creation date drill-down.
  Django admin otherwise honours `?name__startswith=A` on any field, and the row count that
  comes back would let an admin guess names and ids letter by letter.
- Doctors' notes (PatientNote) are not registered at all.

Emergency (break-glass) grants have their review list here too (BreakGlassGrantAdmin): who,
which patient by reference, why, when, and whether an admin has reviewed it, with the
"mark reviewed" action (patients.emergency.emergency_access_review, audited).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import URLPattern, path
from django.utils import timezone

from patients.emergency import emergency_access_review
from patients.models import BreakGlassGrant, Patient


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ("reference", "created_at", "updated_at", "created_by", "note_count")
    list_display_links = None
    list_select_related = ("created_by",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    actions = None
    show_full_result_count = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[Patient]:
        return super().get_queryset(request).annotate(note_count=Count("notes"))

    @admin.display(description="record reference")
    def reference(self, obj: Patient) -> str:
        return obj.reference

    @admin.display(description="doctors' notes", ordering="note_count")
    def note_count(self, obj: Patient) -> int:
        return int(obj.note_count)  # type: ignore[attr-defined]

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # Only the date drill-down; see the module docstring for why.
        return lookup.startswith("created_at__")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Patient], search_term: str
    ) -> tuple[QuerySet[Patient], bool]:
        # No search_fields, and no subclass or mixin may turn search back on by accident.
        return queryset, False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        # The object pages would show the record (and its id in the URL and breadcrumbs).
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "",
                self.admin_site.admin_view(self.changelist_view),
                name="{}_{}_changelist".format(*info),
            )
        ]


class ReviewedFilter(admin.SimpleListFilter):
    title = "reviewed"
    parameter_name = "reviewed"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "Not yet reviewed"), ("yes", "Reviewed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "no":
            return queryset.filter(reviewed_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(reviewed_at__isnull=False)
        return queryset


@admin.register(BreakGlassGrant)
class BreakGlassGrantAdmin(admin.ModelAdmin):
    """The review list of emergency accesses. The patient appears as its reference only (the
    reason was scrubbed of the patient's id and name when the grant was made); the audit log
    finds every event of the access by that reference and `break_glass: <grant id>`."""

    list_display = (
        "id",
        "user",
        "patient_reference",
        "reason",
        "created_at",
        "expires_at",
        "state",
        "reviewed_by",
        "reviewed_at",
    )
    list_display_links = None
    list_select_related = ("user", "reviewed_by")
    list_filter = (ReviewedFilter,)
    ordering = ("-created_at",)
    actions = ["mark_reviewed"]

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        title = {"title": "Emergency accesses: review each one"}
        return super().changelist_view(request, {**(extra_context or {}), **title})

    @admin.display(description="patient reference")
    def patient_reference(self, obj: BreakGlassGrant) -> str:
        # From the id on the row: the patient itself is never loaded for an admin page.
        return Patient(id=obj.patient_id).reference

    @admin.display(description="state")
    def state(self, obj: BreakGlassGrant) -> str:
        if obj.ended_at is not None:
            return f"ended early {timezone.localtime(obj.ended_at):%Y-%m-%d %H:%M}"
        return "active" if obj.is_active else "expired"

    @admin.action(description="Mark the selected emergency accesses reviewed")
    def mark_reviewed(self, request: HttpRequest, queryset: QuerySet[BreakGlassGrant]) -> None:
        count = emergency_access_review(grants=queryset, reviewer=request.user, request=request)
        self.message_user(
            request,
            f"{count} emergency access{'es' if count != 1 else ''} marked reviewed.",
            messages.SUCCESS,
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[BreakGlassGrant], search_term: str
    ) -> tuple[QuerySet[BreakGlassGrant], bool]:
        return queryset, False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        # No object pages: the list is the review tool (and an object page's URL and
        # breadcrumbs would name the patient through str()).
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "",
                self.admin_site.admin_view(self.changelist_view),
                name="{}_{}_changelist".format(*info),
            )
        ]
