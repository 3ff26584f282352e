"""Mounted at /api/patients/ (the list itself, GET and POST, is imaging.apis.patients,
routed in imaging/urls.py). `str` (anything but a slash) matches the hospital id rules."""

from django.urls import path

from patients.apis import PatientAccessApi, PatientDetailApi, PatientNoteListCreateApi

urlpatterns = [
    path("<str:patient_id>/", PatientDetailApi.as_view(), name="patient-detail"),
    path("<str:patient_id>/notes/", PatientNoteListCreateApi.as_view(), name="patient-notes"),
    path("<str:patient_id>/access/", PatientAccessApi.as_view(), name="patient-access"),
]
