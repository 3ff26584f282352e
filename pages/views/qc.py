"""Quality-control pages: the outlier list (doctors and admins) and the K-means cluster
view of one slice (technicians and doctors). Thin: check the role, call the selector the
API uses, render. No scripts: the cluster map is an <img> of the PNG endpoint."""

from __future__ import annotations

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.views import View

from accounts.models import Role
from engine import errors
from engine.errors import EngineError, ErrorCode
from engine.pixels import qc
from imaging.selectors.qc import ClusterResult, qc_outliers, scan_clusters
from imaging.vault.redacted import frame_param
from pages.views.patients import ClinicalPageMixin


def _cluster_rows(result: ClusterResult | None) -> list[dict[str, object]]:
    if result is None:
        return []
    total = sum(result.sizes) or 1
    return [
        {
            "number": i + 1,
            "colour": qc.PALETTE_NAMES[i],
            "centre": centre,
            "pixels": size,
            "share": 100.0 * size / total,
        }
        for i, (centre, size) in enumerate(zip(result.centres, result.sizes, strict=True))
    ]


class DoctorOrAdminPageMixin(LoginRequiredMixin):
    """Anonymous users go to the login page; technicians and users without a role get 403."""

    def dispatch(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponseBase:
        user = request.user
        allowed = getattr(user, "is_active", False) and getattr(user, "role", "") in (
            Role.DOCTOR,
            Role.ADMIN,
        )
        if user.is_authenticated and not allowed:
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)


class QcOutliersPageView(DoctorOrAdminPageMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        report = qc_outliers(user=request.user)
        return render(request, "imaging/qc_outliers.html", {"report": report})


def _frame(request: HttpRequest) -> int:
    """The frame to cluster, 0-based. People count frames from 1: the page's form sends
    `frame_number` (1-based); links from elsewhere may send the API's `frame` (0-based)."""
    number = request.GET.get("frame_number")
    if number in (None, ""):
        return frame_param(request.GET)
    try:
        value = int(str(number))
    except ValueError:
        value = 0
    if value < 1:
        raise errors.invalid_frame_number()
    return value - 1


class ScanClustersPageView(ClinicalPageMixin, View):
    def get(self, request: HttpRequest, scan_id: int) -> HttpResponse:
        error = None
        status = 200
        result = None
        k = 3
        frame = 0
        parsed = False
        try:
            frame = _frame(request)
            parsed = True
            k = int(request.GET.get("k", "3"))
            result = scan_clusters(
                user=request.user, scan_id=scan_id, frame=frame, k=k, request=request
            )
        except ValueError:
            error, status = f"k must be a whole number between 2 and {qc.MAX_K}.", 400
        except EngineError as refusal:
            error, status = refusal.message, refusal.status_code
            if refusal.code == ErrorCode.INVALID_FRAME and parsed:
                # The API counts from 0; say it as people count.
                error = f"This image has no frame {frame + 1}."
        context = {
            "scan_id": scan_id,
            "result": result,
            "error": error,
            "frame": frame,
            "k": k,
            "k_choices": range(2, qc.MAX_K + 1),
            "clusters": _cluster_rows(result),
        }
        return render(request, "imaging/qc_clusters.html", context, status=status)
