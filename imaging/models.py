"""Scans, their encrypted regions and their fingerprints.

A Scan row exists only once its encrypted original is safely on storage (see
`imaging.services.upload.scan_upload`). Regions and the fingerprint are written by the processing
job (`imaging.jobs.processing`) in one transaction, so a scan has either all of them or none.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models.functions import Substr

from patients.models import Patient


class ScanStatus(models.TextChoices):
    UPLOADED = "uploaded", "Uploaded"
    PROCESSING = "processing", "Processing"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


class ScanFormat(models.TextChoices):
    JPEG = "jpeg", "JPEG"
    PNG = "png", "PNG"
    DICOM = "dicom", "DICOM"


class FailureReason(models.TextChoices):
    """Why processing stopped. Stored on the scan; shown to clinicians."""

    DECRYPT_FAILED = "decrypt_failed", "The stored upload could not be decrypted"
    DECODE_FAILED = "decode_failed", "The stored upload could not be decoded"
    DETECTION_FAILED = "detection_failed", "The detector failed"
    STORAGE_FAILED = "storage_failed", "Storage kept failing"
    DATABASE_FAILED = "database_failed", "The database kept failing"
    PROCESSING_ERROR = "processing_error", "Unexpected processing error"
    # The worker died on every try (killed for memory, say): no further try is made.
    TOO_MANY_ATTEMPTS = "too_many_attempts", "Processing was attempted too many times"


class ScanQuerySet(models.QuerySet["Scan"]):
    def visible_to(self, user: Any) -> ScanQuerySet:
        """Every query for scans starts here: the scans of the patients `user` may see
        (Patient.objects.visible_to holds the rule: department, care team, emergency access)."""
        if user is None or not getattr(user, "is_clinical", False):
            return self.none()
        return self.filter(patient__in=Patient.objects.visible_to(user).values("pk"))


class Scan(models.Model):
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="scans")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Bound into every ciphertext's associated data: a blob moved to another scan fails.
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)

    original_filename = models.CharField(max_length=255)
    format = models.CharField(max_length=8, choices=ScanFormat.choices)
    size_bytes = models.PositiveBigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    frames = models.PositiveIntegerField(default=1)
    channels = models.PositiveSmallIntegerField(default=1)
    pixel_dtype = models.CharField(max_length=16)
    # SHA-256 of the decoded upload's pixels: a restore must reproduce exactly this.
    pixels_sha256 = models.CharField(max_length=64)

    status = models.CharField(
        max_length=16, choices=ScanStatus.choices, default=ScanStatus.UPLOADED
    )
    failure_reason = models.CharField(max_length=32, choices=FailureReason.choices, blank=True)
    needs_review = models.BooleanField(default=False)
    possible_duplicate = models.BooleanField(default=False)
    duplicate_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Technician review: regions confirmed (after any added or removed by hand).
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    # DICOM grouping, by the de-identified (remapped) UIDs: a study stays one study.
    study_uid = models.CharField(max_length=64, blank=True, db_index=True)
    series_uid = models.CharField(max_length=64, blank=True, db_index=True)
    instance_number = models.IntegerField(null=True, blank=True)
    modality = models.CharField(max_length=16, blank=True)
    scanner = models.CharField(max_length=128, blank=True)  # manufacturer and model, for QC
    # The header values de-identification removed, AES-256-GCM under the scan's data key
    # (only a doctor's request decrypts them); the report holds counts and options, no PHI.
    identity_ciphertext = models.BinaryField(blank=True, default=b"")
    deid_report = models.JSONField(default=dict, blank=True)
    # Quality-control statistics of the de-identified pixels (percentiles, SNR, spacing).
    qc = models.JSONField(default=dict, blank=True)

    # Storage names (Django storage API), never URLs: files are served only through APIs.
    original_path = models.CharField(max_length=500)  # encrypted under the scan's data key
    redacted_path = models.CharField(max_length=500, blank=True)  # PNG, or DICOM dataset
    redacted_pixels_path = models.CharField(max_length=500, blank=True)  # exact array, for restore
    grid_path = models.CharField(max_length=500, blank=True)
    # One PNG per frame for display: {"redacted": [...], "grid": [...]}.
    frame_paths = models.JSONField(default=dict, blank=True)
    # The same shape, a keyed digest per file (imaging.vault.derivatives): a PNG copied in from
    # another scan or frame is refused on read. Empty on scans processed before digests.
    frame_digests = models.JSONField(default=dict, blank=True)

    wrapped_key = models.BinaryField()
    key_id = models.CharField(max_length=64)

    metrics = models.JSONField(default=dict, blank=True)
    detection_ms = models.FloatField(null=True, blank=True)
    encryption_ms = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    objects = ScanQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["patient", "-created_at"], name="scan_patient_created"),
            models.Index(fields=["status", "created_at"], name="scan_status_created"),
            models.Index(fields=["created_at"], name="scan_created"),
        ]

    def __str__(self) -> str:
        return f"scan {self.pk} ({self.format}, {self.status})"


class RegionSource(models.TextChoices):
    DETECTOR = "detector", "Detector"
    MANUAL = "manual", "Added by hand"


class RegionQuerySet(models.QuerySet["Region"]):
    def visible_to(self, user: Any) -> RegionQuerySet:
        """Regions are visible exactly when their scan is."""
        return self.filter(scan__in=Scan.objects.visible_to(user))


class Region(models.Model):
    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="regions")
    index = models.PositiveIntegerField()
    frame = models.PositiveIntegerField(default=0)
    label = models.CharField(max_length=32)
    confidence = models.FloatField()
    source = models.CharField(
        max_length=16, choices=RegionSource.choices, default=RegionSource.DETECTOR
    )
    # The padded box in original pixel coordinates, x2/y2 exclusive.
    x1 = models.PositiveIntegerField()
    y1 = models.PositiveIntegerField()
    x2 = models.PositiveIntegerField()
    y2 = models.PositiveIntegerField()
    # The crop's ORIGINAL pixel values, packed and AES-256-GCM encrypted (nonce and tag inside).
    ciphertext = models.BinaryField()
    dtype = models.CharField(max_length=16)
    channels = models.PositiveSmallIntegerField(default=1)
    pixel_entropy = models.FloatField(null=True, blank=True)
    ciphertext_entropy = models.FloatField(null=True, blank=True)
    # A technician's removal waits for a doctor (imaging.services.review): until approved the region
    # stays filled, so a role that may not decrypt never sees what it hides.
    removal_requested_at = models.DateTimeField(null=True, blank=True)
    removal_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    objects = RegionQuerySet.as_manager()

    class Meta:
        ordering = ["scan_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["scan", "index"], name="region_scan_index_unique")
        ]
        indexes = [models.Index(fields=["label"], name="region_label")]

    def __str__(self) -> str:
        return f"region {self.index} of scan {self.scan_id}"

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def removal_pending(self) -> bool:
        return self.removal_requested_at is not None


class LeftoverDetection(models.Model):
    """Text the verification pass (the detector run again over the redacted frame) still
    found: where it was, so the review page can draw it and the technician can resolve it.

    Resolved when a region on its frame covers its box (the pipeline's later round, or a box
    the technician adds) or when a technician dismisses it with a typed reason; the review
    cannot be confirmed, and "needs review" cannot clear, while one is unresolved
    (imaging.services.review)."""

    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="leftovers")
    frame = models.PositiveIntegerField(default=0)
    label = models.CharField(max_length=32)
    confidence = models.FloatField()
    # The detector's box in original pixel coordinates, x2/y2 exclusive (not padded).
    x1 = models.PositiveIntegerField()
    y1 = models.PositiveIntegerField()
    x2 = models.PositiveIntegerField()
    y2 = models.PositiveIntegerField()
    dismissed_at = models.DateTimeField(null=True, blank=True)
    dismissed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    dismiss_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["scan_id", "frame", "id"]

    def __str__(self) -> str:
        return f"leftover detection {self.pk} of scan {self.scan_id}"

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def dismissed(self) -> bool:
        return self.dismissed_at is not None


PHASH_PIECES = 8  # pieces of a perceptual hash indexed for the duplicate search
PHASH_PIECE_CHARS = 2  # hex characters per piece (8 bits)


class Fingerprint(models.Model):
    """Perceptual fingerprints of the redacted image (no identity pixels go into them)."""

    scan = models.OneToOneField(
        Scan, on_delete=models.CASCADE, primary_key=True, related_name="fingerprint"
    )
    average_hash = models.CharField(max_length=64)
    perceptual_hash = models.CharField(max_length=64, db_index=True)
    color_histogram = models.JSONField(default=list)

    class Meta:
        # The 64-bit perceptual hash (16 hex characters) in eight indexed pieces of two
        # characters: two hashes within Hamming distance k < 8 agree exactly on at least one
        # of k + 1 groups of pieces (pigeonhole), so the duplicate search asks the database
        # for those rows only (imaging.jobs.processing.duplicate_candidates).
        indexes = [
            models.Index(
                Substr("perceptual_hash", 1 + PHASH_PIECE_CHARS * piece, PHASH_PIECE_CHARS),
                name=f"imaging_fp_phash_piece{piece}",
            )
            for piece in range(PHASH_PIECES)
        ]

    def __str__(self) -> str:
        return f"fingerprint of scan {self.scan_id}"


class SegmentationModel(models.Model):
    """A segmentation model offered to doctors: ONNX or TorchScript weights plus a config.

    Models found under `model/segmentation/<name>/` are registered here on first use; an
    admin can add one by uploading weights and a config in Django admin.
    """

    name = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=128, blank=True)
    weights = models.FileField(upload_to="segmentation-models/", blank=True)
    weights_path = models.CharField(max_length=500, blank=True)  # under model/segmentation/
    config = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


class SegmentationJobQuerySet(models.QuerySet["SegmentationJob"]):
    def visible_to(self, user: Any) -> SegmentationJobQuerySet:
        """Jobs are visible exactly when their scan is."""
        return self.filter(scan__in=Scan.objects.visible_to(user))


class SegmentationJob(models.Model):
    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="segmentations")
    model = models.ForeignKey(SegmentationModel, on_delete=models.PROTECT, related_name="jobs")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    failure_reason = models.CharField(max_length=64, blank=True)
    # The label mask, encrypted under the scan's data key (it outlines the patient's anatomy).
    mask_path = models.CharField(max_length=500, blank=True)
    overlay_path = models.CharField(max_length=500, blank=True)
    seg_path = models.CharField(max_length=500, blank=True)  # DICOM SEG, for DICOM inputs
    # {"classes": {...}, "volumes_ml": {...} or "areas_mm2": {...}, "spacing_mm": [...]}
    results = models.JSONField(default=dict, blank=True)
    runtime_ms = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = SegmentationJobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"segmentation {self.pk} of scan {self.scan_id} ({self.status})"


class ErasureKind(models.TextChoices):
    PATIENT = "patient", "Patient"
    SCAN = "scan", "Scan"


class Erasure(models.Model):
    """The tombstone of an erased patient or scan (imaging.jobs.erasure): what is left is when,
    by whom, how and why (as a SHA-256 of the typed reason), with no identity: no name, hospital
    id, birth date, file name or pixels. The scan rows themselves, their regions and files are
    gone; `scan_uids` are the random uids the erasure ledger (medimg.erasures) also holds."""

    kind = models.CharField(max_length=8, choices=ErasureKind.choices)
    # The audit log's keyed pseudonym of the hospital id (audit.pseudonyms), never the id.
    patient_reference = models.CharField(max_length=64)
    scan_ids = models.JSONField(default=list)  # the erased scans' former numbers
    scan_uids = models.JSONField(default=list)
    files_deleted = models.PositiveIntegerField(default=0)
    erased_at = models.DateTimeField()
    erased_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    erased_by_username = models.CharField(max_length=150, blank=True)
    via = models.CharField(max_length=32)  # "admin page", "manage.py erase", "retention", ...
    reason_sha256 = models.CharField(max_length=64)

    class Meta:
        ordering = ["-erased_at", "-id"]

    def __str__(self) -> str:
        return f"Erasure {self.pk} ({self.kind}, {self.erased_at:%Y-%m-%d})"


class ScannerRuleQuerySet(models.QuerySet["ScannerRule"]):
    def matching(self, *, manufacturer: str, model_name: str, width: int, height: int) -> Any:
        """The active rules for an image of this scanner model and size (case and outer
        spaces ignored); a rule with no model covers every model of its manufacturer, and
        one with no size every size."""
        manufacturer, model_name = manufacturer.strip(), model_name.strip()
        if not manufacturer:
            return self.none()
        return (
            self.filter(active=True, manufacturer__iexact=manufacturer)
            .filter(models.Q(model_name="") | models.Q(model_name__iexact=model_name))
            .filter(models.Q(width__isnull=True) | models.Q(width=width, height=height))
        )


class ScannerRule(models.Model):
    """Fixed regions always redacted on one scanner model's images, whatever the detector
    finds (the idea of CTP's DicomPixelAnonymizer scripts): a vendor that always writes the
    patient's name in the same place is covered even when the detector misses it. Matched on
    the DICOM header's Manufacturer and Manufacturer Model Name (and the image size, when set);
    managed by admins in Django admin (every change audited as admin_change), suggested there
    when technicians keep adding the same box by hand (imaging.selectors.scanner_rules)."""

    manufacturer = models.CharField(max_length=64)
    model_name = models.CharField(
        max_length=64, blank=True, help_text="Blank: every model of this manufacturer."
    )
    width = models.PositiveIntegerField(
        null=True, blank=True, help_text="Image width in pixels; blank with height: any size."
    )
    height = models.PositiveIntegerField(null=True, blank=True)
    # [[x0, y0, x1, y1], ...] in pixels, x1/y1 exclusive.
    boxes = models.JSONField(default=list)
    note = models.CharField(max_length=200, blank=True)
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScannerRuleQuerySet.as_manager()

    class Meta:
        ordering = ["manufacturer", "model_name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(width__isnull=True, height__isnull=True)
                | models.Q(width__isnull=False, height__isnull=False),
                name="scanner_rule_size_both_or_neither",
            )
        ]

    def __str__(self) -> str:
        model = self.model_name or "every model"
        size = f", {self.width}x{self.height}" if self.width else ""
        return f"{self.manufacturer} {model}{size}: {len(self.boxes)} box(es)"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Matched case-insensitively on stripped header values (ScannerRuleQuerySet.matching).
        self.manufacturer, self.model_name = self.manufacturer.strip(), self.model_name.strip()
        super().save(*args, **kwargs)

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if (self.width is None) != (self.height is None):
            raise ValidationError("Give both the width and the height, or neither.")
        boxes = self.boxes
        if not isinstance(boxes, list) or not boxes:
            raise ValidationError({"boxes": "Give at least one box as [x0, y0, x1, y1]."})
        for box in boxes:
            if (
                not isinstance(box, list)
                or len(box) != 4
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in box)
            ):
                raise ValidationError(
                    {"boxes": f"{box!r} is not [x0, y0, x1, y1] in whole pixels."}
                )
            x0, y0, x1, y1 = box
            if min(box) < 0 or x1 <= x0 or y1 <= y0:
                raise ValidationError({"boxes": f"{box!r}: x1 must exceed x0 and y1 y0, all >= 0."})
            if (
                self.width is not None
                and self.height is not None
                and (x1 > self.width or y1 > self.height)
            ):
                raise ValidationError(
                    {"boxes": f"{box!r} lies outside a {self.width}x{self.height} image."}
                )


class ClassifierModel(models.Model):
    """A doctor-facing image classifier (issue 18 item 5): an ONNX file plus its config.

    Added by an admin in Django admin (the file is loaded in onnxruntime and checked against
    the config before the row is saved) or by `manage.py register_classifier DIR`. The config
    format is engine.classification (input size and channels, preprocessing, classes,
    threshold). `weights_sha256` is computed from the file on save; results record it.
    """

    name = models.CharField(max_length=64)
    version = models.CharField(max_length=32)
    onnx_file = models.FileField(upload_to="classifier-models/")
    config = models.JSONField(default=dict)
    intended_use = models.TextField()
    model_card = models.TextField(blank=True, help_text="Markdown.")
    weights_sha256 = models.CharField(max_length=64, editable=False)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="classifier_name_version")
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


class ClassificationQuerySet(models.QuerySet["Classification"]):
    def visible_to(self, user: Any) -> ClassificationQuerySet:
        """Results are visible exactly when their scan is."""
        return self.filter(scan__in=Scan.objects.visible_to(user))


class Classification(models.Model):
    """One run of a classifier on one frame of a scan's de-identified, redacted pixels.
    Research use only: every page and API answer that shows one says so."""

    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="classifications")
    classifier = models.ForeignKey(
        ClassifierModel, on_delete=models.PROTECT, related_name="classifications"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    frame = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    failure_reason = models.CharField(max_length=64, blank=True)
    probabilities = models.JSONField(default=dict, blank=True)  # {class: probability}
    prediction = models.CharField(max_length=64, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    threshold = models.FloatField(null=True, blank=True)  # the config's, when the run was made
    # Which model made it: copied at run time, so a later re-upload cannot rewrite history.
    model_name = models.CharField(max_length=64, blank=True)
    model_version = models.CharField(max_length=32, blank=True)
    model_sha256 = models.CharField(max_length=64, blank=True)
    inference_ms = models.FloatField(null=True, blank=True)
    runtime_ms = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = ClassificationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"classification {self.pk} of scan {self.scan_id} ({self.status})"
