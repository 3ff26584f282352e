"""Quality control on arrays (no ORM): per-scan statistics, robust outliers, intensity clusters.

    image_statistics(pixels, *, ds=None) -> dict                # stored in Scan.qc
    scan_statistics(pixels, *, ds=None, display=None) -> dict
    intensity_values(pixels, *, ds=None, display=None) -> float64 1-D
    snr_estimate(values) -> float | None
    robust_z(values) -> np.ndarray                               # modified z-scores
    outliers(rows, *, metrics=OUTLIER_METRICS, threshold=3.5) -> list[dict]
    kmeans_clusters(frame, *, k=3, sample=5000, seed=0) -> Clusters

Intensities: a greyscale DICOM's values after the modality LUT (Hounsfield units for CT), every
frame; a colour or palette DICOM the luminance (ITU-R BT.601) of its 8-bit display rendering
(pass `display`); JPEG/PNG their grey values, or the luminance of their colour pixels.
Statistics are of the REDACTED pixels: what is stored and shown.

SNR estimate: Otsu's threshold splits the intensities into background and foreground;
SNR = (mean(foreground) - mean(background)) / std(background) (population std). Offsets such as
air at -1000 HU cancel out. None when either side is empty or the background has no noise.

Robust z-scores (Iglewicz and Hoaglin's modified z-score): z = 0.6745 (x - median) / MAD,
MAD the median absolute deviation; when MAD is 0, the mean absolute deviation scaled by
1.2533 stands in; when that is 0 too, every z is 0. |z| > 3.5 is an outlier. Scans are
compared only within their (modality, scanner) group, and groups under MIN_GROUP scans are
not judged.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
MAX_VALUES = 2_000_000  # Statistics on at most this many values (an even stride beyond).
# K-means: fitted on a random sample, silhouette (quadratic in its sample) on a smaller one.
FIT_SAMPLE = 50_000
SILHOUETTE_SAMPLE = 3000
OUTLIER_METRICS = ("p1", "p50", "p99", "mean", "std", "snr", "rows", "columns")
OUTLIER_THRESHOLD = 3.5
MIN_GROUP = 5
_MAD_SCALE = 0.6745
_MEAN_AD_SCALE = 1.2533


def luminance(display: np.ndarray) -> np.ndarray:
    rgb = display[..., :3].astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def intensity_kind(pixels: Any, *, ds: Any = None, display: Any = None) -> str:
    """ "modality", "luminance" (of `display`, or of colour pixels) or "grey" (raw values)."""
    from engine.pixels import rendering

    ndim = len(pixels.shape)
    if ds is not None and ndim == 3 and rendering.is_greyscale(ds):
        return "modality"
    if display is not None or ndim == 4:
        return "luminance"
    return "grey"


def intensity_values(pixels: Any, *, ds: Any = None, display: Any = None) -> np.ndarray:
    """Every intensity of the image (see the module docstring), flattened, float64; beyond
    MAX_VALUES, every n-th one (an even stride over the frames in order).

    Frame by frame: `pixels` (and `display`) need only a shape and iteration over frames
    (an array, a lazily read stack), and only the kept values are held, so a cine's
    statistics take a frame's memory plus at most MAX_VALUES values."""
    from engine.pixels import rendering

    kind = intensity_kind(pixels, ds=ds, display=display)
    count = int(np.prod(pixels.shape[:3], dtype=np.int64))  # One intensity per pixel.
    frames: Iterable[np.ndarray]
    if kind == "modality":
        frames = (rendering.modality_values(ds, f, index=i) for i, f in enumerate(pixels))
    elif kind == "grey":
        frames = (np.asarray(f, dtype=np.float64) for f in pixels)
    else:
        frames = (luminance(np.asarray(f)) for f in (display if display is not None else pixels))
    step = int(math.ceil(count / MAX_VALUES)) if count > MAX_VALUES else 1
    kept: list[np.ndarray] = []
    start = 0
    for values in frames:
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
        # The same elements as a stride over all frames concatenated.
        kept.append(flat[(-start) % step :: step])
        start += flat.size
    flat = np.concatenate(kept) if kept else np.empty(0, dtype=np.float64)
    return cast("np.ndarray", flat[np.isfinite(flat)])


def otsu_threshold(values: np.ndarray) -> float | None:
    from skimage.filters import threshold_otsu

    if values.size < 2 or float(values.min()) == float(values.max()):
        return None
    return float(threshold_otsu(values))


def snr_estimate(values: np.ndarray) -> float | None:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    threshold = otsu_threshold(values)
    if threshold is None:
        return None
    background = values[values <= threshold]
    foreground = values[values > threshold]
    if background.size == 0 or foreground.size == 0:
        return None
    noise = float(background.std())
    if noise == 0:
        return None
    return float((foreground.mean() - background.mean()) / noise)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _header_facts(ds: Any) -> dict[str, Any]:
    if ds is None:
        return {"modality": "", "scanner": "", "spacing_mm": None, "slice_thickness_mm": None}
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    spacing_mm = None
    if spacing is not None and len(spacing) == 2:
        pair = [_number(spacing[0]), _number(spacing[1])]
        spacing_mm = pair if None not in pair else None
    scanner = " ".join(
        str(ds.get(k, "") or "").strip() for k in ("Manufacturer", "ManufacturerModelName")
    ).strip()
    return {
        "modality": str(ds.get("Modality", "") or "").strip().upper(),
        "scanner": scanner,
        "spacing_mm": spacing_mm,
        "slice_thickness_mm": _number(ds.get("SliceThickness")),
    }


def scan_statistics(pixels: Any, *, ds: Any = None, display: Any = None) -> dict[str, Any]:
    """Per-scan QC statistics: intensity percentiles, mean, std, SNR, dimensions, spacing,
    modality and scanner (JSON-ready)."""
    values = intensity_values(pixels, ds=ds, display=display)
    stats: dict[str, Any] = {
        "frames": int(pixels.shape[0]),
        "rows": int(pixels.shape[1]),
        "columns": int(pixels.shape[2]),
        "channels": int(pixels.shape[3]) if len(pixels.shape) == 4 else 1,
        "intensity": intensity_kind(pixels, ds=ds, display=display),
        **_header_facts(ds),
    }
    if values.size:
        for q, v in zip(PERCENTILES, np.percentile(values, PERCENTILES), strict=True):
            stats[f"p{q}"] = round(float(v), 4)
        stats.update(
            mean=round(float(values.mean()), 4),
            std=round(float(values.std()), 4),
            min=float(values.min()),
            max=float(values.max()),
        )
    snr = snr_estimate(values) if values.size else None
    stats["snr"] = round(snr, 4) if snr is not None else None
    return stats


class _Rendered:
    """The 8-bit renderings of a DICOM's frames, made one at a time as they are iterated."""

    def __init__(self, ds: Any, pixels: Any) -> None:
        self.ds, self.pixels = ds, pixels

    def __iter__(self) -> Iterator[np.ndarray]:
        from engine.pixels import rendering

        for index, frame in enumerate(self.pixels):
            yield rendering.render_frame_uint8(self.ds, frame, index=index, overlays=False)


def image_statistics(pixels: Any, *, ds: Any = None) -> dict[str, Any]:
    """`scan_statistics` of decoded pixels and their DICOM header (None for JPEG/PNG): colour
    and palette DICOM are measured on their rendering, everything else on its values. Frame by
    frame (see `intensity_values`): `pixels` may be any frames-first stack with a shape."""
    from engine.pixels import rendering

    display = None
    if ds is not None and not rendering.is_greyscale(ds):
        display = _Rendered(ds, pixels)
    return scan_statistics(pixels, ds=ds, display=display)


def robust_z(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return x
    median = np.median(x)
    deviation = np.abs(x - median)
    mad = float(np.median(deviation))
    if mad > 0:
        return _MAD_SCALE * (x - median) / mad
    mean_ad = float(deviation.mean())
    if mean_ad > 0:
        return (x - median) / (_MEAN_AD_SCALE * mean_ad)
    return np.zeros_like(x)


def outliers(
    rows: Iterable[Mapping[str, Any]],
    *,
    metrics: Sequence[str] = OUTLIER_METRICS,
    threshold: float = OUTLIER_THRESHOLD,
    min_group: int = MIN_GROUP,
) -> list[dict[str, Any]]:
    """rows: {"id", "modality", "scanner", "qc": {...}}. One result per outlying scan:
    {"id", "modality", "scanner", "group_size", "flags": [{"metric", "value", "median", "z"}]},
    largest |z| first."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(str(row.get("modality") or ""), str(row.get("scanner") or ""))].append(row)
    found: dict[Any, dict[str, Any]] = {}
    for (modality, scanner), members in groups.items():
        if len(members) < min_group:
            continue
        for metric in metrics:
            numbers = [(m, _number((m.get("qc") or {}).get(metric))) for m in members]
            present = [(m, v) for m, v in numbers if v is not None]
            if len(present) < min_group:
                continue
            values = [v for _, v in present]
            median = float(np.median(values))
            for (member, value), z in zip(present, robust_z(values), strict=True):
                if abs(z) <= threshold:
                    continue
                entry = found.setdefault(
                    member["id"],
                    {
                        "id": member["id"],
                        "modality": modality,
                        "scanner": scanner,
                        "group_size": len(members),
                        "flags": [],
                    },
                )
                entry["flags"].append(
                    {"metric": metric, "value": value, "median": median, "z": round(float(z), 2)}
                )
    results = list(found.values())
    for entry in results:
        entry["flags"].sort(key=lambda f: -abs(f["z"]))
    results.sort(key=lambda e: -abs(e["flags"][0]["z"]))
    return results


@dataclass(frozen=True)
class Clusters:
    labels: np.ndarray  # (H, W) int, numbered by increasing centre; -1 outside the mask
    centres: list[float]
    sizes: list[int]
    silhouette: float | None
    sample_size: int


# Distinct colours for up to 8 clusters (Okabe-Ito, readable with colour-blindness).
PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 159, 0],
        [86, 180, 233],
        [0, 158, 115],
        [240, 228, 66],
        [0, 114, 178],
        [213, 94, 0],
        [204, 121, 167],
    ],
    dtype=np.uint8,
)
MAX_K = len(PALETTE)
PALETTE_NAMES = (
    "black",
    "orange",
    "sky blue",
    "bluish green",
    "yellow",
    "blue",
    "vermillion",
    "reddish purple",
)
OUTSIDE = np.array([128, 128, 128], dtype=np.uint8)


def kmeans_clusters(
    frame: np.ndarray,
    *,
    k: int = 3,
    mask: np.ndarray | None = None,
    sample: int = SILHOUETTE_SAMPLE,
    fit_sample: int = FIT_SAMPLE,
    seed: int = 0,
) -> Clusters:
    """K-means on the intensities of one frame (H, W) (scikit-learn, fixed seed).

    Fitted on the pixels where `mask` is true (all by default; at most `fit_sample` of them,
    drawn at random), then every pixel gets its nearest centre; clusters are numbered by
    increasing centre and pixels outside the mask are -1. The silhouette score is computed
    on `sample` random masked pixels (None when it is undefined: one cluster only)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    if not 2 <= k <= MAX_K:
        raise ValueError(f"k must be between 2 and {MAX_K}")
    values = np.asarray(frame, dtype=np.float64)
    inside = np.ones(values.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    points = values[inside].reshape(-1, 1)
    rng = np.random.default_rng(seed)
    if points.shape[0] == 0:
        raise ValueError("no pixels to cluster")
    fit = points
    if points.shape[0] > fit_sample:
        fit = points[rng.choice(points.shape[0], size=fit_sample, replace=False)]
    distinct = np.unique(fit).size
    model = KMeans(n_clusters=min(k, distinct), n_init=2, random_state=seed)
    model.fit(fit)
    order = np.argsort(model.cluster_centers_[:, 0])
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    point_labels = rank[model.predict(points)]
    labels = np.full(values.shape, -1, dtype=np.int64)
    labels[inside] = point_labels
    centres = [float(c) for c in model.cluster_centers_[order, 0]]
    sizes = [int((point_labels == i).sum()) for i in range(len(centres))]
    chosen = rng.choice(points.shape[0], size=min(sample, points.shape[0]), replace=False)
    sampled = point_labels[chosen]
    silhouette = None
    if 2 <= np.unique(sampled).size < chosen.size:
        silhouette = float(silhouette_score(points[chosen], sampled))
    return Clusters(
        labels=labels,
        centres=centres,
        sizes=sizes,
        silhouette=silhouette,
        sample_size=int(chosen.size),
    )


def cluster_image(labels: np.ndarray) -> np.ndarray:
    """Cluster labels as (H, W, 3) uint8 colours (PALETTE); -1 (outside the mask) is grey."""
    image = PALETTE[np.clip(labels, 0, MAX_K - 1)]
    image[labels < 0] = OUTSIDE
    return cast("np.ndarray", image)
