"""Evaluate a segmentation model and print the report as JSON.

    python manage.py evaluate_segmentation --model model/segmentation/NAME --data DIR
        [--backend torch|onnx] [--threads 2] [--resamples 2000] [--seed 0]
        [--card-section "Held-out: ..."]

Per class: Dice, sensitivity, specificity, precision, AUC and HD95 in mm (with the data's
pixel spacing), each with a bootstrap 95 % CI and a verdict against the clinical thresholds;
a missed structure counts as the worst case (model/segmentation/metrics.py). With
--card-section the report is also written into the model's MODEL_CARD.md under that title
(replacing an earlier section of the same title). Exit status 0 whether or not the model
passes: the verdict is in the JSON ("passed").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from model.segmentation.dataset import DatasetError
from model.segmentation.evaluate import evaluate, update_card


class Command(BaseCommand):
    help = "Per-class Dice, sensitivity, specificity, precision, AUC and HD95 with 95 % CIs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", type=Path, required=True)
        parser.add_argument("--data", type=Path, required=True)
        parser.add_argument("--backend", choices=("torch", "onnx"), default="torch")
        parser.add_argument("--threads", type=int, default=2)
        parser.add_argument("--resamples", type=int, default=2000)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--card-section", default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        if not (options["model"] / "config.json").is_file():
            raise CommandError(f"{options['model']} has no config.json")
        try:
            report = evaluate(
                options["model"],
                options["data"],
                backend=options["backend"],
                threads=options["threads"],
                resamples=options["resamples"],
                seed=options["seed"],
            )
        except (DatasetError, ValueError) as error:
            raise CommandError(str(error)) from error
        if options["card_section"]:
            update_card(options["model"], options["card_section"], report)
        self.stdout.write(json.dumps(report, indent=2))
