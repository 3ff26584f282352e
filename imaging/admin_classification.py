"""Admin for classifier plug-ins: upload an ONNX file with its config, or deactivate one.

The file is loaded in onnxruntime and checked against the config (input channels and size,
one output per class) before the row is saved; its SHA-256 is computed here, and results
record it. `manage.py register_classifier DIR` does the same from a model directory.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin

from engine.classification import ConfigError, sha256_hex
from imaging.models import ClassifierModel
from imaging.services.classification import classifier_validate

CONFIG_HELP = (
    'JSON, for example {"input": {"size": [128, 128], "channels": 1}, "preprocessing": '
    '{"clip": [0.5, 99.5], "normalise": "zscore"}, "classes": ["no_lesion", "lesion"], '
    '"positive_class": "lesion", "threshold": 0.5, "output": "logits"}. See docs/classifiers.md.'
)


class ClassifierModelForm(forms.ModelForm):
    class Meta:
        model = ClassifierModel
        fields = (
            "name",
            "version",
            "onnx_file",
            "config",
            "intended_use",
            "model_card",
            "active",
        )
        help_texts = {
            "onnx_file": "An ONNX image classifier: one input (batch, channels, rows, columns), "
            "one output (batch, classes).",
            "config": CONFIG_HELP,
        }

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        upload = data.get("onnx_file")
        if not upload:
            return data  # the field's own "required" error is shown
        upload.open("rb")
        upload.seek(0)
        content = upload.read()
        upload.seek(0)
        config = data.get("config")
        if isinstance(config, str):
            try:
                config = json.loads(config)
            except json.JSONDecodeError:
                raise forms.ValidationError({"config": "The config is not valid JSON."}) from None
        try:
            classifier_validate(config if config is not None else {}, content)
        except ConfigError as exc:
            raise forms.ValidationError(str(exc)) from None
        self.instance.weights_sha256 = sha256_hex(content)
        return data


@admin.register(ClassifierModel)
class ClassifierModelAdmin(admin.ModelAdmin):
    form = ClassifierModelForm
    list_display = ("name", "version", "active", "short_sha256", "created_at")
    list_filter = ("active",)
    search_fields = ("name", "version")
    readonly_fields = ("weights_sha256", "created_at")

    @admin.display(description="SHA-256")
    def short_sha256(self, obj: ClassifierModel) -> str:
        return obj.weights_sha256[:12]
