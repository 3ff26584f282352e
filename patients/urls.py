"""Mounted at /api/patients/. `str` (anything but a slash) matches the hospital id rules."""

from django.urls import path

from patients.apis import PatientDetailApi, PatientListCreateApi, PatientNoteListCreateApi

urlpatterns = [
    path("", PatientListCreateApi.as_view(), name="patient-list"),
    path("<str:patient_id>/", PatientDetailApi.as_view(), name="patient-detail"),
    path("<str:patient_id>/notes/", PatientNoteListCreateApi.as_view(), name="patient-notes"),
]
