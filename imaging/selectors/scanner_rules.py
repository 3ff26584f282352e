"""Per-scanner rules (imaging.models.ScannerRule): the boxes always redacted on one scanner
model's images, and the rules that technicians' hand-added boxes suggest.

    scanner_of(header) -> (manufacturer, model_name)       # from a DICOM header
    rule_boxes(manufacturer=, model_name=, width=, height=) -> [(x0, y0, x1, y1), ...]
    rule_suggestions(min_scans=None) -> [Suggestion, ...]   # for the admin's rule list

A suggestion is a box that technicians added by hand, at about the same place (intersection
over union >= SUGGEST_IOU), on at least SCANNER_RULE_SUGGEST_AFTER different scans of the same
manufacturer, model and image size, that no active rule covers yet: the detector keeps missing
something there, and a rule would cover it on every later image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from imaging.models import Region, RegionSource, ScannerRule

SUGGEST_IOU = 0.5
# The newest hand-added regions looked at for suggestions (enough for any real review rate).
SUGGEST_WINDOW = 5000

Box = tuple[int, int, int, int]


def scanner_of(header: Any) -> tuple[str, str]:
    """(Manufacturer, Manufacturer Model Name) of a DICOM header, stripped; blanks if absent."""
    return (
        str(header.get("Manufacturer", "") or "").strip()[:64],
        str(header.get("ManufacturerModelName", "") or "").strip()[:64],
    )


def rule_boxes(*, manufacturer: str, model_name: str, width: int, height: int) -> list[Box]:
    """Every box of every active rule matching this scanner and size, in rule order."""
    boxes: list[Box] = []
    for rule in ScannerRule.objects.matching(
        manufacturer=manufacturer, model_name=model_name, width=width, height=height
    ):
        boxes += [(int(b[0]), int(b[1]), int(b[2]), int(b[3])) for b in rule.boxes]
    return boxes


def iou(a: Sequence[int], b: Sequence[int]) -> float:
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, right - left) * max(0, bottom - top)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _covered(box: Box, rules: Sequence[Box]) -> bool:
    """Whether at least 90 % of `box` lies inside one rule box."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    for rule in rules:
        left, top = max(box[0], rule[0]), max(box[1], rule[1])
        right, bottom = min(box[2], rule[2]), min(box[3], rule[3])
        if area > 0 and max(0, right - left) * max(0, bottom - top) >= 0.9 * area:
            return True
    return False


@dataclass
class Suggestion:
    manufacturer: str
    model_name: str
    width: int
    height: int
    box: Box  # the union of the hand-added boxes, so a rule covers every one of them
    scan_ids: set[int] = field(default_factory=set)
    boxes: list[Box] = field(default_factory=list)

    @property
    def scans(self) -> int:
        return len(self.scan_ids)


def rule_suggestions(min_scans: int | None = None) -> list[Suggestion]:
    """Rules that hand-added boxes suggest, most scans first (see the module's docstring).
    Scans processed before scanner names were recorded (metrics without "scanner") or of no
    named manufacturer (PNG, JPEG, a DICOM without Manufacturer) suggest nothing."""
    needed = min_scans if min_scans is not None else settings.SCANNER_RULE_SUGGEST_AFTER
    regions = (
        Region.objects.filter(source=RegionSource.MANUAL)
        .select_related("scan")
        .only("scan__id", "scan__metrics", "scan__width", "scan__height", "x1", "y1", "x2", "y2")
        .order_by("-id")[:SUGGEST_WINDOW]
    )
    clusters: dict[tuple[str, str, int, int], list[Suggestion]] = {}
    for region in regions:
        scanner = (region.scan.metrics or {}).get("scanner") or {}
        manufacturer = str(scanner.get("manufacturer", "")).strip()
        if not manufacturer:
            continue
        key = (
            manufacturer.upper(),
            str(scanner.get("model", "")).strip().upper(),
            region.scan.width,
            region.scan.height,
        )
        box = region.box
        groups = clusters.setdefault(key, [])
        for group in groups:
            if any(iou(box, other) >= SUGGEST_IOU for other in group.boxes):
                break
        else:
            group = Suggestion(
                manufacturer, str(scanner.get("model", "")).strip(), key[2], key[3], box
            )
            groups.append(group)
        group.boxes.append(box)
        group.scan_ids.add(region.scan.id)
        group.box = (
            min(group.box[0], box[0]),
            min(group.box[1], box[1]),
            max(group.box[2], box[2]),
            max(group.box[3], box[3]),
        )
    # Every active rule once, matched here as ScannerRuleQuerySet.matching does.
    rules = list(ScannerRule.objects.filter(active=True))
    suggestions = []
    for (manufacturer, model_name, width, height), groups in clusters.items():
        ruled = [
            (int(b[0]), int(b[1]), int(b[2]), int(b[3]))
            for rule in rules
            if rule.manufacturer.upper() == manufacturer
            and rule.model_name.upper() in ("", model_name)
            and (rule.width is None or (rule.width, rule.height) == (width, height))
            for b in rule.boxes
        ]
        suggestions += [g for g in groups if g.scans >= needed and not _covered(g.box, ruled)]
    return sorted(suggestions, key=lambda s: (-s.scans, s.manufacturer, s.model_name, s.box))
