"""Mounted at /api/audit/. Admins only."""

from django.urls import path

from audit import apis

urlpatterns = [
    path("events/", apis.AuditEventListApi.as_view(), name="audit-events"),
    path("verify/", apis.AuditVerifyApi.as_view(), name="audit-verify"),
    path("export/", apis.AuditExportApi.as_view(), name="audit-export"),
]
