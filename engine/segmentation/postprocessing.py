"""Post-processing of a label map: morphological clean-up and connected components.

    PostprocessConfig(opening=0, closing=0, keep_largest=(), min_size=0)
    postprocess(labels, config) -> labels

Plain module (arrays in, arrays out). Configured per model in its `config.json` under
"postprocessing" (see `engine.segmentation.model.ModelConfig`); the default changes nothing, so a
model's evaluation figures are those of the raw network unless its config says otherwise.

For every foreground class k, in index order:
- `closing` r: binary closing of (labels == k) with a cross-shaped element grown r times
  (fills gaps and dents up to about 2r pixels); the pixels it adds become k.
- `opening` r: binary opening the same way (removes spurs and specks thinner than 2r).
- `keep_largest` lists classes that are one structure (a liver, a lesion-free organ): only
  their largest connected component is kept.
- `min_size` n: connected components of any foreground class smaller than n pixels (voxels
  for a volume) are removed.
Pixels a step takes away from class k are not simply made background, which would punch holes
into the neighbouring structures: each is given the label of the nearest pixel of another
class (Euclidean distance). Components are found in the label map's own dimensions (a volume
segmented slice by slice is cleaned as a volume), face connectivity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class PostprocessConfig:
    opening: int = 0
    closing: int = 0
    keep_largest: tuple[int, ...] = ()
    min_size: int = 0

    def __post_init__(self) -> None:
        if self.opening < 0 or self.closing < 0 or self.min_size < 0:
            raise ValueError("opening, closing and min_size must be >= 0")
        if any(int(k) <= 0 for k in self.keep_largest):
            raise ValueError("keep_largest lists foreground class indices (>= 1)")

    @property
    def is_identity(self) -> bool:
        return not (self.opening or self.closing or self.keep_largest or self.min_size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "opening": self.opening,
            "closing": self.closing,
            "keep_largest": list(self.keep_largest),
            "min_size": self.min_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PostprocessConfig:
        data = dict(data or {})
        unknown = set(data) - {"opening", "closing", "keep_largest", "min_size"}
        if unknown:
            raise ValueError(f"unknown post-processing options: {', '.join(sorted(unknown))}")
        return cls(
            opening=int(data.get("opening", 0)),
            closing=int(data.get("closing", 0)),
            keep_largest=tuple(int(k) for k in data.get("keep_largest", ())),
            min_size=int(data.get("min_size", 0)),
        )


def _fill_from_nearest(labels: np.ndarray, removed: np.ndarray, k: int) -> np.ndarray:
    """Give every removed pixel of class k the label of the nearest pixel of another class."""
    donors = (labels != k) & ~removed
    if not donors.any():
        out = labels.copy()
        out[removed] = 0
        return out
    _, nearest = ndimage.distance_transform_edt(~donors, return_indices=True)
    out = labels.copy()
    out[removed] = labels[tuple(nearest)][removed]
    return out


def _largest_component(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    components, count = ndimage.label(mask, structure=structure)
    if count <= 1:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return cast("np.ndarray", components == int(np.argmax(sizes)))


def _small_components(mask: np.ndarray, structure: np.ndarray, min_size: int) -> np.ndarray:
    components, count = ndimage.label(mask, structure=structure)
    if count == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(components.ravel())
    small = sizes < min_size
    small[0] = False
    return cast("np.ndarray", small[components])


def postprocess(labels: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    """The cleaned label map (same shape and dtype). Background is class 0."""
    if config.is_identity:
        return labels
    out = np.array(labels, copy=True)
    structure = ndimage.generate_binary_structure(out.ndim, 1)
    classes = [int(k) for k in np.unique(out) if k != 0]
    for k in classes:
        mask = out == k
        if config.closing:
            closed = ndimage.binary_closing(mask, structure, iterations=config.closing)
            out[closed & ~mask] = k
            mask = closed
        removed = np.zeros_like(mask)
        if config.opening:
            opened = ndimage.binary_opening(mask, structure, iterations=config.opening)
            removed |= mask & ~opened
            mask = opened
        if k in config.keep_largest:
            kept = _largest_component(mask, structure)
            removed |= mask & ~kept
            mask = kept
        if config.min_size:
            small = _small_components(mask, structure, config.min_size)
            removed |= small
        if removed.any():
            out = _fill_from_nearest(out, removed, k)
    return out.astype(labels.dtype, copy=False)
