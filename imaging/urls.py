"""Mounted at /api/. Patient ids are `str` (anything but a slash), as in patients.urls."""

from django.urls import path

from imaging.apis import blurred as apis_blurred
from imaging.apis import classification as apis_classification
from imaging.apis import deid as deid_apis
from imaging.apis import patients as apis_patients
from imaging.apis import reassign as apis_reassign
from imaging.apis import review as apis_review
from imaging.apis import scans as apis
from imaging.apis import segmentation as apis_segmentation
from imaging.apis import thumbnails as apis_thumbnails
from imaging.apis import viewing as apis_viewing
from imaging.apis import volume3d as apis_volume3d

urlpatterns = [
    # The patient list and create (with optional first images); the rest of /api/patients/
    # is patients.urls.
    path("patients/", apis_patients.PatientListCreateApi.as_view(), name="patient-list"),
    path(
        "patients/<str:patient_id>/images/",
        apis.PatientScanListCreateApi.as_view(),
        name="patient-images",
    ),
    path("images/<int:scan_id>/", apis.ScanDetailApi.as_view(), name="image-detail"),
    path("images/<int:scan_id>/status/", apis.ScanStatusApi.as_view(), name="image-status"),
    path("images/<int:scan_id>/redacted/", apis.ScanRedactedApi.as_view(), name="image-redacted"),
    path("images/<int:scan_id>/grid/", apis.ScanGridApi.as_view(), name="image-grid"),
    path(
        "images/<int:scan_id>/thumbnail/",
        apis_thumbnails.ScanThumbnailApi.as_view(),
        name="image-thumbnail",
    ),
    path(
        "images/<int:scan_id>/regions/", apis_review.ScanRegionsApi.as_view(), name="image-regions"
    ),
    path(
        "images/<int:scan_id>/region-groups/",
        apis_review.ScanRegionGroupsApi.as_view(),
        name="image-region-groups",
    ),
    path("images/<int:scan_id>/review/", apis_review.ScanReviewApi.as_view(), name="image-review"),
    path(
        "images/<int:scan_id>/leftovers/",
        apis_review.ScanLeftoversApi.as_view(),
        name="image-leftovers",
    ),
    path(
        "leftovers/<int:leftover_id>/dismissal/",
        apis_review.LeftoverDismissalApi.as_view(),
        name="leftover-dismissal",
    ),
    path(
        "images/<int:scan_id>/blurred/", apis_blurred.ScanBlurredApi.as_view(), name="image-blurred"
    ),
    path("images/<int:scan_id>/move/", apis_reassign.ScanMoveApi.as_view(), name="image-move"),
    path("images/<int:scan_id>/restore/", apis.ScanRestoreApi.as_view(), name="image-restore"),
    path("images/<int:scan_id>/similar/", apis.ScanSimilarApi.as_view(), name="image-similar"),
    path("images/<int:scan_id>/frames/", apis_viewing.ScanFramesApi.as_view(), name="image-frames"),
    path(
        "images/<int:scan_id>/clusters/",
        apis_viewing.ScanClustersApi.as_view(),
        name="image-clusters",
    ),
    path(
        "images/<int:scan_id>/clusters/image/",
        apis_viewing.ScanClustersImageApi.as_view(),
        name="image-clusters-image",
    ),
    path(
        "patients/<str:patient_id>/studies/",
        apis_viewing.PatientStudiesApi.as_view(),
        name="patient-studies",
    ),
    path("qc/outliers/", apis_viewing.QcOutliersApi.as_view(), name="qc-outliers"),
    path(
        "images/<int:scan_id>/identity/", deid_apis.ScanIdentityApi.as_view(), name="image-identity"
    ),
    path("images/<int:scan_id>/export/", deid_apis.ScanExportApi.as_view(), name="image-export"),
    path(
        "patients/<str:patient_id>/export/",
        deid_apis.PatientExportApi.as_view(),
        name="patient-export",
    ),
    path(
        "patients/<str:patient_id>/studies/<str:study_uid>/export/",
        deid_apis.StudyExportApi.as_view(),
        name="study-export",
    ),
    path("regions/<int:region_id>/", apis_review.RegionApi.as_view(), name="region-decrypt"),
    path(
        "regions/<int:region_id>/removal/",
        apis_review.RegionRemovalApi.as_view(),
        name="region-removal",
    ),
    path("stats/processing/", apis.ProcessingStatsApi.as_view(), name="stats-processing"),
    path(
        "segmentation/models/",
        apis_segmentation.SegmentationModelListApi.as_view(),
        name="segmentation-models",
    ),
    path(
        "images/<int:scan_id>/segmentations/",
        apis_segmentation.ScanSegmentationsApi.as_view(),
        name="image-segmentations",
    ),
    path(
        "segmentations/<int:segmentation_id>/",
        apis_segmentation.SegmentationDetailApi.as_view(),
        name="segmentation-detail",
    ),
    path(
        "segmentations/<int:segmentation_id>/overlay/",
        apis_segmentation.SegmentationOverlayApi.as_view(),
        name="segmentation-overlay",
    ),
    path("classifiers/", apis_classification.ClassifierListApi.as_view(), name="classifiers"),
    path(
        "images/<int:scan_id>/classifications/",
        apis_classification.ScanClassificationsApi.as_view(),
        name="image-classifications",
    ),
    path(
        "classifications/<int:classification_id>/",
        apis_classification.ClassificationDetailApi.as_view(),
        name="classification-detail",
    ),
    path(
        "segmentations/<int:segmentation_id>/seg/",
        apis_segmentation.SegmentationDicomSegApi.as_view(),
        name="segmentation-seg",
    ),
    # The 3D view's volumes (imaging/apis/volume3d.py).
    path(
        "segmentations/<int:segmentation_id>/volume.nii",
        apis_volume3d.Volume3dImageApi.as_view(),
        name="segmentation-3d-volume",
    ),
    path(
        "segmentations/<int:segmentation_id>/labels.nii",
        apis_volume3d.Volume3dLabelsApi.as_view(),
        name="segmentation-3d-labels",
    ),
]
