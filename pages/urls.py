"""Browser pages: the home page, clinical pages, and the admins' statistics and audit log (the JSON
APIs
they call live under /api/; Django admin is under /admin/)."""

from django.urls import path

from pages.views.audit import (
    AuditLogExportView,
    AuditLogPageView,
    AuditPatientSearchPageView,
)
from pages.views.corrections import PatientEditPageView, ScanMovePageView
from pages.views.emergency import EmergencyAccessEndView, EmergencyAccessPageView
from pages.views.erasure import ErasurePageView
from pages.views.home import HomeView
from pages.views.patient_access import PatientAccessPageView
from pages.views.patients import PatientPageView
from pages.views.qc import QcOutliersPageView, ScanClustersPageView
from pages.views.scans import ScanPageView
from pages.views.stats import StatisticsPageView
from pages.views.volume3d import Volume3dPageView

urlpatterns = [
    path("", HomeView.as_view(), name="home"),
    path("patients/<str:patient_id>/", PatientPageView.as_view(), name="patient-page"),
    path(
        "patients/<str:patient_id>/access/",
        PatientAccessPageView.as_view(),
        name="patient-access-page",
    ),
    path(
        "patients/<str:patient_id>/edit/", PatientEditPageView.as_view(), name="patient-edit-page"
    ),
    path("scans/<int:scan_id>/", ScanPageView.as_view(), name="scan-page"),
    path("scans/<int:scan_id>/move/", ScanMovePageView.as_view(), name="scan-move-page"),
    path(
        "segmentations/<int:segmentation_id>/3d/",
        Volume3dPageView.as_view(),
        name="segmentation-3d-page",
    ),
    # Emergency (break-glass) access: pages/views/emergency.py.
    path("emergency-access/", EmergencyAccessPageView.as_view(), name="emergency-access-page"),
    path(
        "emergency-access/end/",
        EmergencyAccessEndView.as_view(),
        name="emergency-access-end-page",
    ),
    path(
        "scans/<int:scan_id>/clusters/",
        ScanClustersPageView.as_view(),
        name="qc-clusters-page",
    ),
    path("qc/", QcOutliersPageView.as_view(), name="qc-page"),
    path("manage/statistics/", StatisticsPageView.as_view(), name="statistics-page"),
    path("manage/audit/", AuditLogPageView.as_view(), name="audit-log-page"),
    path("manage/audit/export/", AuditLogExportView.as_view(), name="audit-log-export"),
    path("manage/erasure/", ErasurePageView.as_view(), name="erasure-page"),
    path(
        "manage/audit/patient/",
        AuditPatientSearchPageView.as_view(),
        name="audit-patient-search-page",
    ),
]
