"""Django's password-reset flow, linked from the login page ("Forgot password?").

Django's own views, with three changes: requests are limited per client address
(MEDIMG_PASSWORD_RESETS_PER_HOUR), the answer is the same whether or not the address belongs
to an account (only active accounts with a usable password get a mail), and the new password
is set through `accounts.services.user_set_password`, which also revokes every API token and
session key issued before it. Links expire after PASSWORD_RESET_TIMEOUT (one hour by default).
Both ends are audited as `password_reset`: stage "requested" (the address only as a keyed
hash, how many accounts were mailed; refused when over the limit) and stage "completed".
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import PasswordResetForm, SetPasswordForm
from django.http import HttpRequest, HttpResponse
from django.urls import path, reverse_lazy

from audit.models import Action, Outcome
from audit.pseudonyms import search_term_hash
from audit.services import audit_record, client_ip
from medimg.ratelimit import rate_limit_hit

_WINDOW = 3600


class ServiceSetPasswordForm(SetPasswordForm):
    def save(self, commit: bool = True) -> Any:
        from accounts.services import user_set_password

        user = user_set_password(user=self.user, password=self.cleaned_data["new_password1"])
        audit_record(
            action=Action.PASSWORD_RESET,
            target=user,
            username=user.get_username(),
            details={"stage": "completed", "via": "e-mailed link"},
        )
        return user


class ResetRequestView(auth_views.PasswordResetView):
    template_name = "registration/password_reset_form.html"
    email_template_name = "registration/password_reset_email.txt"
    subject_template_name = "registration/password_reset_subject.txt"
    success_url = reverse_lazy("password_reset_done")
    http_method_names = ["get", "head", "post", "options"]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["password_reset_minutes"] = settings.PASSWORD_RESET_TIMEOUT // 60
        return context

    def form_valid(self, form: PasswordResetForm) -> HttpResponse:
        ident = client_ip(self.request) or "unknown"
        count = rate_limit_hit("password-reset", ident, window_seconds=_WINDOW)
        email = form.cleaned_data["email"]
        if count > settings.MEDIMG_PASSWORD_RESETS_PER_HOUR:
            _audit_request(self.request, email, users=[], outcome=Outcome.REFUSED)
            form.add_error(None, "Too many password-reset requests from here. Try again later.")
            return self.render_to_response(self.get_context_data(form=form), status=429)
        _audit_request(self.request, email, users=list(form.get_users(email)))
        return super().form_valid(form)


def _audit_request(
    request: HttpRequest, email: str, *, users: list[Any], outcome: str = Outcome.SUCCESS
) -> None:
    """A reset asked for: the address only as a keyed hash (audit.pseudonyms), the account
    when one gets a mail. The page answers the same either way; only admins read this."""
    audit_record(
        action=Action.PASSWORD_RESET,
        target=users[0] if len(users) == 1 else None,
        outcome=outcome,
        request=request,
        details={
            "stage": "requested",
            "address_hmac": search_term_hash(email),
            "accounts_mailed": len(users) if outcome == Outcome.SUCCESS else 0,
        },
    )


class ResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "registration/password_reset_confirm.html"
    form_class = ServiceSetPasswordForm
    success_url = reverse_lazy("password_reset_complete")
    post_reset_login = False
    http_method_names = ["get", "head", "post", "options"]


urlpatterns = [
    path("password-reset/", ResetRequestView.as_view(), name="password_reset"),
    path(
        "password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(
            template_name="registration/password_reset_done.html"
        ),
        name="password_reset_done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        ResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "password-reset/done/",
        auth_views.PasswordResetCompleteView.as_view(
            template_name="registration/password_reset_complete.html"
        ),
        name="password_reset_complete",
    ),
]
