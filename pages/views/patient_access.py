"""Who sees a patient record: its departments and care team, changed by the staff of its
departments (patients.services.patient_set_departments / patient_set_care_team, audited).

Thin: read through the scoped selectors, validate the posted form, call one service, redirect.
A patient the user cannot see is a 404, as everywhere."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views import View

from accounts.models import CLINICAL_ROLES, Department, User
from accounts.selectors import clinical_user_list
from engine.errors import EngineError
from pages.views.patients import ClinicalPageMixin
from patients.models import Patient
from patients.selectors import patient_access_get, patient_lookup
from patients.services import (
    patient_access_changeable_by,
    patient_set_care_team,
    patient_set_departments,
)


class DepartmentsForm(forms.Form):
    departments = forms.ModelMultipleChoiceField(
        label="Departments",
        queryset=Department.objects.all(),
        to_field_name="slug",
        widget=forms.CheckboxSelectMultiple,
        required=False,
        error_messages={"invalid_choice": "There is no department %(value)s."},
    )


class MemberForm(forms.Form):
    member = forms.ModelChoiceField(
        label="Technician or doctor",
        queryset=User.objects.filter(is_active=True, role__in=CLINICAL_ROLES),
        to_field_name="username",
        empty_label="Choose a colleague",
        error_messages={
            "required": "Choose a technician or doctor.",
            "invalid_choice": "That user is not an active technician or doctor.",
        },
    )


def _form_errors(form: forms.Form) -> forms.ValidationError:
    return forms.ValidationError([e for errors in form.errors.values() for e in errors])


def _apply(request: HttpRequest, patient: Patient, action: str) -> str:
    """Make the posted change through the service; what to tell the user. Raises
    forms.ValidationError for a bad form and EngineError for a refused change."""
    if action == "departments":
        departments = DepartmentsForm(request.POST)
        if not departments.is_valid():
            raise _form_errors(departments)
        patient_set_departments(
            patient=patient,
            departments=departments.cleaned_data["departments"],
            actor=request.user,
            request=request,
        )
        return "Departments saved."
    if action in ("add_member", "remove_member"):
        chosen = MemberForm(request.POST)
        if not chosen.is_valid():
            raise _form_errors(chosen)
        member = chosen.cleaned_data["member"]
        team = [m for m in patient.care_team.all() if m.pk != member.pk]
        if action == "add_member":
            team.append(member)
        patient_set_care_team(patient=patient, members=team, actor=request.user, request=request)
        verb = "added to" if action == "add_member" else "removed from"
        return f"{member.get_username()} {verb} the care team."
    raise forms.ValidationError("Unknown change; reload the page and try again.")


class PatientAccessPageView(ClinicalPageMixin, View):
    def get(self, request: HttpRequest, patient_id: str) -> HttpResponse:
        patient = patient_access_get(user=request.user, patient_id=patient_id, request=request)
        return self._render(request, patient)

    def post(self, request: HttpRequest, patient_id: str) -> HttpResponse:
        patient = patient_lookup(user=request.user, patient_id=patient_id)
        try:
            done = _apply(request, patient, request.POST.get("action", ""))
        except EngineError as refusal:
            return self._render(request, patient, error=refusal.message, status=refusal.status_code)
        except forms.ValidationError as invalid:
            return self._render(request, patient, error=" ".join(invalid.messages), status=400)
        messages.success(request, done)
        if not Patient.objects.visible_to(request.user).filter(pk=patient.pk).exists():
            # The user moved the record out of their own departments.
            messages.info(
                request, f"{patient.name} is no longer in your departments: you no longer see it."
            )
            return redirect("home")
        return redirect("patient-access-page", patient_id=patient.pk)

    def _render(
        self, request: HttpRequest, patient: Patient, *, error: str = "", status: int = 200
    ) -> HttpResponse:
        departments = list(patient.departments.all())
        team = list(patient.care_team.order_by("username"))
        on_team = {member.pk for member in team}
        context: dict[str, Any] = {
            "patient": patient,
            "departments": departments,
            "all_departments": Department.objects.all(),
            "patient_department_ids": {department.pk for department in departments},
            "care_team": team,
            "candidates": [user for user in clinical_user_list() if user.pk not in on_team],
            "can_change": patient_access_changeable_by(request.user, patient),
            "error": error,
        }
        return render(request, "patients/access.html", context, status=status)
