"""The audit-log browser for admins: filters, pages, a "verify chain" button, and the
investigator's search for one patient's events by hospital id.

Thin: parse the filter form, call the selectors the audit API uses, render."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.paginator import Paginator
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views import View

from accounts.mixins import AdminPageMixin
from accounts.selectors import user_names
from audit.forms import PatientEventSearchForm
from audit.models import Action, Outcome
from audit.pseudonyms import MARK_KEY, SEARCH_HASH_KEY, patient_reference
from audit.selectors import audit_chain_verify, audit_event_list
from audit.services import actor_label, audit_export_filtered, audit_find_patient_events

EVENTS_PER_PAGE = 50


class AuditFilterForm(forms.Form):
    actor = forms.CharField(label="User", required=False, max_length=150)
    action = forms.ChoiceField(
        label="Action", required=False, choices=[("", "Any action"), *Action.choices]
    )
    outcome = forms.ChoiceField(
        label="Outcome", required=False, choices=[("", "Any outcome"), *Outcome.choices]
    )
    since = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    patient = forms.RegexField(
        label="Patient reference",
        required=False,
        regex=r"^[0-9a-f]{12}$",
        strip=True,
        error_messages={
            "invalid": "A patient reference is 12 characters, 0-9 and a-f, as the log shows it. "
            "To find a patient by hospital id, use the investigator's search."
        },
        widget=forms.TextInput(attrs={"placeholder": "3fa1c09b7d2e", "spellcheck": "false"}),
    )
    scan = forms.IntegerField(label="Scan (image) number", required=False, min_value=1)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            self.add_error("until", "The end date is before the start date.")
        return data


# Keys the log keeps for machines, not for the person reading the page: the marker that an
# event was written with pseudonyms (covered by the hash, so it stays in the API and export).
_HIDDEN_KEYS = frozenset({MARK_KEY})


def _describe(event: Any, usernames: dict[int, str] | None = None) -> str:
    """The event's details as one readable line (never raw JSON, never an internal key).

    Empty values are left out (an empty list reads "none"); a search term is stored only as a
    keyed hash, which means nothing to a reader, so it is shown as "search: yes" (the
    investigator page finds the searches for a hospital id). A care-team change stores user
    ids; they are shown as usernames (`usernames`, looked up for the page)."""
    details = event.details or {}
    care_team = event.action == Action.PATIENT_CARE_TEAM_CHANGED
    parts = []
    for key in sorted(details):
        value = details[key]
        if key in _HIDDEN_KEYS or value in (None, "", {}):
            continue
        if key == SEARCH_HASH_KEY:
            parts.append("search: yes (the term is stored as a keyed hash)")
            continue
        if care_team and key in ("from", "to") and isinstance(value, list):
            value = [(usernames or {}).get(v, f"user {v}") for v in value]
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items() if v not in (None, ""))
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "none"
        parts.append(f"{key.replace('_', ' ')}: {value}")
    return "; ".join(parts)


def _rows(events: Any) -> list[tuple[Any, str]]:
    events = list(events)
    member_ids = {
        member
        for event in events
        if event.action == Action.PATIENT_CARE_TEAM_CHANGED
        for key in ("from", "to")
        for member in (event.details or {}).get(key) or []
        if isinstance(member, int)
    }
    usernames = user_names(member_ids)
    rows = []
    for event in events:
        event.who = actor_label(event)
        rows.append((event, _describe(event, usernames)))
    return rows


def _filters(form: AuditFilterForm) -> dict[str, Any]:
    return {k: v for k, v in form.cleaned_data.items() if v} if form.is_valid() else {}


class AuditLogExportView(AdminPageMixin, View):
    """The events the page shows for its filters, as CSV (audit_export_filtered); invalid
    filters are sent back to the page, which says what is wrong."""

    def get(self, request: HttpRequest) -> HttpResponseBase:
        form = AuditFilterForm(request.GET or None)
        if request.GET and not form.is_valid():
            return redirect(f"{reverse('audit-log-page')}?{request.GET.urlencode()}")
        export = audit_export_filtered(filters=_filters(form), actor=request.user, request=request)
        response = FileResponse(export.file, content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
        response["X-Audit-Count"] = str(export.count)
        response["Cache-Control"] = "no-store"
        return response


class AuditLogPageView(AdminPageMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request)

    def post(self, request: HttpRequest) -> HttpResponse:
        # The only POST is "Verify chain": a read, but a costly one, so it is a button.
        return self._render(request, report=audit_chain_verify())

    def _render(self, request: HttpRequest, report: Any = None) -> HttpResponse:
        form = AuditFilterForm(request.GET or None)
        filters = _filters(form)
        events = audit_event_list(**filters)
        page = Paginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
        rows = _rows(page.object_list)
        query = request.GET.copy()
        query.pop("page", None)
        context = {
            "form": form,
            "page": page,
            "rows": rows,
            "report": report,
            "query": query.urlencode(),
            "filtered": any(filters.values()),
        }
        return render(request, "audit/log.html", context)


# The investigator page shows at most this many events (newest first) and says how many more.
INVESTIGATION_MAX_EVENTS = 500


class AuditPatientSearchPageView(AdminPageMixin, View):
    """The investigator's page: a hospital id in, that patient's events out, by pseudonym.

    The id is posted (not in the URL, so it stays out of access logs and browser history),
    hashed by audit_find_patient_events, which records the search itself by the patient's
    reference, and not shown back: the page names the patient by its reference only."""

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, "audit/patient_search.html", {"form": PatientEventSearchForm()})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = PatientEventSearchForm(request.POST)
        if not form.is_valid():
            return render(request, "audit/patient_search.html", {"form": form}, status=400)
        hospital_id = form.cleaned_data["hospital_id"]
        events = audit_find_patient_events(
            hospital_id=hospital_id, actor=request.user, request=request
        )
        found = list(events[: INVESTIGATION_MAX_EVENTS + 1])
        context = {
            # A fresh form: the id typed is not written back into the page.
            "form": PatientEventSearchForm(),
            "searched": True,
            "reference": patient_reference(hospital_id),
            "rows": _rows(found[:INVESTIGATION_MAX_EVENTS]),
            "more": len(found) > INVESTIGATION_MAX_EVENTS,
            "limit": INVESTIGATION_MAX_EVENTS,
        }
        return render(request, "audit/patient_search.html", context)
