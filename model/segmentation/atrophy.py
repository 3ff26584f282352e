"""Simulated atrophy on tissue probabilities: grey and white matter turned into CSF.

    atrophy(probabilities, level, side="both", *, distance=None) -> np.ndarray

Used by the volumetrics series generator (`volumetrics_data`) and by the training-slice
generator (`brain_tissue_data --atrophy-fraction`). Its own module so that neither generator
imports the other (import-linter's no-cycles contract). Classes: 0 background, 1 CSF,
2 grey matter, 3 white matter.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def atrophy(
    probabilities: np.ndarray,
    level: float,
    side: str = "both",
    *,
    distance: np.ndarray | None = None,
) -> np.ndarray:
    """`level` of each of grey and white matter (within `side`) turned into CSF, nearest to
    CSF first (volumetrics_data's notes say why). A new array; `probabilities` is (4, Z, H, W) with
    columns towards the patient's left. `distance`: each voxel's distance (mm) to the
    nearest CSF- or background-labelled voxel; computed from `probabilities` when not given."""
    out = probabilities.copy()
    if level <= 0:
        return out
    if distance is None:
        distance = np.asarray(
            ndimage.distance_transform_edt(np.argmax(probabilities, axis=0) >= 2), np.float32
        )
    width = probabilities.shape[3]
    middle = (width - 1) / 2.0
    columns = np.arange(width)
    region = np.ones(probabilities.shape[1:], dtype=bool)
    if side == "left":
        region &= (columns > middle)[None, None, :]
    elif side == "right":
        region &= (columns < middle)[None, None, :]
    for k in (2, 3):
        tissue = out[k]
        where = np.flatnonzero(region.ravel() & (tissue.ravel() > 0))
        order = where[np.argsort(distance.ravel()[where], kind="stable")]
        mass = tissue.ravel()[order]
        target = level * float(mass.sum())
        cumulative = np.cumsum(mass, dtype=np.float64)
        whole = int(np.searchsorted(cumulative, target, side="right"))
        taken = np.zeros_like(mass)
        taken[:whole] = mass[:whole]
        if whole < len(mass):
            taken[whole] = target - (cumulative[whole - 1] if whole else 0.0)
        flat_tissue, flat_csf = out[k].reshape(-1), out[1].reshape(-1)
        flat_tissue[order] -= taken
        flat_csf[order] += taken
    return out
