"""Regions as people read them: the same box on several frames of a cine is one row.

    region_groups(regions) -> list[RegionGroup]     # regions in index order
    frames_label([0, 1, 2, 5]) -> "1-3, 6"          # frame numbers from 1, as people count

A 100-frame cine with its overlay text in three boxes has 300 regions (each frame's crop is
sealed on its own, so a restore stays exact) but three groups, numbered 1, 2, 3 in the order
of their first region. The grid image draws the group's number on every frame it covers
(`engine.detection.pipeline.region_group_key` is the grouping rule both use).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.detection.pipeline import region_group_key


@dataclass
class RegionGroup:
    number: int
    label: str
    box: tuple[int, int, int, int]
    regions: list[Any] = field(default_factory=list)

    @property
    def first(self) -> Any:
        return self.regions[0]

    @property
    def frames(self) -> list[int]:
        return sorted({int(r.frame) for r in self.regions})

    @property
    def frames_label(self) -> str:
        return frames_label(self.frames)

    @property
    def confidence(self) -> float:
        return max(float(r.confidence) for r in self.regions)


def frames_label(frames: Iterable[int]) -> str:
    """Zero-based frame indexes as people count them, in runs: "1-100", "1-3, 6"."""
    runs: list[list[int]] = []
    for frame in sorted(set(frames)):
        if runs and frame == runs[-1][1] + 1:
            runs[-1][1] = frame
        else:
            runs.append([frame, frame])
    return ", ".join(
        str(start + 1) if start == end else f"{start + 1}-{end + 1}" for start, end in runs
    )


def region_groups(regions: Sequence[Any]) -> list[RegionGroup]:
    """`regions` (Region rows or anything with index, frame, label, confidence and box)
    grouped by label and box, numbered from 1 by their first region's index."""
    groups: dict[tuple[str, int, int, int, int], RegionGroup] = {}
    for region in sorted(regions, key=lambda r: r.index):
        key = region_group_key(region.label, region.box)
        group = groups.get(key)
        if group is None:
            group = groups[key] = RegionGroup(len(groups) + 1, region.label, key[1:])
        group.regions.append(region)
    return list(groups.values())


def group_numbers(regions: Sequence[Any]) -> dict[int, int]:
    """Region index -> its group's number (what the grid draws)."""
    return {r.index: g.number for g in region_groups(regions) for r in g.regions}
