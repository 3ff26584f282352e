"""Admin for segmentation models: add one by uploading weights and its config, or disable one.

A model is ONNX (`model.onnx` as exported by `manage.py train_segmentation`) or TorchScript
weights plus the config JSON that `train_segmentation` writes next to them (network, classes,
preprocessing, optional post-processing). Both are checked before the row is saved. Models
placed under model/segmentation/<name>/ appear here on their own once a doctor lists models.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from imaging.models import SegmentationModel
from imaging.services.segmentation import segmentation_model_validate


class SegmentationModelForm(forms.ModelForm):
    class Meta:
        model = SegmentationModel
        fields = ("name", "title", "weights", "weights_path", "config", "enabled")
        help_texts = {
            "weights": "ONNX (.onnx) or TorchScript (.pt) weights.",
            "weights_path": "Or: a model directory under model/segmentation/ (registered "
            "automatically).",
            "config": "The config.json that train_segmentation writes (network, classes, "
            "preprocessing, postprocessing).",
        }

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        upload = data.get("weights")
        if not upload and not data.get("weights_path"):
            raise forms.ValidationError("Upload weights or give a model directory.")
        weights = None
        if upload is not None and hasattr(upload, "read"):
            upload.seek(0)
            weights = upload.read()
            upload.seek(0)
        try:
            segmentation_model_validate(data.get("config") or {}, weights)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


@admin.register(SegmentationModel)
class SegmentationModelAdmin(admin.ModelAdmin):
    form = SegmentationModelForm
    list_display = ("name", "title", "enabled", "weights_path", "created_at")
    list_filter = ("enabled",)
    search_fields = ("name", "title")
    ordering = ("name",)
