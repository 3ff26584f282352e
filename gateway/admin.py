"""Admin: peers and destinations (editable), sends (read-only, with a retry action).

No patient data: sends name the scan by id; DicomInstance is not registered (its JSON holds
de-identified header values, but admins see no clinical data at all).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from gateway.health import gateway_health
from gateway.models import DicomPeer, ForwardDestination, ForwardSend, SendStatus
from gateway.tasks import forward_instance


@admin.register(DicomPeer)
class DicomPeerAdmin(admin.ModelAdmin):
    list_display = (
        "ae_title",
        "host",
        "port",
        "enabled",
        "upload_user",
        "department",
        "last_association_at",
    )
    list_filter = ("enabled", "department")
    search_fields = ("ae_title", "host")
    readonly_fields = ("last_association_at", "created_at")


@admin.register(ForwardDestination)
class ForwardDestinationAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "ae_title", "host", "port", "url", "enabled")
    list_filter = ("kind", "enabled")


@admin.register(ForwardSend)
class ForwardSendAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "scan_id",
        "destination",
        "status",
        "attempts",
        "last_error",
        "next_attempt_at",
        "sent_at",
    )
    list_filter = ("status", "destination")
    fields = list_display
    readonly_fields = fields
    actions = ["retry_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        """The list, under the gateway's health: last association, waiting and failed sends."""
        extra_context = {**(extra_context or {}), "gateway_health": gateway_health()}
        return super().changelist_view(request, extra_context=extra_context)

    @admin.action(description="Retry the selected failed or waiting sends now")
    def retry_now(self, request: HttpRequest, queryset: QuerySet[ForwardSend]) -> None:
        waiting = queryset.filter(status__in=[SendStatus.FAILED, SendStatus.RETRYING])
        ids = list(waiting.values_list("pk", flat=True))
        waiting.update(status=SendStatus.RETRYING, next_attempt_at=None)
        for send_id in ids:
            forward_instance.delay(send_id=send_id)
        messages.info(request, f"{len(ids)} send(s) queued.")
