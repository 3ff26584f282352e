"""Reads of erasure tombstones (imaging.models.Erasure), for the admins' erasure page."""

from __future__ import annotations

from collections.abc import Sequence

from imaging.models import Erasure


def erasure_list_recent(*, limit: int = 20) -> Sequence[Erasure]:
    """The latest tombstones, newest first. They hold no identity, so any admin may read them."""
    return list(Erasure.objects.order_by("-erased_at", "-id")[:limit])
