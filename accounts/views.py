"""The session login page (the home page and every other HTML page live in `pages`)."""

from __future__ import annotations

from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import NON_FIELD_ERRORS
from django.http import HttpResponse
from django.shortcuts import redirect

from accounts.forms import GuardedAuthenticationForm
from accounts.otp import otp_device_for
from accounts.otp_views import otp_pending_start


class SessionLoginView(LoginView):
    """Django's login view; Django's signals put LOGIN / LOGIN_FAILED in the audit log."""

    template_name = "registration/login.html"
    authentication_form = GuardedAuthenticationForm
    redirect_authenticated_user = True
    # FormView also answers PUT (as POST); a login form has no use for it.
    http_method_names = ["get", "head", "post", "options"]

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        user = form.get_user()
        if otp_device_for(user) is None:
            return super().form_valid(form)
        # Right password, and the user has a second factor: not logged in until the code.
        otp_pending_start(self.request, user=user, next_url=self.get_success_url())
        return redirect("login-otp")

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        locked = form.has_error(NON_FIELD_ERRORS, "locked")
        context = self.get_context_data(form=form)
        return self.render_to_response(context, status=429 if locked else 200)
