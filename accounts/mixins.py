"""Page access by role, for the server-rendered pages outside Django admin."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from accounts.models import Role


class AdminPageMixin(LoginRequiredMixin):
    """Admin pages: anonymous users go to the login page; any other role gets 403."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        user = request.user
        if user.is_authenticated and not (
            user.is_active and getattr(user, "role", "") == Role.ADMIN
        ):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)
