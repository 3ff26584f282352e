"""Browser pages: clinical pages, and the admins' statistics and audit log (the JSON APIs
they call live under /api/; Django admin is under /admin/)."""

from django.urls import path

from audit.views import AuditLogPageView
from imaging.views import ScanPageView
from imaging.views_qc import QcOutliersPageView, ScanClustersPageView
from imaging.views_stats import StatisticsPageView
from patients.views import PatientPageView

urlpatterns = [
    path("patients/<str:patient_id>/", PatientPageView.as_view(), name="patient-page"),
    path("scans/<int:scan_id>/", ScanPageView.as_view(), name="scan-page"),
    path(
        "scans/<int:scan_id>/clusters/",
        ScanClustersPageView.as_view(),
        name="qc-clusters-page",
    ),
    path("qc/", QcOutliersPageView.as_view(), name="qc-page"),
    path("manage/statistics/", StatisticsPageView.as_view(), name="statistics-page"),
    path("manage/audit/", AuditLogPageView.as_view(), name="audit-log-page"),
]
