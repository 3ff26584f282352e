"""Emergency (break-glass) access pages: the request form and ending a grant early (the 404
that leads here is pages.views.patients.patient_not_visible). The rules are in
patients.emergency; docs/access.md."""

from __future__ import annotations

from http import HTTPStatus

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views import View

from engine.errors import EngineError, ErrorCode
from pages.views.patients import ClinicalPageMixin
from patients import emergency

# Which form field a refusal belongs to.
_ERROR_FIELDS = {
    ErrorCode.REASON_TOO_SHORT: "reason",
    ErrorCode.CONFIRMATION_REQUIRED: "confirm",
    ErrorCode.INVALID_PATIENT_ID: "patient_id",
    ErrorCode.PATIENT_NOT_FOUND: "patient_id",
    ErrorCode.ACCESS_NOT_NEEDED: "patient_id",
}


class EmergencyAccessForm(forms.Form):
    patient_id = forms.CharField(
        label="Patient ID (hospital number, exactly as printed)", max_length=64
    )
    reason = forms.CharField(
        label="Clinical reason",
        max_length=emergency.REASON_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=(
            f"At least {emergency.REASON_MIN_LENGTH} characters, for example “Unconscious "
            "patient in the emergency room, prior imaging needed”. The privacy officer and "
            "administrators read it: do not type the patient's name or number."
        ),
    )
    confirm = forms.BooleanField(
        label=(
            "I have a clinical need to see this patient now. I understand that this access is "
            "recorded, reported to the privacy officer at once and reviewed."
        ),
        required=False,
    )


class EmergencyAccessPageView(ClinicalPageMixin, View):
    """GET: the warning and the form (`?patient=` fills the id). POST: open the access and go
    to the patient's page."""

    def get(self, request: HttpRequest) -> HttpResponse:
        initial = {"patient_id": request.GET.get("patient", "")[:64]}
        return self._render(request, EmergencyAccessForm(initial=initial))

    def post(self, request: HttpRequest) -> HttpResponse:
        form = EmergencyAccessForm(request.POST)
        if not form.is_valid():
            return self._render(request, form, status=HTTPStatus.BAD_REQUEST)
        try:
            grant = emergency.emergency_access_open(
                user=request.user,
                patient_id=form.cleaned_data["patient_id"],
                reason=form.cleaned_data["reason"],
                confirmed=form.cleaned_data["confirm"],
                request=request,
            )
        except EngineError as exc:
            if exc.status_code == HTTPStatus.FORBIDDEN:
                raise PermissionDenied from exc
            form.add_error(_ERROR_FIELDS.get(exc.code), exc.message)
            return self._render(request, form, status=exc.status_code)
        until = timezone.localtime(grant.expires_at)
        messages.warning(
            request,
            f"Emergency access to {grant.patient.name} is open until {until:%H:%M}. "
            "Everything you open is recorded.",
        )
        return redirect("patient-page", patient_id=grant.patient_id)

    def _render(
        self, request: HttpRequest, form: EmergencyAccessForm, status: int = HTTPStatus.OK
    ) -> HttpResponse:
        context = {
            "form": form,
            "hours": settings.BREAK_GLASS_HOURS,
            "per_hour": settings.BREAK_GLASS_REQUESTS_PER_HOUR,
        }
        return render(request, "patients/emergency_access.html", context, status=status)


class EmergencyAccessEndView(ClinicalPageMixin, View):
    """POST (the banner's button): end the user's emergency access to one patient now."""

    def post(self, request: HttpRequest) -> HttpResponse:
        patient_id = request.POST.get("patient_id", "")[:64]
        ended = emergency.emergency_access_end(
            user=request.user, patient_id=patient_id, request=request
        )
        if ended:
            messages.success(request, "Emergency access ended. The record stays in the log.")
        else:
            messages.info(request, "That emergency access had already ended.")
        return redirect("home")
