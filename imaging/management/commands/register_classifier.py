"""Register a classifier directory (model.onnx, config.json, MODEL_CARD.md):

    python manage.py register_classifier model/classifier/lesion

Idempotent: the same name, version and file leave the existing row (its card refreshed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from engine.classification import ConfigError
from imaging.services.classification import classifier_register


class Command(BaseCommand):
    help = "Register an ONNX classifier directory (model.onnx, config.json, MODEL_CARD.md)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path)

    def handle(self, *args: Any, directory: Path, **options: Any) -> None:
        try:
            model, created = classifier_register(directory)
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        verb = "Registered" if created else "Already registered:"
        self.stdout.write(
            f"{verb} classifier {model.pk}: {model.name} {model.version} "
            f"(sha256 {model.weights_sha256})"
        )
