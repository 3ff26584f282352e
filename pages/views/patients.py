"""Browser pages for a patient record. Thin: check the role, read through the scoped
selectors the APIs use, render. Uploads, status, notes and restores go through the JSON APIs."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views import View

from imaging.models import FailureReason, ScanStatus
from imaging.selectors.scans import scan_list_for_patient
from patients.selectors import patient_get
from patients.services import NOTE_MAX_LENGTH

SCANS_PER_PAGE = 24


class ClinicalPageMixin(LoginRequiredMixin):
    """Clinical pages: anonymous users go to the login page; signed-in users without a
    clinical role (admins, outsiders) get 403, before any patient data is read."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        user = request.user
        if user.is_authenticated and not getattr(user, "is_clinical", False):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)


def patient_not_visible(request: HttpRequest, patient_id: str | None = None) -> HttpResponse:
    """The 404 a clinical user gets for a patient or scan they cannot see: the same whether it
    does not exist or belongs to another department, with the way to emergency access
    (pages/views/emergency.py). The API keeps its bare 404."""
    link = reverse("emergency-access-page")
    if patient_id:
        link += "?" + urlencode({"patient": patient_id})
    context = {"emergency_url": link, "patient_id": patient_id}
    return render(request, "patients/not_visible.html", context, status=HTTPStatus.NOT_FOUND)


def page_context() -> dict[str, Any]:
    """What every clinical page's scripts need: the labels the status poller shows (so the
    JavaScript keeps no copy of them to drift) and the longest note the API accepts."""
    return {
        "status_labels": dict(ScanStatus.choices),
        "failure_labels": dict(FailureReason.choices),
        "note_max_length": NOTE_MAX_LENGTH,
    }


def upload_limits() -> dict[str, int]:
    """The server's size limits by kind, for the upload page to check before it sends."""
    return {
        "image": settings.UPLOAD_MAX_BYTES,
        # The DICOM limit arrives with the limits-by-kind work; until then, the one limit.
        "dicom": getattr(settings, "UPLOAD_DICOM_MAX_BYTES", settings.UPLOAD_MAX_BYTES),
        "archive": settings.UPLOAD_ARCHIVE_MAX_BYTES,
    }


class PatientPageView(ClinicalPageMixin, View):
    """Technicians: the scans and the upload area. Doctors: thumbnails and notes."""

    def get(self, request: HttpRequest, patient_id: str) -> HttpResponse:
        user = request.user
        try:
            patient = patient_get(user=user, patient_id=patient_id, request=request)
        except Http404:
            return patient_not_visible(request, patient_id)
        scans = scan_list_for_patient(user=user, patient=patient)
        page = Paginator(scans, SCANS_PER_PAGE).get_page(request.GET.get("page"))
        context = {
            "patient": patient,
            "page": page,
            "upload_limits": upload_limits(),
            **page_context(),
        }
        template = (
            "patients/patient_technician.html"
            if user.is_technician  # type: ignore[union-attr]
            else "patients/patient_doctor.html"
        )
        return render(request, template, context)
