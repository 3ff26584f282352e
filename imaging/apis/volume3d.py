"""The 3D view's volumes (doctors only; every other role gets 403, and the refusal is audited):

GET /api/segmentations/{id}/volume.nii   the segmented volume (redacted pixels), NIfTI-1
GET /api/segmentations/{id}/labels.nii   its labelmap (uint8 class indices), NIfTI-1

Both in the series' patient geometry (RAS mm, from Image Position/Orientation (Patient) and
Pixel Spacing), decrypted in memory, `Cache-Control: no-store`; audited as
segmentation_viewed (view 3d_volume, 3d_labels). 404 `not_a_volume` for a one-image job,
409 `segmentation_not_ready` before it has finished. The page is pages/views/volume3d.py.
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request

from accounts.permissions import IsDoctor
from audit.models import Action
from imaging.apis.common import AuditedRefusal, FirstRendererNegotiation, binary_response
from imaging.selectors import volume3d as selectors
from medimg.api import error_responses

NIFTI_TYPE = "application/octet-stream"
_NIFTI = OpenApiResponse(OpenApiTypes.BINARY, description="A NIfTI-1 file (.nii, not gzipped).")


class _Volume3dApi(AuditedRefusal):
    permission_classes = [IsDoctor]
    refused_action = Action.SEGMENTATION_VIEWED
    target_type = "segmentationjob"
    target_kwarg = "segmentation_id"
    content_negotiation_class = FirstRendererNegotiation


class Volume3dImageApi(_Volume3dApi):
    @extend_schema(
        operation_id="segmentations_volume_nifti",
        summary="The segmented volume as NIfTI-1 (the 3D view's image)",
        description=(
            "Role: doctor. The redacted pixels of every slice the job segmented, stored values "
            "with the DICOM rescale as scl_slope/scl_inter, in patient geometry (RAS mm). "
            "404 `not_a_volume` for a one-image job; 409 `segmentation_not_ready`. Audited."
        ),
        responses={(200, NIFTI_TYPE): _NIFTI, **error_responses(403, 404, 409)},
    )
    def get(self, request: Request, segmentation_id: int) -> HttpResponse:
        job, content = selectors.volume3d_image_nifti(
            user=request.user, job_id=segmentation_id, request=request
        )
        return binary_response(
            content, content_type=NIFTI_TYPE, filename=f"segmentation-{job.pk}-volume.nii"
        )


class Volume3dLabelsApi(_Volume3dApi):
    @extend_schema(
        operation_id="segmentations_labels_nifti",
        summary="The segmentation's labelmap as NIfTI-1 (the 3D view's overlay)",
        description=(
            "Role: doctor. uint8 class indices (the classes of GET /api/segmentations/{id}/), "
            "the volume's geometry. 404 `not_a_volume`; 409 `segmentation_not_ready`. Audited."
        ),
        responses={(200, NIFTI_TYPE): _NIFTI, **error_responses(403, 404, 409)},
    )
    def get(self, request: Request, segmentation_id: int) -> HttpResponse:
        job, content = selectors.volume3d_labels_nifti(
            user=request.user, job_id=segmentation_id, request=request
        )
        return binary_response(
            content, content_type=NIFTI_TYPE, filename=f"segmentation-{job.pk}-labels.nii"
        )
