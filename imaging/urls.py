"""Mounted at /api/. Patient ids are `str` (anything but a slash), as in patients.urls."""

from django.urls import path

from imaging import apis

urlpatterns = [
    path(
        "patients/<str:patient_id>/images/",
        apis.PatientScanListCreateApi.as_view(),
        name="patient-images",
    ),
    path("images/<int:scan_id>/", apis.ScanDetailApi.as_view(), name="image-detail"),
    path("images/<int:scan_id>/status/", apis.ScanStatusApi.as_view(), name="image-status"),
    path("images/<int:scan_id>/redacted/", apis.ScanRedactedApi.as_view(), name="image-redacted"),
    path("images/<int:scan_id>/grid/", apis.ScanGridApi.as_view(), name="image-grid"),
    path("images/<int:scan_id>/regions/", apis.ScanRegionListApi.as_view(), name="image-regions"),
    path("images/<int:scan_id>/restore/", apis.ScanRestoreApi.as_view(), name="image-restore"),
    path("images/<int:scan_id>/similar/", apis.ScanSimilarApi.as_view(), name="image-similar"),
    path("regions/<int:region_id>/", apis.RegionDecryptApi.as_view(), name="region-decrypt"),
    path("stats/processing/", apis.ProcessingStatsApi.as_view(), name="stats-processing"),
]
