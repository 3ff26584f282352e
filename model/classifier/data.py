"""Brain-like slices with and without a synthetic lesion, for the example classifier.

The slices come from model/segmentation/brain_tissue_data.py: an axial slice of the MNI152
tissue maps that `nilearn` ships, halved in resolution (2x2 mean of the probabilities), with a
random affine and elastic warp (`deform` there) on a SIZE x SIZE grid, rendered T1-like
(`t1_like` here: tissue means in T1 order with jitter, texture, bias field, blur, noise).
The segmentation generator's random contrast (any tissue order) made normal sulci and
ventricles look like lesions to a network this small: its validation accuracy stayed at
0.50-0.58 over 8 epochs.

Half of the cases (a seeded coin) get one lesion: a hyperintense ellipse of random semi-axes
(RADIUS pixels), angle and position, centred inside grey or white matter, with soft edges
(Gaussian, sigma 1 px), raised above the tissue under it by CONTRAST times the white-matter
median, masked to the brain so it never sits in the background. Then every case, lesion or
not, gets Gaussian noise (sigma 0-0.04) and a percentile rescale to 0..1 (0.5th to 99.9th),
so the lesion carries the same noise as the rest. The label is honest by construction: 1 when
a lesion was drawn, 0 when not.

Splits follow the segmentation generator's slabs (`slab_splits`): test images come from
axial slabs training never saw, with their own seed stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from model.segmentation.brain_tissue_data import (
    SPLIT_STREAM,
    deform,
    load_template,
    slab_splits,
    smooth_field,
)

SIZE = 128
RADIUS = (4.0, 10.0)  # semi-axes in pixels at SIZE 128
CONTRAST = (0.3, 0.6)
DEFAULT_SEED = 20261203
CLASSES = ("no_lesion", "lesion")


@dataclass(frozen=True)
class Case:
    image: np.ndarray  # float32 (SIZE, SIZE) in 0..1
    label: int
    z: int
    radius: float  # mean semi-axis, 0 without a lesion
    contrast: float  # signed, 0 without a lesion


def _half(probabilities: np.ndarray) -> np.ndarray:
    """2x2 mean of (4, H, W), odd sides padded with background."""
    c, h, w = probabilities.shape
    ph, pw = h % 2, w % 2
    padded = np.pad(probabilities, ((0, 0), (0, ph), (0, pw)))
    if ph or pw:
        padded[0, h:, :] = 1.0
        padded[0, :, w:] = 1.0
    out = padded.reshape(c, (h + ph) // 2, 2, (w + pw) // 2, 2).mean(axis=(2, 4))
    return out / out.sum(axis=0, keepdims=True)


def add_lesion(
    image: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, float, float]:
    """One hyperintense ellipse inside grey or white matter: its core is raised by CONTRAST
    above the tissue under it (in units of the white-matter mean, before rescaling)."""
    parenchyma = np.argwhere(labels >= 2)
    centre = parenchyma[int(rng.integers(len(parenchyma)))]
    a, b = rng.uniform(*RADIUS, size=2)
    angle = rng.uniform(0, np.pi)
    rows, cols = np.mgrid[: image.shape[0], : image.shape[1]].astype(np.float32)
    dr, dc = rows - centre[0], cols - centre[1]
    u = dr * np.cos(angle) + dc * np.sin(angle)
    v = -dr * np.sin(angle) + dc * np.cos(angle)
    blob = ((u / a) ** 2 + (v / b) ** 2 <= 1.0).astype(np.float32)
    blob = ndimage.gaussian_filter(blob, 1.0) * (labels > 0)
    white = float(np.percentile(image[labels == 3], 50)) if (labels == 3).any() else 1.0
    contrast = float(rng.uniform(*CONTRAST))
    out = image + contrast * white * blob
    return out.astype(np.float32), float((a + b) / 2), contrast


def t1_like(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A T1-weighted-looking image (float32 0..1) from (4, H, W) tissue probabilities: tissue
    means in T1 order with jitter (background, CSF dark, grey matter mid, white matter bright),
    texture, a smooth multiplicative bias field (up to about +/-25 %) and optional blur; not
    yet rescaled (`rescale`, after the lesion and the noise)."""
    size = probabilities.shape[1:]
    means = np.array(
        [
            rng.uniform(0.0, 0.08),
            rng.uniform(0.12, 0.28),
            rng.uniform(0.42, 0.58),
            rng.uniform(0.70, 0.90),
        ]
    )
    image = np.zeros(size, dtype=np.float32)
    for k in range(4):
        texture = means[k] + rng.uniform(0.0, 0.04) * rng.standard_normal(size)
        image += probabilities[k] * texture.astype(np.float32)
    if rng.random() < 0.5:
        image = ndimage.gaussian_filter(image, rng.uniform(0.3, 1.0))
    image = image * np.exp(rng.uniform(0.0, 0.2) * smooth_field(rng, size, 4))
    return image.astype(np.float32)


def rescale(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [0.5, 99.9])
    return np.clip((image - low) / max(float(high - low), 1e-6), 0.0, 1.0).astype(np.float32)


def make_case(probabilities: np.ndarray, z: int, seed: np.random.SeedSequence) -> Case:
    rng = np.random.default_rng(seed)
    warped, labels = deform(probabilities, rng, SIZE)
    image = t1_like(warped, rng)
    label = int(rng.random() < 0.5)
    radius = contrast = 0.0
    if label:
        image, radius, contrast = add_lesion(image, labels, rng)
    noise = rng.uniform(0.0, 0.04)
    image = rescale(image + noise * rng.standard_normal(image.shape).astype(np.float32))
    return Case(image, label, z, radius, contrast)


def generate(split: str, n: int, seed: int = DEFAULT_SEED) -> list[Case]:
    template = load_template()
    pool = slab_splits(template.labels)[split]
    stream = np.random.SeedSequence(seed, spawn_key=(SPLIT_STREAM[split],))
    picker = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(9, SPLIT_STREAM[split])))
    cases = []
    for child in stream.spawn(n):
        _, z = pool[int(picker.integers(len(pool)))]
        cases.append(make_case(_half(template.probabilities[:, z]), z, child))
    return cases
