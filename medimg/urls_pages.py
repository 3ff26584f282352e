"""Clinical browser pages (the JSON APIs they call live under /api/)."""

from django.urls import path

from imaging.views import ScanPageView
from patients.views import PatientPageView

urlpatterns = [
    path("patients/<str:patient_id>/", PatientPageView.as_view(), name="patient-page"),
    path("scans/<int:scan_id>/", ScanPageView.as_view(), name="scan-page"),
]
