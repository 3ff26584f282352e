"""Panels that apps above imaging add to the scan page and the statistics page.

    scan_panel_register(provider)          provider(*, scan, user) -> Panel | None
    scan_panels(*, scan, user) -> list[Panel]
    statistics_panel_register(provider)    provider() -> Panel | None
    statistics_panels() -> list[Panel]

pages and gateway are sibling layers (pyproject.toml, the "apps" contract): the scan page may
not import gateway to show a scan's forwards, nor the statistics page the gateway's health.
Both import imaging, so the meeting point is here: an app registers a provider from its
AppConfig.ready (gateway.apps), and pages asks for the panels and includes each panel's
template with its context. imaging itself knows no provider. A provider reads, never writes,
and returns None when it has nothing to show for this scan.

A provider that raises is logged and left out: a broken add-on must not keep a doctor from
the image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from imaging.models import Scan

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Panel:
    """A card for a page: `template` is rendered with `panel` (this object) in its context."""

    key: str
    title: str
    template: str
    context: Mapping[str, Any] = field(default_factory=dict)


ScanPanelProvider = Callable[..., Panel | None]
StatisticsPanelProvider = Callable[[], Panel | None]

_scan_providers: dict[str, ScanPanelProvider] = {}
_statistics_providers: dict[str, StatisticsPanelProvider] = {}


def scan_panel_register(key: str, provider: ScanPanelProvider) -> None:
    """Add (or replace, by key: ready() may run twice) a scan-page panel provider."""
    _scan_providers[key] = provider


def statistics_panel_register(key: str, provider: StatisticsPanelProvider) -> None:
    """Add (or replace, by key) a statistics-page panel provider."""
    _statistics_providers[key] = provider


def scan_panels(*, scan: Scan, user: Any) -> list[Panel]:
    """The panels for a scan the caller has already read through its scoped selector."""
    panels = []
    for key, provider in _scan_providers.items():
        try:
            panel = provider(scan=scan, user=user)
        except Exception:  # noqa: BLE001 - see the module docstring
            logger.exception("scan panel %s failed for scan %s", key, scan.pk)
            continue
        if panel is not None:
            panels.append(panel)
    return panels


def statistics_panels() -> list[Panel]:
    panels = []
    for key, provider in _statistics_providers.items():
        try:
            panel = provider()
        except Exception:  # noqa: BLE001 - see the module docstring
            logger.exception("statistics panel %s failed", key)
            continue
        if panel is not None:
            panels.append(panel)
    return panels
