"""The home page: one address, one page per role."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.views import View

from accounts.models import Role
from accounts.selectors import user_pending_activation_count
from engine.errors import EngineError, ErrorCode
from imaging.selectors.worklist import page_number, region_removal_worklist, scan_review_worklist
from patients.emergency import emergency_grants_unreviewed_count
from patients.selectors import patient_list
from patients.services import patient_create

PAGE_SIZE = 25
SEARCH_MAX_LENGTH = 100

# Which form field a patients-service error belongs to, so it shows next to that field.
_ERROR_FIELDS = {
    ErrorCode.INVALID_PATIENT_ID: "id",
    ErrorCode.PATIENT_EXISTS: "id",
    ErrorCode.INVALID_NAME: "name",
    ErrorCode.INVALID_AGE: "age",
    ErrorCode.INVALID_NOTE: "note",
}


class PatientCreateForm(forms.Form):
    id = forms.CharField(label="Patient ID (hospital number)", max_length=64, strip=False)
    name = forms.CharField(label="Full name", max_length=200)
    age = forms.IntegerField(label="Age", required=False, min_value=0, max_value=150)
    note = forms.CharField(label="Note", required=False, widget=forms.Textarea(attrs={"rows": 3}))


def _patient_page(request: HttpRequest) -> dict[str, Any]:
    search = request.GET.get("q", "").strip()[:SEARCH_MAX_LENGTH]
    patients = patient_list(user=request.user, search=search or None, request=request)
    page = Paginator(patients, PAGE_SIZE).get_page(request.GET.get("page"))
    return {"page": page, "search": search}


def _query_without(request: HttpRequest, name: str) -> str:
    """The page's query string without `name`, ending in "&" when not empty, so a pager link
    keeps the patient search and page while it moves the worklist (and the other way round)."""
    query = request.GET.copy()
    query.pop(name, None)
    encoded = query.urlencode()
    return f"{encoded}&" if encoded else ""


def _admin_links() -> dict[str, Any]:
    try:
        audit_url = reverse("admin:audit_auditevent_changelist")
    except NoReverseMatch:
        audit_url = None
    return {
        "admin_url": reverse("admin:index"),
        "audit_url": audit_url,
        "users_url": reverse("admin:accounts_user_changelist"),
        "pending_count": user_pending_activation_count(),
        # Emergency accesses no admin has reviewed yet (patients.admin's review list).
        "emergency_url": reverse("admin:patients_breakglassgrant_changelist"),
        "emergency_unreviewed": emergency_grants_unreviewed_count(),
    }


class HomeView(LoginRequiredMixin, View):
    """One address, one page per role: each role sees only what it needs."""

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request, form=PatientCreateForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        # Only technicians create patients; anyone else posting here is refused outright.
        if not request.user.is_technician:  # type: ignore[union-attr]
            raise PermissionDenied
        form = PatientCreateForm(request.POST)
        if form.is_valid():
            try:
                patient = patient_create(
                    **form.cleaned_data, created_by=request.user, request=request
                )
            except EngineError as exc:
                if exc.status_code == 403:
                    raise PermissionDenied from exc
                form.add_error(_ERROR_FIELDS.get(exc.code), exc.message)
            else:
                messages.success(request, f"Patient {patient.id} created.")
                return redirect("home")
        return self._render(request, form=form, status=400)

    def _render(
        self, request: HttpRequest, *, form: PatientCreateForm, status: int = 200
    ) -> HttpResponse:
        user = request.user
        role = getattr(user, "role", "") if user.is_active else ""
        if role == Role.TECHNICIAN:
            worklist = scan_review_worklist(
                user=user, request=request, page=page_number(request.GET.get("worklist"))
            )
            context = {
                "form": form,
                "worklist": worklist,
                "worklist_query": _query_without(request, "worklist"),
                **_patient_page(request),
            }
            return render(request, "home/technician.html", context, status=status)
        if role == Role.DOCTOR:
            removals = region_removal_worklist(
                user=user, request=request, page=page_number(request.GET.get("worklist"))
            )
            context = {
                "removals": removals,
                "worklist_query": _query_without(request, "worklist"),
                **_patient_page(request),
            }
            return render(request, "home/doctor.html", context, status=status)
        if role == Role.ADMIN:
            return render(request, "home/admin.html", _admin_links(), status=status)
        return render(request, "home.html", status=status)
