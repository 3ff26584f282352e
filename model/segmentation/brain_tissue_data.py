"""Synthetic brain-tissue slices from the MNI152 template, SynthSeg-style.

    python model/segmentation/brain_tissue_data.py --out DIR [--n-train 4000]
        [--n-val 200] [--n-test 400] [--size 256] [--seed 20261121] [--preview 8]

Source: the skull-stripped ICBM152 2009 T1 template and its grey- and white-matter probability
maps that ship inside the `nilearn` package (`nilearn/datasets/data/mni_icbm152_*`), read
offline; nothing is downloaded. The package has no CSF map, so CSF is what is left inside the
brain: p_csf = clip(1 - p_gm - p_wm) within the filled template mask. Labels are
0 background, 1 CSF, 2 grey matter, 3 white matter (argmax of the four probabilities).

Why synthetic contrast: with one subject and one contrast, a network learns that T1 image by
heart. As in SynthSeg (Billot et al., 2023), every sample gets a fresh random contrast (each
tissue a random mean and spread, mixed through the partial-volume probabilities, so the
image is not tied to T1 ordering; grey and white matter means at least 0.12 apart and CSF
0.08 from both, as in any real scan), a random smooth bias field, random resolution (blur and
down/up-sampling along one or both axes), Gaussian or Rician noise, gamma, and a random
affine plus elastic deformation applied to the probabilities before the label is taken, so
image and mask stay aligned.

Held-out design: axial slices are grouped into contiguous slabs of SLAB slices. Slab i is
`test` when i % 5 == 2, `val` when i % 5 == 4, else `train`; the GAP slices next to a
held-out slab are dropped from every split, because neighbouring 1 mm slices are near copies.
Each split draws its augmentation from its own seed stream (SeedSequence spawn key = split),
so test images use slabs and random draws that training never saw.

Output follows model/segmentation/dataset.py: OUT/<split>/images/<case>.png (8-bit),
OUT/<split>/masks/<case>.png (class indices), OUT/<split>/classes.json, and
OUT/<split>/manifest.json (slab, slice index and seed of every case).

Atrophy (`--atrophy-fraction F --atrophy-max L`): the one template is a young brain with
narrow sulci and small ventricles, so a network trained on it alone labels widened CSF as
grey matter. With this option a fraction F of the cases first has a random level in [0, L]
of its grey and of its white matter (both hemispheres, or the columns of one side) turned
into CSF by `model.segmentation.atrophy.atrophy`, nearest to CSF first, on the slice's probabilities
BEFORE the deformation and contrast draws, so image and mask stay aligned. The atrophy draws
come from their own seed stream, so the other cases are the same as without the option; the
manifest records `atrophy_level` and `atrophy_side` for every case (0.0 and "none" when not
atrophied). The side is atrophy()'s: "left" takes the columns past the middle, which in
this module's slices (columns towards the patient's right, unlike volumetrics_data's) is the
patient's right; the training draws are symmetric, so this only matters when reading the
manifest. Use a new --seed and a new --out for such training sets: the test and val
splits' definition (slabs, seeds) is unchanged.
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

from model.segmentation.atrophy import atrophy

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

CLASSES = {0: "background", 1: "csf", 2: "grey_matter", 3: "white_matter"}
SPLITS = ("train", "val", "test")
SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}
SLAB = 10
GAP = 2
MIN_BRAIN_PIXELS = 1500  # axial slices with less brain than this are caps, not useful
DEFAULT_SEED = 20261121


@dataclass(frozen=True)
class Template:
    """Axial stacks (Z, H, W): probabilities for the four classes, float32, summing to 1."""

    probabilities: np.ndarray  # (4, Z, H, W)
    labels: np.ndarray  # (Z, H, W) uint8
    t1: np.ndarray  # (Z, H, W) float32 in 0..1, for previews only


def _nilearn_data_dir() -> Path:
    import nilearn

    return Path(nilearn.__file__).resolve().parent / "datasets" / "data"


@cache
def load_template() -> Template:
    import nibabel as nib

    data_dir = _nilearn_data_dir()

    def volume(kind: str) -> np.ndarray:
        path = data_dir / f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"
        # nibabel types load() as its base class; these files load as Nifti1Image.
        image: Any = nib.load(path)
        return np.asarray(image.get_fdata(dtype=np.float32)) / 255.0

    t1, gm, wm = volume("t1"), volume("gm"), volume("wm")
    inside = ndimage.binary_fill_holes(t1 > 0.02) | (gm + wm > 0.5)
    csf = np.where(inside, np.clip(1.0 - gm - wm, 0.0, 1.0), 0.0)
    gm, wm = np.where(inside, gm, 0.0), np.where(inside, wm, 0.0)
    background = np.where(inside, 0.0, 1.0)
    stacked = np.stack([background, csf, gm, wm]).astype(np.float32)
    stacked /= stacked.sum(axis=0, keepdims=True)
    # NIfTI (x, y, z) RAS -> axial slices (z, rows=anterior at top, cols=left-right).
    axial = np.flip(np.transpose(stacked, (0, 3, 2, 1)), axis=2)
    t1_axial = np.flip(np.transpose(t1, (2, 1, 0)), axis=1)
    labels = np.argmax(axial, axis=0).astype(np.uint8)
    return Template(np.ascontiguousarray(axial), labels, np.ascontiguousarray(t1_axial))


def slab_splits(labels: np.ndarray) -> dict[str, list[tuple[int, int]]]:
    """(slab, slice) pairs per split; GAP slices beside a slab of another split are dropped."""
    brain = (labels > 0).reshape(labels.shape[0], -1).sum(axis=1)
    slices = np.flatnonzero(brain >= MIN_BRAIN_PIXELS)
    first = int(slices.min())
    last = int(slices.max())

    def split_of(slab: int) -> str:
        return {2: "test", 4: "val"}.get(slab % 5, "train")

    out: dict[str, list[tuple[int, int]]] = {name: [] for name in SPLITS}
    for z in range(first, last + 1):
        slab = (z - first) // SLAB
        name = split_of(slab)
        neighbours = {split_of(max(0, (z - first + d) // SLAB)) for d in (-GAP, GAP)}
        if neighbours != {name}:
            continue  # within GAP of a slab of another split
        out[name].append((slab, z))
    return out


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], grid: int) -> np.ndarray:
    coarse = rng.standard_normal((grid, grid)).astype(np.float32)
    zoom = (shape[0] / grid, shape[1] / grid)
    return ndimage.zoom(coarse, zoom, order=3, mode="reflect")[: shape[0], : shape[1]]


def _pad_to(array: np.ndarray, size: int, value: float) -> np.ndarray:
    """Centre-pad or crop the last two axes to size x size."""
    out = array
    for axis in (-2, -1):
        n = out.shape[axis]
        if n < size:
            before = (size - n) // 2
            pad = [(0, 0)] * out.ndim
            pad[axis] = (before, size - n - before)
            out = np.pad(out, pad, constant_values=value)
        elif n > size:
            start = (n - size) // 2
            out = np.take(out, range(start, start + size), axis=axis)
    return out


def deform(
    probabilities: np.ndarray,
    rng: np.random.Generator,
    size: int,
    record: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Random affine + elastic warp of (4, H, W) probabilities onto a size x size grid.
    `record`, when given, receives the parameters drawn (the draws are the same either way)."""
    padded = _pad_to(probabilities, size, 0.0)
    padded[0] = np.where(padded.sum(axis=0) == 0, 1.0, padded[0])
    angle = np.deg2rad(rng.uniform(-15, 15))
    scale = rng.uniform(0.85, 1.15, size=2)
    shear = rng.uniform(-0.08, 0.08)
    shift = rng.uniform(-12, 12, size=2)
    cos, sin = np.cos(angle), np.sin(angle)
    matrix = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1, shear], [0, 1]]) @ np.diag(scale)
    inverse = np.linalg.inv(matrix)
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    centre = (size - 1) / 2
    coords = np.stack([rows - centre - shift[0], cols - centre - shift[1]]).reshape(2, -1)
    source = (inverse @ coords).reshape(2, size, size) + centre
    strength = rng.uniform(0, 4.0)  # pixels
    if record is not None:
        record.update(
            rotation_deg=float(np.rad2deg(angle)),
            scale=float(np.sqrt(scale[0] * scale[1])),
            shear=float(shear),
            elastic_px=float(strength),
        )
    source[0] += strength * smooth_field(rng, (size, size), 6)
    source[1] += strength * smooth_field(rng, (size, size), 6)
    warped = np.stack(
        [
            ndimage.map_coordinates(channel, source, order=1, mode="constant", cval=c == 0)
            for c, channel in enumerate(padded)
        ]
    )
    warped /= np.maximum(warped.sum(axis=0, keepdims=True), 1e-6)
    return warped.astype(np.float32), np.argmax(warped, axis=0).astype(np.uint8)


def synthesise(
    probabilities: np.ndarray, rng: np.random.Generator, record: dict[str, Any] | None = None
) -> np.ndarray:
    """A random-contrast image (float32 0..1) from (4, H, W) tissue probabilities.
    `record`, when given, receives the parameters drawn (the draws are the same either way)."""
    record = {} if record is None else record
    size = probabilities.shape[1:]
    means = rng.uniform(0.0, 1.0, size=4)
    # Any ordering of tissues is allowed, but real scans always tell tissues apart: a draw
    # where grey and white matter (or CSF and either) look alike teaches nothing but noise.
    while abs(means[2] - means[3]) < 0.12 or min(abs(means[1] - means[2:])) < 0.08:
        means[1:] = rng.uniform(0.0, 1.0, size=3)
    if rng.random() < 0.5:
        means[0] = rng.uniform(0.0, 0.1)  # skull-stripped scans have a dark background
    spreads = rng.uniform(0.0, 0.08, size=4)
    record.update(
        means=[float(m) for m in means],
        spreads=[float(v) for v in spreads],
        gm_wm_gap=float(abs(means[2] - means[3])),
        resolution=[1.0, 1.0],
    )
    image: np.ndarray = np.zeros(size, dtype=np.float32)
    for k in range(4):
        texture = means[k] + spreads[k] * rng.standard_normal(size).astype(np.float32)
        image += probabilities[k] * texture
    # Resolution: thick slices or low in-plane resolution, along one or both axes.
    if rng.random() < 0.7:
        factors = rng.uniform(1.0, 3.0, size=2)
        if rng.random() < 0.5:
            factors[rng.integers(2)] = 1.0
        record["resolution"] = [float(f) for f in factors]
        image = ndimage.gaussian_filter(image, sigma=(factors - 1.0) / 2.0 + 1e-3)
        small = ndimage.zoom(image, 1.0 / factors, order=1)
        image = ndimage.zoom(small, np.array(size) / np.array(small.shape), order=1)
        image = _pad_to(image, size[0], float(image.min()))
    # Bias field: smooth, multiplicative, up to about +/-40 %.
    bias_strength = rng.uniform(0.0, 0.35)
    bias = np.exp(bias_strength * smooth_field(rng, size, int(rng.integers(3, 6))))
    image = image * bias
    sigma = rng.uniform(0.0, 0.06)
    rician = bool(rng.random() < 0.5)
    record.update(bias=float(bias_strength), noise_sigma=float(sigma), rician=rician)
    if rician:  # Rician: magnitude of a complex signal with Gaussian noise
        real = image + sigma * rng.standard_normal(size)
        imaginary = sigma * rng.standard_normal(size)
        image = np.sqrt(real**2 + imaginary**2)
    else:
        image = image + sigma * rng.standard_normal(size)
    low, high = np.percentile(image, [0.5, 99.5])
    image = np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0)
    gamma = np.exp(rng.uniform(-0.4, 0.4))
    record["gamma"] = float(gamma)
    image = image**gamma
    return image.astype(np.float32)


def sample(
    template: Template,
    z: int,
    seed: np.random.SeedSequence,
    size: int,
    record: dict[str, Any] | None = None,
    *,
    atrophy_level: float = 0.0,
    atrophy_side: str = "both",
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probabilities = atrophied_slice(template, z, atrophy_level, atrophy_side)
    probabilities, labels = deform(probabilities, rng, size, record)
    return synthesise(probabilities, rng, record), labels


def atrophied_slice(template: Template, z: int, level: float, side: str = "both") -> np.ndarray:
    """(4, H, W) probabilities of slice z with `level` of grey and white matter turned into
    CSF (`atrophy` on that slice alone; the slice itself when level is 0)."""
    if level <= 0:
        return template.probabilities[:, z]
    return atrophy(template.probabilities[:, z : z + 1], level, side)[:, 0]


def case_seed(split: str, index: int, seed: int = DEFAULT_SEED) -> np.random.SeedSequence:
    """The seed of case `index` of a split: what generate_split's spawn gives that case."""
    return np.random.SeedSequence(seed, spawn_key=(SPLIT_STREAM[split], index))


def generate_split(
    out: Path,
    split: str,
    n: int,
    *,
    size: int = 256,
    seed: int = DEFAULT_SEED,
    atrophy_fraction: float = 0.0,
    atrophy_max: float = 0.3,
) -> list[dict[str, int | str | float]]:
    """Write n cases of one split under out/<split>/; returns the manifest rows."""
    from PIL import Image

    template = load_template()
    pool = slab_splits(template.labels)[split]
    root = out / split
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    (root / "classes.json").write_text(json.dumps({str(k): v for k, v in CLASSES.items()}))
    stream = np.random.SeedSequence(seed, spawn_key=(SPLIT_STREAM[split],))
    children = stream.spawn(n)
    picker = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(9, SPLIT_STREAM[split])))
    shrinker = np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(8, SPLIT_STREAM[split]))
    )
    manifest: list[dict[str, int | str | float]] = []
    for i, child in enumerate(children):
        slab, z = pool[int(picker.integers(len(pool)))]
        level, side = 0.0, "none"
        draw, level_draw, side_draw = shrinker.random(), shrinker.random(), shrinker.integers(3)
        if draw < atrophy_fraction:
            level = float(level_draw * atrophy_max)
            side = ("both", "left", "right")[int(side_draw)]
        image, labels = sample(template, z, child, size, atrophy_level=level, atrophy_side=side)
        case = f"{split}-{i:05d}"
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(
            root / "images" / f"{case}.png"
        )
        Image.fromarray(labels).save(root / "masks" / f"{case}.png")
        manifest.append(
            {
                "case": case,
                "slab": slab,
                "slice": z,
                "seed_index": i,
                "atrophy_level": round(level, 4),
                "atrophy_side": side,
            }
        )
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def preview(out: Path, split: str, count: int) -> Path:
    """A grid PNG of the first `count` cases: image above, colour-coded mask below."""
    from PIL import Image

    root = out / split
    palette = np.array([[0, 0, 0], [40, 120, 255], [230, 160, 40], [240, 240, 240]], np.uint8)
    columns = []
    for i in range(count):
        case = f"{split}-{i:05d}"
        image = np.asarray(Image.open(root / "images" / f"{case}.png"))
        mask = np.asarray(Image.open(root / "masks" / f"{case}.png"))
        columns.append(np.concatenate([np.stack([image] * 3, axis=-1), palette[mask]], axis=0))
    path = out / f"preview-{split}.png"
    Image.fromarray(np.concatenate(columns, axis=1)).save(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-val", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=400)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--preview", type=int, default=0, help="write a grid of N cases per split")
    parser.add_argument(
        "--atrophy-fraction", type=float, default=0.0, help="share of cases given atrophy"
    )
    parser.add_argument(
        "--atrophy-max", type=float, default=0.3, help="largest level of GM/WM turned into CSF"
    )
    args = parser.parse_args(argv)
    counts = {"train": args.n_train, "val": args.n_val, "test": args.n_test}
    for split, n in counts.items():
        if n <= 0:
            continue
        generate_split(
            args.out,
            split,
            n,
            size=args.size,
            seed=args.seed,
            atrophy_fraction=args.atrophy_fraction,
            atrophy_max=args.atrophy_max,
        )
        if args.preview:
            print(preview(args.out, split, min(args.preview, n)))
    write_notes(args.out, counts, args)
    print(json.dumps({"out": str(args.out), **counts}))


def write_notes(out: Path, counts: dict[str, int], args: argparse.Namespace) -> Path:
    """OUT/DATASET.md: what the data is and the command that made it (the model card quotes it)."""
    command = (
        f"python model/segmentation/brain_tissue_data.py --out {out} --n-train {counts['train']} "
        f"--n-val {counts['val']} --n-test {counts['test']} --size {args.size} --seed {args.seed}"
    )
    if args.atrophy_fraction > 0:
        command += f" --atrophy-fraction {args.atrophy_fraction} --atrophy-max {args.atrophy_max}"
    text = (
        "Brain-tissue slices generated by model/segmentation/brain_tissue_data.py\n\n"
        + (__doc__ or "").strip()
        + f"\n\nGenerated with:\n\n    {command}\n\nCases per split: {json.dumps(counts)}\n"
    )
    path = out / "DATASET.md"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


if __name__ == "__main__":
    main()
