"""The admins' erasure page: erase a patient or a scan for good, with a reason and a fresh
code from the authenticator app (imaging.services.erasure). Thin: parse, call, render."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views import View

from accounts.mixins import AdminPageMixin
from imaging.models import ErasureKind
from imaging.selectors.erasures import erasure_list_recent
from imaging.services.erasure import REASON_MAX, erasure_request


class ErasureForm(forms.Form):
    kind = forms.ChoiceField(
        label="Erase",
        choices=[
            (ErasureKind.PATIENT, "A patient: every scan and the record"),
            (ErasureKind.SCAN, "One scan"),
        ],
        widget=forms.RadioSelect,
    )
    target = forms.CharField(
        label="Hospital id, patient reference or scan number",
        max_length=64,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    reason = forms.CharField(
        label="Reason (kept in the audit log; no names or hospital ids)",
        max_length=REASON_MAX,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    otp_code = forms.CharField(
        label="Current code from your authenticator app",
        max_length=8,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "size": 8}
        ),
    )
    confirm = forms.BooleanField(
        label="I understand that the images cannot be brought back, not even from a backup.",
    )


class ErasurePageView(AdminPageMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request, ErasureForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        form = ErasureForm(request.POST)
        if not form.is_valid():
            return self._render(request, form, status=400)
        data = form.cleaned_data
        try:
            erasure = erasure_request(
                actor=request.user,
                kind=data["kind"],
                target=data["target"],
                reason=data["reason"],
                otp_code=data["otp_code"],
                request=request,
            )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, messages)
            return self._render(request, form, status=400)
        return self._render(request, ErasureForm(), done=erasure)

    def _render(
        self, request: HttpRequest, form: ErasureForm, *, status: int = 200, done: Any = None
    ) -> HttpResponse:
        context = {"form": form, "done": done, "recent": erasure_list_recent()}
        return render(request, "manage/erasure.html", context, status=status)
