from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from medimg import health, metrics

urlpatterns = [
    # Liveness and readiness for load balancers and orchestrators (medimg/health.py).
    path("healthz", health.liveness, name="healthz"),
    path("healthz/ready", health.readiness, name="healthz-ready"),
    # Prometheus metrics, for operators' addresses or METRICS_TOKEN only (medimg/metrics.py).
    path("metrics", metrics.metrics_view, name="metrics"),
    # Django's password-reset flow, linked from the login page (medimg/password_reset.py).
    path("", include("medimg.password_reset")),
    path("", include("accounts.urls_pages")),
    path("", include("pages.urls")),
    path("admin/", admin.site.urls),
    path("api/auth/", include("accounts.urls")),
    path("api/patients/", include("patients.urls")),
    path("api/emergency-access/", include("patients.emergency_api")),
    path("api/audit/", include("audit.urls")),
    path("api/", include("imaging.urls")),
    # DICOMweb (STOW-RS, QIDO-RS, WADO-RS) for clinical users: gateway/dicomweb.py.
    path("dicomweb/", include("gateway.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
]
