"""Brain MR series with known tissue volumes and simulated atrophy, from the MNI152 template.

    python -m model.segmentation.volumetrics_data --out DIR [--levels 0,0.1,0.2,0.3]
        [--sides both,left] [--slice-mm 3] [--pixel-mm 1] [--size 256] [--age 045Y --sex F]

Source: the ICBM152 2009 symmetric template's grey- and white-matter probability maps that ship
with `nilearn` (read offline by brain_tissue_data.load_template; CSF is what is left inside the
brain). The template is an average of young adults, so level 0 is a young, healthy brain.

Atrophy: a fraction `level` of the grey matter and the same fraction of the white matter (of
the whole brain, or of one hemisphere with `side`) is turned into CSF, starting with the tissue
nearest to CSF or background and moving inwards: sulci widen (grey matter) and the ventricles
grow (white matter), as in atrophy, and the moved amount is exact, so the true volumes are
known. The last voxel taken gives up only part of its probability.

Reslicing: the 1 mm probabilities are averaged over blocks of `slice_mm` slices and
`pixel_mm` x `pixel_mm` pixels (partial volume, as a thick-slice scanner records it), then
centred on a `size` x `size` grid. Ground truth = the sum of each tissue's resliced
probability times the voxel volume: the volume a perfect partial-volume measurement gives.
The image: a T1-like contrast (CSF dark, grey matter mid, white matter bright) mixed through
the probabilities, with Gaussian noise, as uint16. Columns run to the patient's left (the
template's are flipped), rows to posterior, slices upwards: DICOM orientation 1\\0\\0\\0\\1\\0.

Written with the project's DICOM series writer (engine.dicom.series.mr_series): one directory
per case, `<case>/slice-NNN.dcm`, plus `cases.json` with each case's level, side and true
volumes. Data goes under /work/data/, never into the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.dicom.series import SeriesPatient, mr_series
from model.segmentation.atrophy import atrophy as atrophy_probabilities
from model.segmentation.brain_tissue_data import load_template

T1_MEANS = (0.0, 250.0, 1100.0, 1900.0)  # background, CSF, grey, white matter
NOISE_SD = 25.0
TISSUES = {1: "csf", 2: "grey_matter", 3: "white_matter"}


@dataclass(frozen=True)
class Case:
    name: str
    level: float
    side: str  # "both", "left" or "right"
    spacing_mm: tuple[float, float, float]  # slice, row, column
    probabilities: np.ndarray  # (4, Z, H, W) resliced
    image: np.ndarray  # (Z, H, W) uint16

    def true_volumes_ml(self) -> dict[str, float]:
        voxel_ml = float(np.prod(self.spacing_mm)) / 1000.0
        return {
            name: round(float(self.probabilities[k].sum()) * voxel_ml, 3)
            for k, name in TISSUES.items()
        }

    def true_hemispheres_ml(self) -> dict[str, dict[str, float]]:
        """Left = columns above the template's (symmetric) midline."""
        voxel_ml = float(np.prod(self.spacing_mm)) / 1000.0
        width = self.probabilities.shape[3]
        middle = (width - 1) / 2.0
        columns = np.arange(width, dtype=float)
        left = np.where(columns > middle, 1.0, np.where(columns == middle, 0.5, 0.0))
        out: dict[str, dict[str, float]] = {"left": {}, "right": {}}
        for k, name in TISSUES.items():
            per_column = self.probabilities[k].sum(axis=(0, 1))
            out["left"][name] = round(float(per_column @ left) * voxel_ml, 3)
            out["right"][name] = round(float(per_column @ (1.0 - left)) * voxel_ml, 3)
        return out


@cache
def oriented_template() -> tuple[np.ndarray, np.ndarray]:
    """Template probabilities with columns towards the patient's left, and each voxel's
    distance (mm) to the nearest CSF- or background-labelled voxel."""
    template = load_template()
    probabilities = np.ascontiguousarray(template.probabilities[..., ::-1])
    labels = np.argmax(probabilities, axis=0)
    distance = ndimage.distance_transform_edt(labels >= 2)
    return probabilities, np.asarray(distance, dtype=np.float32)


def atrophy(probabilities: np.ndarray, level: float, side: str = "both") -> np.ndarray:
    """`level` of each of grey and white matter (within `side`) turned into CSF, nearest to
    CSF first (see the module's notes). A new array; `probabilities` is (4, Z, H, W) with
    columns towards the patient's left. The template's own distances are reused when the
    shape is the template's (`model.segmentation.atrophy.atrophy` computes them otherwise)."""
    _, distance = oriented_template()
    known = distance if distance.shape == probabilities.shape[1:] else None
    return atrophy_probabilities(probabilities, level, side, distance=known)


def _block_mean(array: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Average (…, Z, H, W) over blocks of `factors`, padding the far ends with background."""
    lead = array.shape[:-3]
    shape = array.shape[-3:]
    padded_shape = tuple(-(-n // f) * f for n, f in zip(shape, factors, strict=True))
    pad = [(0, 0)] * len(lead) + [(0, p - n) for n, p in zip(shape, padded_shape, strict=True)]
    padded = np.pad(array, pad)
    reshaped = padded.reshape(
        *lead,
        padded_shape[0] // factors[0],
        factors[0],
        padded_shape[1] // factors[1],
        factors[1],
        padded_shape[2] // factors[2],
        factors[2],
    )
    n = len(lead)
    return reshaped.mean(axis=(n + 1, n + 3, n + 5))


def _centre(array: np.ndarray, size: int) -> np.ndarray:
    """Centre-pad (zeros) or crop the last two axes to size x size."""
    out = array
    for axis in (-2, -1):
        n = out.shape[axis]
        if n < size:
            before = (size - n) // 2
            pad = [(0, 0)] * out.ndim
            pad[axis] = (before, size - n - before)
            out = np.pad(out, pad)
        elif n > size:
            start = (n - size) // 2
            out = np.take(out, range(start, start + size), axis=axis)
    return out


def make_case(
    level: float,
    side: str = "both",
    *,
    slice_mm: int = 3,
    pixel_mm: int = 1,
    size: int = 256,
    z_range: tuple[int, int] | None = None,
    seed: int = 0,
) -> Case:
    """One series: atrophy at `level` on `side`, resliced; `z_range` (1 mm template slices)
    keeps a slab only."""
    probabilities, _ = oriented_template()
    changed = atrophy(probabilities, level, side)
    if z_range is not None:
        changed = changed[:, z_range[0] : z_range[1]]
    resliced = _block_mean(changed, (slice_mm, pixel_mm, pixel_mm))
    # Padded far ends have no probability at all: call them background.
    empty = resliced.sum(axis=0) < 1e-6
    resliced[0][empty] = 1.0
    resliced = np.stack([_centre(p, size) for p in resliced])
    resliced[0][resliced.sum(axis=0) < 1e-6] = 1.0
    rng = np.random.default_rng(seed)
    image = np.tensordot(np.asarray(T1_MEANS, dtype=np.float32), resliced, axes=1)
    # Skull-stripped, as the model's training data: zero outside the intracranial mask.
    image = (image + rng.normal(0.0, NOISE_SD, image.shape)) * (resliced[0] < 0.5)
    pixels = np.clip(np.rint(image), 0, 4095).astype(np.uint16)
    name = f"atrophy-{side}-{int(round(level * 100)):02d}"
    spacing = (float(slice_mm), float(pixel_mm), float(pixel_mm))
    return Case(name, level, side, spacing, resliced.astype(np.float32), pixels)


def write_case(case: Case, out: Path, patient: SeriesPatient | None = None) -> list[Path]:
    directory = out / case.name
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, data in enumerate(mr_series(case.image, case.spacing_mm, patient=patient)):
        path = directory / f"slice-{k:03d}.dcm"
        path.write_bytes(data)
        paths.append(path)
    return paths


def case_record(case: Case) -> dict[str, Any]:
    return {
        "name": case.name,
        "level": case.level,
        "side": case.side,
        "spacing_mm": list(case.spacing_mm),
        "shape": list(case.image.shape),
        "true_volumes_ml": case.true_volumes_ml(),
        "true_hemispheres_ml": case.true_hemispheres_ml(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--levels", default="0,0.1,0.2,0.3")
    parser.add_argument("--sides", default="both,left")
    parser.add_argument("--slice-mm", type=int, default=3)
    parser.add_argument("--pixel-mm", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--age", default="025Y", help="Patient's Age written in the headers")
    parser.add_argument("--sex", default="F")
    args = parser.parse_args(argv)
    patient = SeriesPatient(age=args.age, sex=args.sex)
    records = []
    for side in args.sides.split(","):
        for level in (float(v) for v in args.levels.split(",")):
            if level == 0 and side != args.sides.split(",")[0]:
                continue  # one healthy case is enough
            case = make_case(
                level, side, slice_mm=args.slice_mm, pixel_mm=args.pixel_mm, size=args.size
            )
            write_case(case, args.out, patient)
            records.append(case_record(case))
            print(case.name, case.image.shape, case.true_volumes_ml(), flush=True)
    (args.out / "cases.json").write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
