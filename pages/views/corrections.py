"""Correcting a record (issue 16): a technician fixes a typo in a patient's name or age, or
moves an image uploaded under the wrong patient to the right one. Thin: the services check the
role and visibility again and audit (patients.services.patient_update,
imaging.services.reassign.scan_move)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views import View

from engine.errors import EngineError, ErrorCode
from imaging.models import Scan
from imaging.services.reassign import scan_move
from pages.views.patients import ClinicalPageMixin, patient_not_visible
from patients.selectors import patient_lookup
from patients.services import AGE_MAX, NAME_MAX_LENGTH, patient_update


class TechnicianPageMixin(ClinicalPageMixin):
    """Corrections are the technicians' (doctors read; they do not edit records)."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        user = request.user
        if user.is_authenticated and not getattr(user, "is_technician", False):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)


class PatientEditForm(forms.Form):
    name = forms.CharField(label="Full name", max_length=NAME_MAX_LENGTH)
    age = forms.IntegerField(label="Age", required=False, min_value=0, max_value=AGE_MAX)


class PatientEditPageView(TechnicianPageMixin, View):
    """GET the form with the record's name and age; POST saves (only what changed)."""

    def get(self, request: HttpRequest, patient_id: str) -> HttpResponse:
        try:
            patient = patient_lookup(user=request.user, patient_id=patient_id)
        except Http404:
            return patient_not_visible(request, patient_id)
        form = PatientEditForm(initial={"name": patient.name, "age": patient.age})
        return render(request, "patients/edit.html", {"patient": patient, "form": form})

    def post(self, request: HttpRequest, patient_id: str) -> HttpResponse:
        try:
            patient = patient_lookup(user=request.user, patient_id=patient_id)
        except Http404:
            return patient_not_visible(request, patient_id)
        form = PatientEditForm(request.POST)
        if form.is_valid():
            try:
                patient_update(
                    patient=patient, actor=request.user, request=request, **form.cleaned_data
                )
            except EngineError as exc:
                field = {ErrorCode.INVALID_NAME: "name", ErrorCode.INVALID_AGE: "age"}
                form.add_error(field.get(exc.code), exc.message)
            else:
                messages.success(request, "The patient's details were saved.")
                return redirect("patient-page", patient_id=patient.pk)
        context = {"patient": patient, "form": form}
        return render(request, "patients/edit.html", context, status=400)


class ScanMoveForm(forms.Form):
    patient = forms.CharField(
        label="Patient ID (hospital number) the image belongs to",
        max_length=64,
        strip=True,
    )


class ScanMovePageView(TechnicianPageMixin, View):
    """GET what would move (the image, or its whole study) and the form; POST moves it and
    goes to the patient it now belongs to."""

    def _scan(self, request: HttpRequest, scan_id: int) -> Scan:
        scan = (
            Scan.objects.visible_to(request.user)
            .select_related("patient")
            .filter(pk=scan_id)
            .first()
        )
        if scan is None:
            raise Http404
        return scan

    def _render(
        self, request: HttpRequest, scan: Scan, form: ScanMoveForm, status: int = 200
    ) -> HttpResponse:
        study = (
            Scan.objects.filter(patient=scan.patient_id, study_uid=scan.study_uid).count()
            if scan.study_uid
            else 1
        )
        context = {"scan": scan, "patient": scan.patient, "form": form, "study_count": study}
        return render(request, "imaging/scan_move.html", context, status=status)

    def get(self, request: HttpRequest, scan_id: int) -> HttpResponse:
        try:
            scan = self._scan(request, scan_id)
        except Http404:
            return patient_not_visible(request)
        return self._render(request, scan, ScanMoveForm())

    def post(self, request: HttpRequest, scan_id: int) -> HttpResponse:
        try:
            scan = self._scan(request, scan_id)
        except Http404:
            return patient_not_visible(request)
        form = ScanMoveForm(request.POST)
        if form.is_valid():
            try:
                moved = scan_move(
                    scan_id=scan.pk,
                    to_patient_id=form.cleaned_data["patient"],
                    actor=request.user,
                    request=request,
                )
            except Http404:
                form.add_error(
                    "patient",
                    "No patient with this ID that you can see. Check the number; a patient of "
                    "another department must first be shared with yours.",
                )
            except EngineError as exc:
                form.add_error("patient", exc.message)
            else:
                count = len(moved.scan_ids)
                what = "The image was" if count == 1 else f"The {count} images of the study were"
                messages.success(
                    request,
                    f"{what} moved from {moved.from_patient.name} ({moved.from_patient.pk}) to "
                    f"{moved.to_patient.name} ({moved.to_patient.pk}).",
                )
                return redirect("patient-page", patient_id=moved.to_patient.pk)
        return self._render(request, scan, form, status=400)
