"""Tissue volumes of a brain MR label volume, and how its two hemispheres compare.

    brain_volumetrics(labels, spacing_mm, classes, lr_axis=2, left_is_high=True,
                      image=None) -> Volumetrics
    signal_slices(image) -> bool per slice
    lr_axis_from_orientation(image_orientation) -> (axis, left_is_high)
    mid_sagittal_index(inside, axis) -> float

Labels: a (slices, rows, columns) volume of class indices; which index is CSF, grey and white
matter is read from the model's class names (`csf`, `grey_matter`/`gray_matter`,
`white_matter`), so a retrained model with another order still measures right.

Measures: volumes in mL (voxel count x voxel volume), intracranial volume ICV = GM + WM + CSF
(the segmented intracranial content: no skull, no dura), brain parenchymal fraction
BPF = (GM + WM) / ICV, grey and white matter fractions of ICV, the grey/white ratio, and per
tissue the asymmetry index AI = (L - R) / ((L + R) / 2) (positive: the left is larger).

Slices without signal: with `image` (the grey volume the labels came from), slices whose
99.9th percentile is under SIGNAL_FRACTION of the volume's brightest slice's are left out
(counted as background, with a note): air above the head is noise, and a network that
normalises each slice amplifies that noise into "tissue" (measured: the shipped model labelled
20-30 % of an empty 256 x 256 noise slice as grey or white matter).

Hemispheres: the mid-sagittal plane is taken perpendicular to the left-right array axis (from
the DICOM orientation) at the position that makes the intracranial mask (every non-background
voxel) most symmetric: for each candidate plane c (half-voxel steps within the middle 30 % of
the mask's extent) the mask is mirrored about c and the overlap counted; the best c wins.
The intracranial mask, not the tissue, is mirrored because atrophy turns tissue into CSF but
leaves the skull's inner outline where it was, so one shrunken hemisphere does not pull the
plane towards it. A voxel whose centre lies on the plane counts half to each side. Not
modelled: a head rotated about the vertical axis (yaw) or tilted sideways (roll); the plane
stays perpendicular to the array axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TISSUES = ("csf", "grey_matter", "white_matter")
_ALIASES = {"gray_matter": "grey_matter", "cerebrospinal_fluid": "csf"}
SEARCH_FRACTION = 0.30  # the plane is sought within the middle 30 % of the head's extent
SIGNAL_FRACTION = 0.25


def signal_slices(image: np.ndarray) -> np.ndarray:
    """True for each slice of (slices, rows, columns) `image` that holds signal (see above)."""
    data = np.asarray(image, dtype=np.float32)
    flat = data.reshape(data.shape[0], -1)
    high = np.percentile(flat, 99.9, axis=1)
    low = float(np.percentile(flat, 1.0))
    top = float(high.max()) - low
    if top <= 0:  # no signal anywhere: no slice holds a head
        return np.zeros(data.shape[0], dtype=bool)
    return np.asarray((high - low) >= SIGNAL_FRACTION * top)


def tissue_indices(classes: Mapping[int, str]) -> dict[str, int]:
    """{"csf": i, "grey_matter": j, "white_matter": k} from a model's class names; KeyError
    when one of the three is missing (not a brain-tissue model)."""
    found = {}
    for index, name in classes.items():
        key = _ALIASES.get(str(name).lower(), str(name).lower())
        if key in TISSUES:
            found[key] = int(index)
    missing = [t for t in TISSUES if t not in found]
    if missing:
        raise KeyError(f"not a brain-tissue model: no class {', '.join(missing)}")
    return found


def is_brain_tissue_model(classes: Mapping[int, str]) -> bool:
    try:
        tissue_indices(classes)
    except KeyError:
        return False
    return True


def lr_axis_from_orientation(orientation: Sequence[float] | None) -> tuple[int, bool]:
    """(array axis running left-right, whether the left is at the high indices) for a stack of
    slices (slice, row, column) with DICOM Image Orientation (Patient) `orientation`.

    DICOM patient axes are LPS: +x points to the patient's left. The first three values are
    the direction of increasing column index, the last three of increasing row index; the
    slice axis runs along their cross product. Without an orientation: columns, left at the
    high indices (an axial slice as scanners write it, radiological convention)."""
    if orientation is None or len(orientation) != 6:
        return 2, True
    row = np.asarray(orientation[:3], dtype=float)
    column = np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row, column)
    # x components of the directions of increasing column, row and slice index.
    candidates = {2: row[0], 1: column[0], 0: normal[0]}
    axis = max(candidates, key=lambda a: abs(candidates[a]))
    return axis, bool(candidates[axis] > 0)


def mid_sagittal_index(inside: np.ndarray, axis: int) -> float:
    """The index (a whole or half voxel) along `axis` of the plane about which `inside` (a
    boolean mask) is most symmetric; the mask's centre when it is empty or flat."""
    profile = np.moveaxis(inside, axis, 0)
    n = int(profile.shape[0])
    occupied = np.flatnonzero(profile.reshape(n, -1).any(axis=1))
    if len(occupied) < 2:
        return (n - 1) / 2.0
    first, last = int(occupied[0]), int(occupied[-1])
    centre2 = first + last  # twice the centre index
    reach = max(1, int(round(SEARCH_FRACTION * (last - first))))
    best, best_score = centre2, -1
    flat = profile.reshape(n, -1)
    for doubled in range(centre2 - reach, centre2 + reach + 1):
        # Mirror i -> doubled - i; count voxels inside on both sides of the pair.
        lo = max(0, doubled - (n - 1))
        hi = min(n - 1, doubled)
        if hi < lo:
            continue
        idx = np.arange(lo, hi + 1)
        score = int(np.logical_and(flat[idx], flat[doubled - idx]).sum())
        if score > best_score or (
            score == best_score and abs(doubled - centre2) < abs(best - centre2)
        ):
            best, best_score = doubled, score
    return best / 2.0


def _side_weights(n: int, index: float, left_is_high: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per index along the left-right axis: the share of a voxel on the left and the right."""
    positions = np.arange(n, dtype=float)
    high = np.where(positions > index, 1.0, np.where(positions == index, 0.5, 0.0))
    low = 1.0 - high
    return (high, low) if left_is_high else (low, high)


@dataclass(frozen=True)
class Volumetrics:
    volumes_ml: dict[str, float]
    icv_ml: float
    bpf: float
    gm_fraction: float
    wm_fraction: float
    csf_fraction: float
    grey_white_ratio: float | None
    hemispheres_ml: dict[str, dict[str, float]]
    asymmetry: dict[str, float | None]
    hemisphere_split: dict[str, Any]
    spacing_mm: list[float]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "volumes_ml": self.volumes_ml,
            "icv_ml": self.icv_ml,
            "bpf": self.bpf,
            "gm_fraction": self.gm_fraction,
            "wm_fraction": self.wm_fraction,
            "csf_fraction": self.csf_fraction,
            "grey_white_ratio": self.grey_white_ratio,
            "hemispheres_ml": self.hemispheres_ml,
            "asymmetry": self.asymmetry,
            "hemisphere_split": self.hemisphere_split,
            "spacing_mm": self.spacing_mm,
            "notes": self.notes,
        }


def asymmetry_index(left: float, right: float) -> float | None:
    """(L - R) / ((L + R) / 2); None when both are empty."""
    mean = (left + right) / 2.0
    return (left - right) / mean if mean > 0 else None


def brain_volumetrics(
    labels: np.ndarray,
    spacing_mm: Sequence[float],
    classes: Mapping[int, str],
    *,
    lr_axis: int = 2,
    left_is_high: bool = True,
    image: np.ndarray | None = None,
) -> Volumetrics:
    """Measures of a (slices, rows, columns) label volume with voxel `spacing_mm` (slice,
    row, column). ValueError for a volume that is not 3D or holds no intracranial voxel."""
    volume = np.asarray(labels)
    if volume.ndim != 3:
        raise ValueError("volumetrics needs a 3D label volume")
    spacing = [float(s) for s in spacing_mm]
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise ValueError("spacing must be three positive millimetre values")
    index = tissue_indices(classes)
    notes = []
    if image is not None:
        keep = signal_slices(image)
        if not keep.all():
            volume = np.where(keep[:, None, None], volume.astype(np.int16), -1)
            notes.append(
                f"{int((~keep).sum())} of {len(keep)} slices without signal left out "
                "(air above or below the head)"
            )
    voxel_ml = float(np.prod(spacing)) / 1000.0

    # Voxel counts per tissue and per index along the left-right axis, in one pass each.
    other_axes = tuple(a for a in range(3) if a != lr_axis)
    profiles = {
        tissue: (volume == index[tissue]).sum(axis=other_axes).astype(float) for tissue in TISSUES
    }
    volumes = {t: float(p.sum()) * voxel_ml for t, p in profiles.items()}
    icv = sum(volumes.values())
    if icv <= 0:
        raise ValueError("no intracranial voxel in the label volume")
    inside = np.isin(volume, [index[t] for t in TISSUES])
    split = mid_sagittal_index(inside, lr_axis)
    left_w, right_w = _side_weights(volume.shape[lr_axis], split, left_is_high)
    hemispheres = {
        "left": {t: float(profiles[t] @ left_w) * voxel_ml for t in TISSUES},
        "right": {t: float(profiles[t] @ right_w) * voxel_ml for t in TISSUES},
    }
    parenchyma = {
        side: hemispheres[side]["grey_matter"] + hemispheres[side]["white_matter"]
        for side in ("left", "right")
    }
    asymmetry = {
        t: asymmetry_index(hemispheres["left"][t], hemispheres["right"][t]) for t in TISSUES
    }
    asymmetry["parenchyma"] = asymmetry_index(parenchyma["left"], parenchyma["right"])
    gm, wm, csf = volumes["grey_matter"], volumes["white_matter"], volumes["csf"]
    extent = volume.shape[lr_axis]
    if not (0.2 * extent < split < 0.8 * extent):
        notes.append("the mid-sagittal plane lies far from the centre: is the head in view?")
    return Volumetrics(
        volumes_ml={k: round(v, 3) for k, v in volumes.items()},
        icv_ml=round(icv, 3),
        bpf=round((gm + wm) / icv, 5),
        gm_fraction=round(gm / icv, 5),
        wm_fraction=round(wm / icv, 5),
        csf_fraction=round(csf / icv, 5),
        grey_white_ratio=round(gm / wm, 5) if wm > 0 else None,
        hemispheres_ml={s: {t: round(v, 3) for t, v in d.items()} for s, d in hemispheres.items()},
        asymmetry={t: (round(a, 5) if a is not None else None) for t, a in asymmetry.items()},
        hemisphere_split={
            "axis": int(lr_axis),
            "index": float(split),
            "left": "high" if left_is_high else "low",
            "method": "intracranial-mask mirror symmetry",
        },
        spacing_mm=spacing,
        notes=notes,
    )
