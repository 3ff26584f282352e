"""Installed in place of `django.contrib.admin` so that `admin.site` is our role-checked site.

Kept in its own module: an AppConfig module is imported before models are ready, and the
site's login form needs them.
"""

from django.contrib.admin.apps import AdminConfig


class MedimgAdminConfig(AdminConfig):
    default_site = "accounts.admin_site.MedimgAdminSite"
