"""The 3D view of a segmented volume (issue 18 item 4): NiiVue renders the series with its
tissue labelmap (frontend/brain3d/, built into static/vendor/brain3d/ by make install).
Doctors only, like the segmentation results it shows; the page reads the job through the
scoped selector (a job the doctor cannot see is the usual not-visible page) and hands the
volumes' URLs and the legend to the bundle. Docs: docs/viewer.md, "3D view"."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views import View

from engine.errors import EngineError
from imaging.selectors.volume3d import volume3d_view
from pages.views.patients import ClinicalPageMixin, patient_not_visible
from patients.selectors import patient_lookup


class DoctorPageMixin(ClinicalPageMixin):
    """Segmentation results are the doctors' (technicians never see them)."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        user = request.user
        if user.is_authenticated and not getattr(user, "is_doctor", False):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)


class Volume3dPageView(DoctorPageMixin, View):
    def get(self, request: HttpRequest, segmentation_id: int) -> HttpResponse:
        user = request.user
        try:
            view = volume3d_view(user=user, job_id=segmentation_id, request=request)
        except Http404:
            return patient_not_visible(request)
        except EngineError as refused:
            context = {"refusal": refused.message, "segmentation_id": segmentation_id}
            return render(request, "imaging/volume3d.html", context, status=refused.status_code)
        scan = view.job.scan
        flagged = view.flagged
        context = {
            "view": view,
            "job": view.job,
            "scan": scan,
            "patient": patient_lookup(user=user, patient_id=scan.patient_id),
            "brain3d": {
                "classes": view.classes,
                "flagged": flagged,
                "hemisphere": view.hemisphere,
                "shape": list(view.shape),
                "spacing": list(view.spacing_mm),
                "oriented": view.oriented,
            },
        }
        return render(request, "imaging/volume3d.html", context)
