"""Compose one synthetic training image: a real background, burned-in text, codes, distractors.

Every text line and code drawn is labelled with the tight box of the pixels it changed; a line
whose ink does not contrast with what lies under it gets a filled box behind it or is not drawn
at all, so no invisible item is labelled. Distractors (colour overlays, calipers, crosshairs,
rulers, ECG traces) are drawn but never labelled: they teach the model what is not text.
"""

from __future__ import annotations

import fnmatch
import functools
import io
import logging
import math
import random
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from model.detector import phi_text

log = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = ("phi_text", "tech_text", "barcode")
PHI, TECH, BARCODE = 0, 1, 2

FONT_ROOT = Path("/usr/share/fonts")
# X11 misc-fixed and clean faces (xfonts-base), named WIDTHxHEIGHT.
BITMAP_FACES = (
    "5x8",
    "6x10",
    "6x12",
    "6x13",
    "6x13B",
    "7x13",
    "7x13B",
    "7x14",
    "7x14B",
    "8x13",
    "8x13B",
    "8x16",
    "9x15",
    "9x15B",
    "9x18",
    "9x18B",
    "10x20",
    "12x24",
    "clR6x12",
    "clR8x14",
    "clB8x16",
)
# Scanner overlay faces by family: (family, Debian package, glob patterns under FONT_ROOT).
# Helvetica, Courier and Times clones, narrow faces, bitmap faces (drawn without anti-aliasing,
# enlarged by whole pixels) and Noto for names with diacritics. A family whose files are absent
# (CI, a fresh machine) is skipped with one log line; DejaVu or Liberation must be there.
FONT_FAMILIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "narrow",
        "fonts-urw-base35 fonts-liberation2",
        (
            "opentype/urw-base35/NimbusSansNarrow-*.otf",
            "truetype/liberation2/LiberationSansNarrow-*.ttf",
            "truetype/liberation/LiberationSansNarrow-*.ttf",
            "truetype/dejavu/DejaVu*Condensed*.ttf",
        ),
    ),
    ("dejavu", "fonts-dejavu-core", ("truetype/dejavu/DejaVuSans*.ttf",)),
    (
        "liberation",
        "fonts-liberation2",
        ("truetype/liberation2/Liberation*.ttf", "truetype/liberation/Liberation*.ttf"),
    ),
    (
        "helvetica",
        "fonts-urw-base35 fonts-freefont-ttf",
        ("opentype/urw-base35/NimbusSans-*.otf", "truetype/freefont/FreeSans*.ttf"),
    ),
    (
        "courier",
        "fonts-urw-base35 fonts-freefont-ttf",
        ("opentype/urw-base35/NimbusMonoPS-*.otf", "truetype/freefont/FreeMono*.ttf"),
    ),
    (
        "times",
        "fonts-urw-base35 fonts-freefont-ttf",
        (
            "opentype/urw-base35/NimbusRoman-*.otf",
            "opentype/urw-base35/C059-*.otf",
            "truetype/freefont/FreeSerif*.ttf",
            "truetype/dejavu/DejaVuSerif*.ttf",
        ),
    ),
    (
        "bitmap",
        "xfonts-base fonts-terminus unifont",
        (
            *(f"X11/misc/{name}.pcf.gz" for name in BITMAP_FACES),
            "truetype/terminus/TerminusTTF-*.ttf",
            "opentype/unifont/unifont.otf",
        ),
    ),
    (
        "noto",
        "fonts-noto-core",
        (
            "truetype/noto/NotoSans-*.ttf",
            "truetype/noto/NotoSansMono-*.ttf",
            "truetype/noto/NotoSerif-*.ttf",
        ),
    ),
)
# How often each family is drawn (among those present).
FAMILY_WEIGHTS = {
    "dejavu": 0.12,
    "liberation": 0.14,
    "helvetica": 0.18,
    "courier": 0.12,
    "times": 0.07,
    "narrow": 0.1,
    "bitmap": 0.2,
    "noto": 0.07,
}
# Families whose faces have the Latin Extended glyphs of accented names.
UNICODE_FAMILIES = ("noto", "dejavu", "liberation")
# Pixels whose colour moved at least this far (max over channels) count as drawn ink.
INK_DELTA = 40
# A line is legible when most of its ink differs this much in brightness from the background
# under it; strongly coloured ink (green on grey) may differ less in brightness.
MIN_LUMA_CONTRAST = 55
MIN_COLOUR_CONTRAST = 110
MIN_LUMA_FOR_COLOUR = 25


@dataclass(frozen=True)
class Label:
    cls: int
    x0: int
    y0: int
    x1: int
    y1: int
    text: str = ""


@dataclass
class Sample:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    labels: list[Label] = field(default_factory=list)
    # What was drawn: the layout ("us_header", "corner_blocks", ...) and "negative:<name>"s.
    parts: list[str] = field(default_factory=list)


def font_family(path: Path | str) -> str:
    """The FONT_FAMILIES name a font file belongs to ("other" when none)."""
    relative = str(Path(path))
    for family, _, patterns in FONT_FAMILIES:
        if any(fnmatch.fnmatch(relative, f"*/{pattern}") for pattern in patterns):
            return family
    return "other"


def font_paths(root: Path | None = None) -> list[Path]:
    """Every installed overlay face, family by family; absent families are logged, skipped."""
    root = FONT_ROOT if root is None else root
    paths: list[Path] = []
    seen: set[str] = set()
    for family, package, patterns in FONT_FAMILIES:
        found = [
            p
            for pattern in patterns
            for p in sorted(root.glob(pattern))
            if "Math" not in p.name and "ExtraLight" not in p.name
        ]
        # liberation2 and liberation ship files of the same names: keep the first (newer).
        unique = []
        for path in found:
            if path.name not in seen:
                seen.add(path.name)
                unique.append(path)
        found = unique
        if not found:
            log.info(
                "fonts: no %s faces under %s, skipped (apt-get install %s)", family, root, package
            )
        paths += found
    if not any(font_family(p) in ("dejavu", "liberation") for p in paths):
        raise FileNotFoundError(
            "no DejaVu or Liberation fonts; apt-get install fonts-dejavu-core fonts-liberation2"
        )
    return paths


def pick_font(rng: random.Random, fonts: Sequence[Path], text: str = "") -> Path:
    """A family by FAMILY_WEIGHTS, then a face of it; text with diacritics gets a face that has
    them (Noto, DejaVu, Liberation)."""
    families: dict[str, list[Path]] = {}
    for path in fonts:
        families.setdefault(font_family(path), []).append(path)
    if text and phi_text.needs_unicode_font(text):
        wide = {k: v for k, v in families.items() if k in UNICODE_FAMILIES}
        families = wide or families
    names = sorted(families)
    family = rng.choices(names, weights=[FAMILY_WEIGHTS.get(n, 0.05) for n in names])[0]
    return rng.choice(families[family])


@dataclass(frozen=True)
class PixelFont:
    """A bitmap face drawn at its native size without anti-aliasing, enlarged by whole pixels
    (as scanners enlarge their fixed fonts)."""

    font: ImageFont.FreeTypeFont
    scale: int

    def getbbox(self, text: str) -> tuple[int, int, int, int]:
        left, top, right, bottom = self.font.getbbox(text)
        return (
            int(left) * self.scale,
            int(top) * self.scale,
            int(right) * self.scale,
            int(bottom) * self.scale,
        )


Font = ImageFont.FreeTypeFont | PixelFont


def bitmap_native_sizes(path: str) -> tuple[int, ...]:
    """The pixel sizes a bitmap face exists at: an X11 "9x15" face at 15, Terminus at its
    strikes, Unifont at 16."""
    name = Path(path).name
    match = re.match(r"(?:cl[RBI])?\d+x(\d+)", name)
    if match:
        return (int(match.group(1)),)
    if name.startswith("Terminus"):
        return (12, 14, 16, 18, 20, 22, 24, 28, 32)
    return (16,)


@lru_cache(maxsize=2048)
def load_font(path: str, size: int) -> Font:
    """A face at about `size` px; bitmap faces at their nearest native size times a whole
    factor (`PixelFont`)."""
    if font_family(path) != "bitmap":
        return ImageFont.truetype(path, size)
    sizes = bitmap_native_sizes(path)
    scale = max(1, round(size / max(sizes)))
    native = min(sizes, key=lambda n: abs(n * scale - size))
    return PixelFont(ImageFont.truetype(path, native), scale)


def is_bitmap(font: Font) -> bool:
    return isinstance(font, PixelFont)


# ---------------------------------------------------------------- backgrounds

KIND_WEIGHTS = {
    "CT": 0.12,
    "MR": 0.12,
    "MNI": 0.12,
    "CR": 0.08,
    "DX": 0.05,
    "NM": 0.04,
    "US": 0.05,
    "RGB": 0.04,
    "synthetic": 0.38,
}


def synthetic_background(rng: random.Random, height: int, width: int) -> np.ndarray:
    """Ultrasound-like speckle fans, gradients, blobs or flat dark fields."""
    nprng = np.random.default_rng(rng.getrandbits(32))
    kind = rng.random()
    image: np.ndarray = np.zeros((height, width), np.float32)
    if kind < 0.45:
        # Speckle inside a sector, like a B-mode ultrasound.
        coarse = (height // 2 + 1, width // 2 + 1)
        speckle: np.ndarray = nprng.rayleigh(1.0, coarse).astype(np.float32)
        speckle = cv2.resize(speckle, (width, height), interpolation=cv2.INTER_LINEAR)
        depth = np.linspace(1.0, 0.3, height, dtype=np.float32)[:, None]
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        apex_x, apex_y = width * rng.uniform(0.4, 0.6), -height * rng.uniform(0.0, 0.3)
        angle = np.degrees(np.arctan2(xx - apex_x, yy - apex_y))
        radius = np.hypot(xx - apex_x, yy - apex_y)
        half = rng.uniform(25, 50)
        inside = (np.abs(angle) < half) & (radius < height * rng.uniform(0.8, 1.2))
        if rng.random() < 0.3:
            inside = np.ones_like(inside)
            inside[: int(height * 0.1)] = False
        image = speckle * depth * 90 * inside
    elif kind < 0.65:
        gx = np.linspace(rng.uniform(0, 120), rng.uniform(0, 200), width, dtype=np.float32)
        gy = np.linspace(rng.uniform(0, 80), rng.uniform(0, 160), height, dtype=np.float32)
        image = gx[None, :] * 0.5 + gy[:, None] * 0.5
    elif kind < 0.85:
        for _ in range(rng.randint(3, 12)):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            axes = (int(rng.uniform(10, width / 3)), int(rng.uniform(10, height / 3)))
            cv2.ellipse(
                image,
                (int(cx), int(cy)),
                axes,
                rng.uniform(0, 180),
                0,
                360,
                rng.uniform(30, 230),
                -1,
            )
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(2, 12))
    else:
        image[:] = rng.uniform(0, 40)
    image += nprng.normal(0, rng.uniform(1, 6), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def random_canvas_size(rng: random.Random) -> tuple[int, int]:
    """Native size of the simulated screen capture; some are large radiographs."""
    width = rng.randint(384, 800) if rng.random() < 0.65 else rng.randint(800, 2200)
    aspect = rng.choice((0.75, 0.75, 1.0, 1.0, 1.25, rng.uniform(0.5, 1.6)))
    return max(256, int(width * aspect)), width


def to_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image


def apply_palette(image: np.ndarray, rng: random.Random) -> np.ndarray:
    """Render greyscale through a colour map, the way palette-colour and fusion images look."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    cmap = rng.choice((cv2.COLORMAP_HOT, cv2.COLORMAP_JET, cv2.COLORMAP_BONE, cv2.COLORMAP_PINK))
    return cv2.cvtColor(cv2.applyColorMap(grey, cmap), cv2.COLOR_BGR2RGB)


def make_background(
    rng: random.Random, groups: dict[str, list[np.ndarray]], height: int, width: int
) -> np.ndarray:
    kinds = [k for k in KIND_WEIGHTS if k == "synthetic" or groups.get(k)]
    kind = rng.choices(kinds, weights=[KIND_WEIGHTS[k] for k in kinds])[0]
    if kind == "synthetic":
        image = synthetic_background(rng, height, width)
    else:
        source = rng.choice(groups[kind])
        src_h, src_w = source.shape[:2]
        crop_h = int(src_h * rng.uniform(0.5, 1.0))
        crop_w = int(src_w * rng.uniform(0.5, 1.0))
        top, left = rng.randint(0, src_h - crop_h), rng.randint(0, src_w - crop_w)
        crop = source[top : top + crop_h, left : left + crop_w]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rng.random() < 0.2:
            crop = crop[::-1]
        if rng.random() < 0.3:
            # Inset on a dark canvas: text usually sits on the black margins.
            scale = rng.uniform(0.55, 0.9)
            inner_h, inner_w = max(8, int(height * scale)), max(8, int(width * scale))
            inner = cv2.resize(
                np.ascontiguousarray(crop), (inner_w, inner_h), interpolation=cv2.INTER_AREA
            )
            image = np.full((height, width) + crop.shape[2:], rng.randint(0, 25), np.uint8)
            y, x = rng.randint(0, height - inner_h), rng.randint(0, width - inner_w)
            image[y : y + inner_h, x : x + inner_w] = inner
        else:
            image = cv2.resize(
                np.ascontiguousarray(crop), (width, height), interpolation=cv2.INTER_AREA
            )
    if rng.random() < 0.5:
        gamma = rng.uniform(0.6, 1.6)
        image = (255.0 * (image / 255.0) ** gamma).astype(np.uint8)
    if image.ndim == 2 and rng.random() < 0.1:
        image = apply_palette(image, rng)
    if rng.random() < 0.08:
        image = 255 - image
    return np.ascontiguousarray(to_rgb(image))


# ---------------------------------------------------------------- distractors (unlabelled)


def random_colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.choice(
        (
            (255, 255, 0),
            (0, 255, 0),
            (0, 200, 255),
            (255, 255, 255),
            (255, 80, 0),
            (200, 200, 200),
            (0, 255, 255),
            (255, 0, 0),
        )
    )


def draw_doppler_overlay(image: np.ndarray, rng: random.Random) -> None:
    """Red/blue flow blobs in an ROI box, or a hot-colour fusion blob (PET/CT)."""
    h, w = image.shape[:2]
    bw, bh = int(w * rng.uniform(0.15, 0.5)), int(h * rng.uniform(0.15, 0.5))
    x, y = rng.randint(0, w - bw), rng.randint(0, h - bh)
    nprng = np.random.default_rng(rng.getrandbits(32))
    field_: np.ndarray = cv2.GaussianBlur(
        nprng.normal(0, 1, (bh, bw)).astype(np.float32), (0, 0), rng.uniform(3, 10)
    )
    field_ /= max(float(np.abs(field_).max()), 1e-6)
    region = image[y : y + bh, x : x + bw].astype(np.float32)
    if rng.random() < 0.6:
        red, blue = field_ > 0.35, field_ < -0.35
        region[red] = [rng.randint(180, 255), rng.randint(0, 120), 0]
        region[blue] = [0, rng.randint(0, 150), rng.randint(180, 255)]
        if rng.random() < 0.7:
            cv2.rectangle(region, (0, 0), (bw - 1, bh - 1), random_colour(rng), 1)
    else:
        heat = np.clip(field_, 0, 1)
        hot = cv2.cvtColor(
            cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_HOT), cv2.COLOR_BGR2RGB
        ).astype(np.float32)
        alpha = (heat > 0.15)[..., None] * 0.7
        region = region * (1 - alpha) + hot * alpha
    image[y : y + bh, x : x + bw] = np.clip(region, 0, 255).astype(np.uint8)


def draw_colour_bar(image: np.ndarray, rng: random.Random) -> None:
    h, w = image.shape[:2]
    bar_h, bar_w = int(h * rng.uniform(0.15, 0.4)), rng.randint(6, 16)
    x = rng.choice((rng.randint(2, 30), w - bar_w - rng.randint(2, 30)))
    y = rng.randint(0, h - bar_h)
    ramp = np.linspace(255, 0, bar_h).astype(np.uint8)[:, None].repeat(bar_w, axis=1)
    colour = rng.choice((cv2.COLORMAP_JET, cv2.COLORMAP_HOT, None))
    bar = (
        to_rgb(ramp)
        if colour is None
        else cv2.cvtColor(cv2.applyColorMap(ramp, colour), cv2.COLOR_BGR2RGB)
    )
    image[y : y + bar_h, x : x + bar_w] = bar


MEASUREMENT_KINDS = (
    "caliper",
    "crosshair",
    "focus_marker",
    "roi",
    "ecg",
    "ruler",
    "scale_bar",
    "icon",
)


def draw_measurement_graphics(
    image: np.ndarray, rng: random.Random, kind: int | None = None
) -> None:
    """Calipers, crosshairs, markers, ROI shapes, ECG traces, depth rulers, small icons
    (`kind` indexes MEASUREMENT_KINDS; random when None)."""
    h, w = image.shape[:2]
    colour = random_colour(rng)
    kind = rng.randrange(8) if kind is None else kind
    if kind == 7:
        draw_icon(image, rng, colour)
        return
    if kind == 0:  # caliper pair joined by a dotted line
        p = (rng.randint(0, w), rng.randint(0, h))
        q = (p[0] + rng.randint(-200, 200), p[1] + rng.randint(-200, 200))
        size = rng.randint(3, 8)
        for cx, cy in (p, q):
            if rng.random() < 0.5:
                cv2.line(image, (cx - size, cy), (cx + size, cy), colour, 1)
                cv2.line(image, (cx, cy - size), (cx, cy + size), colour, 1)
            else:
                cv2.line(image, (cx - size, cy - size), (cx + size, cy + size), colour, 1)
                cv2.line(image, (cx - size, cy + size), (cx + size, cy - size), colour, 1)
        steps = max(2, int(math.dist(p, q) / 6))
        for i in range(0, steps, 2):
            t = i / steps
            cv2.circle(
                image, (int(p[0] + (q[0] - p[0]) * t), int(p[1] + (q[1] - p[1]) * t)), 1, colour, -1
            )
    elif kind == 1:  # crosshair
        cx, cy = rng.randint(0, w), rng.randint(0, h)
        arm = rng.randint(6, 60)
        gap = rng.randint(0, 5)
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            cv2.line(
                image, (cx + dx * gap, cy + dy * gap), (cx + dx * arm, cy + dy * arm), colour, 1
            )
    elif kind == 2:  # focus / position markers: small triangles and dots along an edge
        x = rng.choice((rng.randint(2, 20), w - rng.randint(8, 25)))
        for _ in range(rng.randint(1, 6)):
            y = rng.randint(10, h - 10)
            s = rng.randint(3, 7)
            pts = np.array([[x, y - s], [x, y + s], [x + s * rng.choice((-1, 1)), y]], np.int32)
            cv2.fillPoly(image, [pts], colour)
    elif kind == 3:  # ROI ellipse or rectangle
        cx, cy = rng.randint(0, w), rng.randint(0, h)
        ax = (rng.randint(8, max(9, w // 5)), rng.randint(8, max(9, h // 5)))
        if rng.random() < 0.5:
            cv2.ellipse(image, (cx, cy), ax, 0, 0, 360, colour, 1)
        else:
            cv2.rectangle(image, (cx - ax[0], cy - ax[1]), (cx + ax[0], cy + ax[1]), colour, 1)
    elif kind == 4:  # ECG trace along the bottom
        y0 = int(h * rng.uniform(0.75, 0.95))
        xs = np.arange(0, w, 2)
        beat = rng.uniform(40, 90)
        ys = y0 - (np.exp(-(((xs % beat) - beat * 0.3) ** 2) / 6.0) * rng.uniform(10, 30))
        pts = np.stack(
            [xs, ys + np.random.default_rng(rng.getrandbits(32)).normal(0, 0.6, xs.size)], axis=1
        ).astype(np.int32)
        cv2.polylines(image, [pts], False, colour, 1)
    elif kind == 5:  # depth ruler: ticks and dots along a side
        x = rng.choice((rng.randint(2, 40), w - rng.randint(5, 40)))
        spacing = rng.randint(8, 40)
        for i, y in enumerate(range(rng.randint(0, 30), h, spacing)):
            length = 6 if i % 5 == 0 else 3
            cv2.line(image, (x, y), (x + length, y), colour, 1)
    else:  # scale bar with end ticks
        x, y = rng.randint(0, w - 60), rng.randint(0, h - 10)
        length = rng.randint(30, min(200, w - x))
        cv2.line(image, (x, y), (x + length, y), colour, 1)
        for xe in (x, x + length):
            cv2.line(image, (xe, y - 4), (xe, y + 4), colour, 1)


def draw_icon(image: np.ndarray, rng: random.Random, colour: tuple[int, int, int]) -> None:
    """Small vendor logos and orientation icons with no letters: the first model's false
    regions on real ultrasound were of these kinds (rings, ringed dots, arrows, wavy glyphs)."""
    h, w = image.shape[:2]
    r = rng.randint(3, 14)
    cx = rng.choice((rng.randint(r + 2, max(r + 3, w // 6)), rng.randint(r + 2, w - r - 2)))
    cy = rng.randint(r + 2, max(r + 3, h - r - 2))
    shape = rng.randrange(6)
    if shape == 0:  # ring with a dot: probe orientation marker
        cv2.circle(image, (cx, cy), r, colour, 1 + (r > 8))
        cv2.circle(image, (cx, cy), max(1, r // 3), colour, -1)
    elif shape == 1:  # filled dot or a row of dots
        for i in range(rng.randint(1, 4)):
            cv2.circle(image, (cx + i * (2 * r + 3), cy), max(1, r // 2), colour, -1)
    elif shape == 2:  # arrow
        dx = rng.choice((-1, 1)) * 2 * r
        cv2.arrowedLine(image, (cx, cy), (cx + dx, cy), colour, 1 + (r > 8), tipLength=0.4)
    elif shape == 3:  # two or three wavy strokes
        xs = np.arange(-r, r + 1)
        for k in range(rng.randint(2, 3)):
            ys = cy + k * 4 + np.round(2 * np.sin(xs * math.pi / max(2, r / 2)))
            pts = np.stack([cx + xs, ys], axis=1).astype(np.int32)
            cv2.polylines(image, [pts], False, colour, 1)
    elif shape == 4:  # ring with an inner arc, like a vendor logo
        cv2.circle(image, (cx, cy), r, colour, 2)
        cv2.ellipse(image, (cx, cy), (r // 2, r // 2), 0, rng.randint(0, 180), 300, colour, 1)
    else:  # small filled square or diamond
        pts = np.array([[cx, cy - r], [cx + r, cy], [cx, cy + r], [cx - r, cy]], np.int32)
        if rng.random() < 0.5:
            cv2.fillPoly(image, [pts], colour)
        else:
            cv2.rectangle(image, (cx - r // 2, cy - r // 2), (cx + r // 2, cy + r // 2), colour, -1)


def draw_probe_mark(image: np.ndarray, rng: random.Random) -> None:
    """Probe-orientation marks as vendors draw them next to the image: a filled half disc, a
    small probe outline (trapezoid with a footprint arc), or a bar with a dot."""
    h, w = image.shape[:2]
    colour = random_colour(rng)
    r = rng.randint(4, max(5, min(16, w // 30)))
    cx = rng.randint(r + 2, max(r + 3, w - r - 2))
    cy = rng.randint(r + 2, max(r + 3, min(h - r - 2, h // 3)))
    shape = rng.randrange(3)
    if shape == 0:
        cv2.ellipse(image, (cx, cy), (r, r), 0, -90, 90, colour, -1)
    elif shape == 1:
        pts = np.array(
            [
                [cx - r // 2, cy - r],
                [cx + r // 2, cy - r],
                [cx + r, cy + r // 2],
                [cx - r, cy + r // 2],
            ],
            np.int32,
        )
        cv2.polylines(image, [pts], True, colour, 1)
        cv2.ellipse(image, (cx, cy + r // 2), (r, max(2, r // 3)), 0, 0, 180, colour, 1)
    else:
        cv2.rectangle(image, (cx - r, cy - 1), (cx + r, cy + 1), colour, -1)
        cv2.circle(image, (cx - r, cy), max(2, r // 3), colour, -1)


def draw_body_marker(image: np.ndarray, rng: random.Random) -> None:
    """A body-marker pictogram (a breast, torso or head outline with the probe's position as
    a bar), drawn in a lower corner as ultrasound scanners do."""
    h, w = image.shape[:2]
    colour = random_colour(rng)
    size = rng.randint(18, max(19, min(60, w // 8)))
    x = rng.choice(
        (rng.randint(2, max(3, w // 8)), max(2, w - size - rng.randint(2, max(3, w // 8))))
    )
    y = max(2, h - size - rng.randint(2, max(3, h // 6)))
    cx, cy = x + size // 2, y + size // 2
    shape = rng.randrange(3)
    if shape == 0:  # breast: circle with a nipple dot
        cv2.circle(image, (cx, cy), size // 2, colour, 1)
        cv2.circle(image, (cx, cy), 1, colour, -1)
    elif shape == 1:  # torso: rounded outline
        cv2.ellipse(image, (cx, cy), (size // 3, size // 2), 0, 0, 360, colour, 1)
        cv2.circle(image, (cx, y - size // 6), max(2, size // 6), colour, 1)
    else:  # head: circle with a nose tick
        cv2.circle(image, (cx, cy), size // 2, colour, 1)
        cv2.line(image, (cx, y), (cx, y - 3), colour, 1)
    angle = rng.uniform(0, math.pi)
    dx, dy = int(math.cos(angle) * size / 3), int(math.sin(angle) * size / 3)
    cv2.line(image, (cx - dx, cy - dy), (cx + dx, cy + dy), random_colour(rng), 2)


def draw_grey_bar(image: np.ndarray, rng: random.Random) -> None:
    """A grey-scale reference bar with tick marks, no numbers."""
    h, w = image.shape[:2]
    bar_h, bar_w = int(h * rng.uniform(0.15, 0.45)), rng.randint(5, 14)
    x = rng.choice((rng.randint(2, 30), max(2, w - bar_w - rng.randint(2, 30))))
    y = rng.randint(0, max(0, h - bar_h))
    ramp = np.linspace(255, 0, bar_h).astype(np.uint8)[:, None].repeat(bar_w, axis=1)
    image[y : y + bar_h, x : x + bar_w] = to_rgb(ramp)
    colour = random_colour(rng)
    for ty in range(y, y + bar_h, max(4, bar_h // rng.randint(4, 10))):
        cv2.line(image, (x + bar_w + 1, ty), (x + bar_w + 4, ty), colour, 1)


def draw_tgc_curve(image: np.ndarray, rng: random.Random) -> None:
    """A time-gain-compensation curve: a bent polyline with dots down one side."""
    h, w = image.shape[:2]
    colour = random_colour(rng)
    x0 = rng.choice((rng.randint(5, 40), max(5, w - rng.randint(20, 60))))
    ys = np.linspace(h * 0.15, h * 0.85, rng.randint(5, 10))
    xs = x0 + np.cumsum([rng.randint(-4, 6) for _ in ys])
    pts = np.stack([xs, ys], axis=1).astype(np.int32)
    cv2.polylines(image, [pts], False, colour, 1)
    for px, py in pts:
        cv2.circle(image, (int(px), int(py)), 2, colour, -1)


# Every unlabelled graphic the generator draws, by name (tests draw each alone).
HARD_NEGATIVES: dict[str, Callable[[np.ndarray, random.Random], None]] = {
    **{
        name: functools.partial(draw_measurement_graphics, kind=index)
        for index, name in enumerate(MEASUREMENT_KINDS)
    },
    "probe_mark": draw_probe_mark,
    "body_marker": draw_body_marker,
    "grey_bar": draw_grey_bar,
    "tgc_curve": draw_tgc_curve,
    "colour_bar": draw_colour_bar,
    "doppler": draw_doppler_overlay,
}


# Text layouts of compose_sample: vendor header bars, CT/MR corner blocks, generic banners,
# or loose blocks at corners and edges only.
LAYOUTS = ("us_header", "corner_blocks", "banner", "blocks")
LAYOUT_WEIGHTS = (0.25, 0.25, 0.15, 0.35)


# ---------------------------------------------------------------- text and codes (labelled)

TEXT_COLOURS = (
    (255, 255, 255),
    (240, 240, 240),
    (200, 200, 200),
    (160, 160, 160),
    (255, 255, 0),
    (230, 220, 90),
    (0, 255, 0),
    (120, 230, 120),
    (0, 255, 255),
    (255, 170, 0),
)
# Coloured overlay text as vendors use it on dark screens.
COLOURED_ON_DARK = (
    (0, 200, 255),
    (255, 0, 255),
    (255, 120, 120),
    (100, 180, 255),
    (255, 200, 0),
    (0, 230, 120),
    (255, 140, 0),
)
DARK_COLOURS = ((0, 0, 0), (30, 30, 30), (60, 60, 60), (10, 20, 90))
BOX_DARK = ((0, 0, 0), (20, 20, 20), (40, 60, 100), (30, 40, 70), (60, 60, 60), (0, 0, 90))
BOX_LIGHT = ((255, 255, 255), (230, 230, 230), (200, 200, 200), (250, 240, 190), (190, 210, 235))


def render_line_mask(text: str, font: Font, antialias: bool) -> np.ndarray:
    """Coverage mask (0..255) of one text line, tightly cropped to its ink. Bitmap faces are
    drawn without anti-aliasing at their native size, then enlarged by whole pixels."""
    if isinstance(font, PixelFont):
        mask = render_line_mask(text, font.font, False)
        return (
            np.kron(mask, np.ones((font.scale, font.scale), np.uint8)) if font.scale > 1 else mask
        )
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("L", (int(right - left) + 4, int(bottom - top) + 4), 0)
    draw = ImageDraw.Draw(canvas)
    if not antialias:
        draw.fontmode = "1"
    draw.text((2 - left, 2 - top), text, font=font, fill=255)
    mask = np.asarray(canvas)
    rows, cols = np.nonzero(mask > 0)
    if rows.size == 0:
        return mask[:0, :0]
    return mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def ink_contrast_ok(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Per pixel: is `colour` clearly visible over these (N, 3) background pixels?"""
    ink = np.array(colour, np.float32)
    luma = np.abs(pixels.astype(np.float32) @ LUMA - float(ink @ LUMA))
    chroma = np.abs(pixels.astype(np.float32) - ink).max(axis=-1)
    coloured = (chroma >= MIN_COLOUR_CONTRAST) & (luma >= MIN_LUMA_FOR_COLOUR)
    return (luma >= MIN_LUMA_CONTRAST) | coloured


def is_legible(region: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> bool:
    """Most of the ink must differ clearly from the pixels it is drawn over."""
    ink = mask > 127
    if ink.sum() == 0:
        return False
    return float(ink_contrast_ok(region[ink], colour).mean()) >= 0.85


def blend(region: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    alpha = (mask.astype(np.float32) / 255.0)[..., None]
    region[:] = (region * (1 - alpha) + np.array(colour, np.float32) * alpha).astype(np.uint8)


def overlaps(
    box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]], margin: int
) -> bool:
    x0, y0, x1, y1 = box
    return any(
        x0 < b[2] + margin and b[0] - margin < x1 and y0 < b[3] + margin and b[1] - margin < y1
        for b in others
    )


@dataclass
class TextStyle:
    font: Font
    colour: tuple[int, int, int]
    antialias: bool
    box: tuple[int, int, int] | None  # filled box behind the text, or none
    family: str = ""  # FONT_FAMILIES name of the face ("" when not known)


def with_glyphs_for(
    style: TextStyle, text: str, fonts: list[Path], rng: random.Random, size: int
) -> TextStyle:
    """`style`, or the same with a face that has the text's accented letters (a scanner's
    own font would have them; our bitmap and URW faces may not)."""
    if not phi_text.needs_unicode_font(text) or style.family in UNICODE_FAMILIES:
        return style
    path = pick_font(rng, fonts, text)
    return TextStyle(
        load_font(str(path), size), style.colour, style.antialias, style.box, font_family(path)
    )


class Composer:
    """Draws labelled items onto one image while keeping them apart."""

    def __init__(self, image: np.ndarray, rng: random.Random) -> None:
        self.image = image
        self.rng = rng
        self.labels: list[Label] = []
        self.occupied: list[tuple[int, int, int, int]] = []

    def draw_text(self, text: str, cls: int, x: int, y: int, style: TextStyle) -> Label | None:
        """Draw `text` with its top-left ink at (x, y); returns its label, or None if refused."""
        mask = render_line_mask(text, style.font, style.antialias)
        mh, mw = mask.shape
        h, w = self.image.shape[:2]
        if mh < 4 or mw < 3 or x < 0 or y < 0 or x + mw > w or y + mh > h:
            return None
        pad = max(1, mh // 6) if style.box is not None else 0
        outer = (max(0, x - pad), max(0, y - pad), min(w, x + mw + pad), min(h, y + mh + pad))
        if overlaps(outer, self.occupied, margin=2):
            return None
        box_colour = style.box
        region = self.image[y : y + mh, x : x + mw]
        if box_colour is None and not is_legible(region, mask, style.colour):
            # Back the line with a dark or light box rather than label invisible text.
            luma = int(np.mean(style.colour))
            box_colour = (0, 0, 0) if luma > 110 else (255, 255, 255)
            pad = max(1, mh // 6)
            outer = (max(0, x - pad), max(0, y - pad), min(w, x + mw + pad), min(h, y + mh + pad))
            if overlaps(outer, self.occupied, margin=2):
                return None
        if box_colour is not None:
            filled = np.zeros_like(region)
            filled[:] = box_colour
            if not is_legible(filled, mask, style.colour):
                return None
            self.image[outer[1] : outer[3], outer[0] : outer[2]] = box_colour
            region = self.image[y : y + mh, x : x + mw]
        blend(region, mask, style.colour)
        self.occupied.append(outer)
        # The label is the ink; a backing box is not sensitive by itself.
        label = Label(cls, x, y, x + mw, y + mh, text)
        self.labels.append(label)
        return label

    def draw_code(self, x: int, y: int, size: int) -> Label | None:
        """A barcode or QR code on a white label, with an optional printed ID under it."""
        rng = self.rng
        code = render_code(rng, size)
        ch, cw = code.shape[:2]
        h, w = self.image.shape[:2]
        if x + cw > w or y + ch > h or x < 0 or y < 0:
            return None
        outer = (x, y, x + cw, y + ch)
        if overlaps(outer, self.occupied, margin=3):
            return None
        self.image[y : y + ch, x : x + cw] = code
        self.occupied.append(outer)
        label = Label(BARCODE, *outer, "code")
        self.labels.append(label)
        return label


def draw_hard_negatives_apart(comp: Composer, count: int, names: Sequence[str] = ()) -> list[str]:
    """`count` random graphics from HARD_NEGATIVES (or those `names`), never labelled, drawn
    everywhere except on the items already placed (2 px around them), so every label keeps
    exactly its ink; returns the names drawn."""
    rng = comp.rng
    chosen = list(names) or rng.choices(sorted(HARD_NEGATIVES), k=count)
    if not chosen:
        return []
    protect = np.zeros(comp.image.shape[:2], bool)
    for x0, y0, x1, y1 in comp.occupied:
        protect[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2] = True
    scratch = comp.image.copy()
    for name in chosen:
        HARD_NEGATIVES[name](scratch, rng)
    drawn = (scratch != comp.image).any(axis=2) & ~protect
    comp.image[drawn] = scratch[drawn]
    return chosen


def render_code(rng: random.Random, size: int) -> np.ndarray:
    """RGB array of a Code 128 barcode or a QR code with a white quiet zone."""
    payload = phi_text.random_id(rng)
    if rng.random() < 0.5:
        import qrcode

        qr = qrcode.QRCode(border=2, box_size=max(1, size // 25))
        qr.add_data(f"{payload}^{phi_text.random_name(rng)}")
        qr.make(fit=True)
        img = qr.make_image(fill_color="black", back_color="white").get_image().convert("RGB")
        img = img.resize((size, size), Image.Resampling.NEAREST)
    else:
        import barcode
        from barcode.writer import ImageWriter

        writer = ImageWriter()
        code = barcode.get("code128", payload, writer=writer)
        buffer = io.BytesIO()
        code.write(
            buffer,
            options={
                "write_text": rng.random() < 0.5,
                "quiet_zone": 2,
                "module_height": 8.0,
                "font_size": 6,
                "dpi": 200,
            },
        )
        img = Image.open(buffer).convert("RGB")
        scale = size / img.width
        img = img.resize((size, max(8, int(img.height * scale))), Image.Resampling.BILINEAR)
    return np.asarray(img)


def low_contrast_colour(rng: random.Random) -> tuple[int, int, int]:
    """Dim grey or a dull tint: legible on black (the contrast check still holds), faint."""
    level = rng.randint(70, 110)
    tint = rng.choice(((0, 0, 0), (10, 10, -10), (-10, 5, 15)))
    return (level + tint[0], level + tint[1], level + tint[2])


def choose_style(rng: random.Random, fonts: list[Path], size: int, text: str = "") -> TextStyle:
    path = pick_font(rng, fonts, text)
    font, family = load_font(str(path), size), font_family(path)
    # Bitmap faces are never smoothed; a third of the others are drawn without it too.
    antialias = not is_bitmap(font) and rng.random() > 0.3
    roll = rng.random()
    colour: tuple[int, int, int]
    box: tuple[int, int, int] | None = None
    if roll < 0.1:
        colour, box = rng.choice(DARK_COLOURS), rng.choice(BOX_LIGHT)
    elif roll < 0.26:
        colour, box = rng.choice(TEXT_COLOURS), rng.choice(BOX_DARK)
    elif roll < 0.31:
        colour = rng.choice(DARK_COLOURS)
    elif roll < 0.39:
        colour = low_contrast_colour(rng)
    elif roll < 0.5:
        colour = rng.choice(COLOURED_ON_DARK)
    else:
        colour = rng.choice(TEXT_COLOURS)
    return TextStyle(font, colour, antialias, box, family)


def sample_text_size(rng: random.Random, width: int) -> int:
    """Scanner text: 8-28 px at 512 px width, scaled with the image; some large lines."""
    scale = width / 512
    if rng.random() < 0.06:
        return int(rng.uniform(28, 80) * max(scale, 0.8))
    return max(7, int(math.exp(rng.uniform(math.log(8), math.log(28))) * scale))


def make_line(rng: random.Random, phi_share: float = 0.6) -> tuple[str, int]:
    if rng.random() < phi_share:
        return phi_text.phi_line(rng), PHI
    return phi_text.tech_line(rng), TECH


def draw_text_block(
    comp: Composer, fonts: list[Path], anchor: str, n_lines: int, size: int
) -> None:
    """Stacked lines at a corner or edge, the way scanners lay out their annotation."""
    rng = comp.rng
    h, w = comp.image.shape[:2]
    style = choose_style(rng, fonts, size)
    margin = rng.randint(0, max(1, size // 2))
    line_gap = int(size * rng.uniform(1.1, 1.6))
    top = anchor.startswith("t")
    y = margin if top else h - margin - n_lines * line_gap
    for i in range(n_lines):
        text, cls = make_line(rng)
        if rng.random() < 0.2 or phi_text.needs_unicode_font(text):
            style = choose_style(rng, fonts, size, text)
        mask_w = style.font.getbbox(text)[2]
        if anchor.endswith("l"):
            x = margin
        elif anchor.endswith("r"):
            x = w - margin - mask_w
        else:
            x = (w - mask_w) // 2
        comp.draw_text(text, cls, x, y + i * line_gap, style)


def draw_banner(comp: Composer, fonts: list[Path], size: int) -> None:
    """A filled strip across the top or bottom with several fields, like US/CR headers."""
    rng = comp.rng
    h, w = comp.image.shape[:2]
    strip_h = int(size * rng.uniform(1.5, 2.4))
    top = rng.random() < 0.6
    y0 = rng.randint(0, 6) if top else h - strip_h - rng.randint(0, 6)
    light = rng.random() < 0.35
    fill = rng.choice(BOX_LIGHT if light else BOX_DARK)
    comp.image[y0 : y0 + strip_h, :] = fill
    colour = rng.choice(DARK_COLOURS if light else TEXT_COLOURS)
    path = pick_font(rng, fonts)
    font = load_font(str(path), size)
    style = TextStyle(
        font, colour, not is_bitmap(font) and rng.random() > 0.3, None, font_family(path)
    )
    x = rng.randint(2, max(3, size))
    y = y0 + (strip_h - size) // 2
    while x < w - size * 2:
        text, cls = make_line(rng, phi_share=0.7)
        line_style = with_glyphs_for(style, text, fonts, rng, size)
        label = comp.draw_text(text, cls, x, y, line_style)
        advance = (label.x1 - label.x0) if label else int(line_style.font.getbbox(text)[2])
        x += advance + rng.randint(size, size * 5)


def draw_logo(image: np.ndarray, rng: random.Random, x: int, y: int, size: int) -> int:
    """A vendor-like logo with no letters (shield, rings, wave) at (x, y); returns its width.
    Unlabelled: a hard negative inside a header bar."""
    colour = rng.choice(((255, 255, 255), (0, 120, 200), (0, 170, 220), (200, 200, 200)))
    r = max(3, size // 2)
    cx, cy = x + r, y + r
    shape = rng.randrange(3)
    if shape == 0:  # shield with stars
        pts = np.array(
            [[cx - r, cy - r], [cx + r, cy - r], [cx + r, cy], [cx, cy + r], [cx - r, cy]]
        )
        cv2.polylines(image, [pts.astype(np.int32)], True, colour, max(1, r // 6))
        for k in range(3):
            cv2.circle(image, (cx - r // 2 + k * r // 2, cy - r // 3), max(1, r // 8), colour, -1)
    elif shape == 1:  # interlocking rings
        cv2.circle(image, (cx - r // 3, cy), r * 2 // 3, colour, max(1, r // 6))
        cv2.circle(image, (cx + r // 3, cy), r * 2 // 3, colour, max(1, r // 6))
    else:  # wave in a disc
        cv2.circle(image, (cx, cy), r, colour, -1)
        xs = np.arange(cx - r + 2, cx + r - 1)
        ys = cy + np.round(r / 3 * np.sin((xs - cx) * math.pi / max(2, r / 2)))
        cv2.polylines(
            image, [np.stack([xs, ys], axis=1).astype(np.int32)], False, (0, 0, 0), max(1, r // 6)
        )
    return 2 * r


def header_fields(rng: random.Random) -> list[tuple[str, int]]:
    """The fields of an ultrasound header bar: institution, name, ID, date and time (PHI), then
    the probe, preset and output indices (technical)."""
    name = phi_text.random_name(rng)
    fields = [
        (phi_text.random_institution(rng), PHI),
        (rng.choice((name, f"Name: {name}", name.upper())), PHI),
        (rng.choice(("", "ID: ", "MRN: ", "PID ")) + phi_text.random_id(rng), PHI),
    ]
    if rng.random() < 0.5:
        fields.append((phi_text.random_datetime(rng), PHI))
    else:
        fields += [(phi_text.random_date(rng, 1995, 2026), PHI), (phi_text.random_time(rng), PHI)]
    if rng.random() < 0.4:
        fields.insert(rng.randint(1, len(fields)), (phi_text.phi_line(rng), PHI))
    fields += [(phi_text.tech_line(rng), TECH) for _ in range(rng.randint(0, 3))]
    return fields


def draw_us_header(comp: Composer, fonts: list[Path], size: int) -> None:
    """An ultrasound header bar: a full-width strip at the top with a logo at the left, then
    institution, name, ID, date and time, then probe and output indices; one face and colour
    for the bar, as a vendor draws it; one or two rows."""
    rng = comp.rng
    h, w = comp.image.shape[:2]
    rows = 2 if rng.random() < 0.35 else 1
    gap = int(size * rng.uniform(1.25, 1.6))
    strip_h = min(h // 3, int(size * rng.uniform(1.4, 1.9)) + (rows - 1) * gap)
    y0 = rng.randint(0, 4)
    fill = rng.choice(((0, 0, 0), (12, 12, 12), (20, 30, 60), (40, 40, 40), (0, 20, 50)))
    comp.image[y0 : y0 + strip_h, :] = fill
    path = pick_font(rng, fonts)
    font = load_font(str(path), size)
    colour = rng.choice(TEXT_COLOURS[:6] + COLOURED_ON_DARK[:3])
    style = TextStyle(
        font, colour, not is_bitmap(font) and rng.random() > 0.3, None, font_family(path)
    )
    x = rng.randint(2, max(3, size // 2))
    if rng.random() < 0.7:
        logo = min(strip_h - 2, int(size * rng.uniform(1.0, 1.6)))
        x += draw_logo(comp.image, rng, x, y0 + (strip_h - logo) // 2, logo) + rng.randint(
            size // 2, size * 2
        )
    start = x
    fields = header_fields(rng)
    y = y0 + (strip_h - size - (rows - 1) * gap) // 2
    for text, cls in fields:
        line_style = with_glyphs_for(style, text, fonts, rng, size)
        advance = int(line_style.font.getbbox(text)[2])
        if x + advance > w - 2:
            if rows == 1 or y > y0 + gap:
                break
            x, y = start, y + gap
        label = comp.draw_text(text, cls, x, y, line_style)
        x += (label.x1 - label.x0 if label else advance) + rng.randint(size, size * 3)
    # Nothing else is drawn over the bar.
    comp.occupied.append((0, y0, w, y0 + strip_h))


def corner_lines(rng: random.Random, corner: str, count: int) -> list[tuple[str, int]]:
    """4-8 lines of a CT or MR corner block: patient data top left, study data top right,
    technique bottom left, window and position bottom right (some vendors mix them)."""
    name = phi_text.random_name(rng)
    patient = [
        (rng.choice((name, name.upper(), f"Name: {name}")), PHI),
        (rng.choice(("", "ID: ", "PID: ", "MRN ")) + phi_text.random_id(rng), PHI),
        (rng.choice(("DOB: ", "Born ", "")) + phi_text.random_date(rng, 1925, 2024), PHI),
        (phi_text.phi_line(rng), PHI),
        (phi_text.random_institution(rng), PHI),
        (phi_text.ctime_stamp(rng), PHI),
    ]
    study = [
        (phi_text.random_institution(rng), PHI),
        (
            rng.choice(("SIEMENS ", "GE ", "TOSHIBA ", "Philips ", ""))
            + rng.choice(
                ("SOMATOM", "Signa HDxt", "Aquilion", "Ingenia", "Avanto", "Revolution CT")
            ),
            TECH,
        ),
        (phi_text.random_datetime(rng), PHI),
        ("Acc: " + "".join(rng.choices(string.digits, k=rng.randint(6, 10))), PHI),
        (f"Se: {rng.randint(1, 20)}", TECH),
        (f"Im: {rng.randint(1, 300)}", TECH),
        (phi_text.ctime_stamp(rng), PHI),
    ]
    technique = [(phi_text.tech_line(rng), TECH) for _ in range(8)]
    if corner == "tl":
        pool = patient
    elif corner == "tr":
        pool = study
    else:
        pool = technique + ([(phi_text.random_datetime(rng), PHI)] if rng.random() < 0.3 else [])
    lines = (
        pool[:count]
        if corner in ("tl", "tr") and rng.random() < 0.6
        else rng.sample(pool, k=min(count, len(pool)))
    )
    while len(lines) < count:
        lines.append((phi_text.tech_line(rng), TECH))
    return lines


def draw_corner_blocks(comp: Composer, fonts: list[Path], size: int) -> None:
    """CT/MR four-corner annotation: a block of 4-8 lines in each corner, one face and colour
    for all (as a viewer or the scanner prints them), right corners right-aligned."""
    rng = comp.rng
    h, w = comp.image.shape[:2]
    style = choose_style(rng, fonts, size)
    if style.box is not None:
        style = TextStyle(style.font, style.colour, style.antialias, None, style.family)
    gap = int(size * rng.uniform(1.1, 1.35))
    margin = rng.randint(1, max(2, size // 2))
    for corner in ("tl", "tr", "bl", "br"):
        count = rng.randint(4, 8)
        count = max(1, min(count, (h // 2 - margin) // max(1, gap)))
        lines = corner_lines(rng, corner, count)
        top = corner.startswith("t")
        y = margin if top else h - margin - count * gap
        for text, cls in lines:
            line_style = with_glyphs_for(style, text, fonts, rng, size)
            text_w = int(line_style.font.getbbox(text)[2])
            x = margin if corner.endswith("l") else w - margin - text_w
            if x >= 0 and x + text_w < w:
                comp.draw_text(text, cls, x, y, line_style)
            y += gap


def draw_text_over_speckle(comp: Composer, fonts: list[Path], width: int) -> None:
    """A line or two over the middle of the picture (a measurement result, an annotation of the
    sonographer, a name typed over the image), where speckle or anatomy is under the ink."""
    rng = comp.rng
    h, w = comp.image.shape[:2]
    for _ in range(rng.randint(1, 2)):
        size = max(8, int(rng.uniform(9, 22) * width / 512))
        text, cls = make_line(rng, phi_share=0.5)
        style = choose_style(rng, fonts, size, text)
        style = TextStyle(
            style.font, rng.choice(TEXT_COLOURS[:5]), style.antialias, None, style.family
        )
        text_w = int(style.font.getbbox(text)[2])
        if text_w >= w * 0.9:
            continue
        x = rng.randint(int(w * 0.1), max(int(w * 0.1) + 1, int(w * 0.9) - text_w))
        y = rng.randint(int(h * 0.25), max(int(h * 0.25) + 1, int(h * 0.75)))
        comp.draw_text(text, cls, x, y, style)


def draw_edge_marker(comp: Composer, fonts: list[Path], width: int) -> None:
    """Single orientation letters at the very edge (often missed)."""
    rng = comp.rng
    h, w = comp.image.shape[:2]
    size = int(rng.uniform(10, 60) * max(width / 512, 0.8))
    style = choose_style(rng, fonts, size)
    text = phi_text.single_characters(rng)
    mask_w = style.font.getbbox(text)[2]
    x = rng.choice(
        (
            rng.randint(0, 4),
            max(0, w - mask_w - rng.randint(0, 4)),
            rng.randint(0, max(1, w - mask_w)),
        )
    )
    y = rng.choice(
        (rng.randint(0, 4), max(0, h - size - rng.randint(0, 4)), rng.randint(0, max(1, h - size)))
    )
    comp.draw_text(text, TECH, x, y, style)


def draw_scattered_line(comp: Composer, fonts: list[Path], width: int) -> None:
    rng = comp.rng
    h, w = comp.image.shape[:2]
    size = sample_text_size(rng, width)
    text, cls = make_line(rng, phi_share=0.5)
    style = choose_style(rng, fonts, size, text)
    mask_w = style.font.getbbox(text)[2]
    if mask_w >= w:
        return
    comp.draw_text(text, cls, rng.randint(0, w - mask_w), rng.randint(0, max(0, h - size)), style)


def degrade(image: np.ndarray, rng: random.Random) -> np.ndarray:
    """Blur, noise and JPEG: what screen captures and exports do to burned-in text."""
    if rng.random() < 0.25:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 0.9))
    if rng.random() < 0.3:
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 8), image.shape)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(35, 95)])
        if ok:
            decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
            if decoded is not None:
                image = decoded
    if rng.random() < 0.15:
        image = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return image


def compose_sample(
    rng: random.Random,
    groups: dict[str, list[np.ndarray]],
    fonts: list[Path],
    max_side: int | None = 640,
) -> Sample:
    """One training image and its labels, downscaled to at most `max_side` if given."""
    height, width = random_canvas_size(rng)
    image = make_background(rng, groups, height, width)
    for _ in range(rng.choices((0, 1, 2, 3), weights=(0.35, 0.35, 0.2, 0.1))[0]):
        draw_doppler_overlay(image, rng) if rng.random() < 0.5 else draw_colour_bar(image, rng)
    for _ in range(rng.choices((0, 1, 3, 6), weights=(0.3, 0.3, 0.25, 0.15))[0]):
        draw_measurement_graphics(image, rng)

    comp = Composer(image, rng)
    parts: list[str] = []
    if rng.random() < 0.05:
        pass  # a few images with no text at all: pure negatives
    else:
        layout = rng.choices(LAYOUTS, weights=LAYOUT_WEIGHTS)[0]
        parts.append(layout)
        if layout == "us_header":
            draw_us_header(comp, fonts, max(8, int(rng.uniform(9, 18) * width / 512)))
        elif layout == "corner_blocks":
            draw_corner_blocks(comp, fonts, max(8, int(rng.uniform(8, 16) * width / 512)))
        elif layout == "banner":
            draw_banner(comp, fonts, max(8, int(rng.uniform(9, 20) * width / 512)))
        anchors = ["tl", "tr", "bl", "br", "tc", "bc"]
        rng.shuffle(anchors)
        blocks = (
            rng.randint(0, 2) if layout in ("us_header", "corner_blocks") else rng.randint(1, 4)
        )
        for anchor in anchors[:blocks]:
            draw_text_block(comp, fonts, anchor, rng.randint(1, 5), sample_text_size(rng, width))
        for _ in range(rng.choices((0, 1, 2), weights=(0.5, 0.3, 0.2))[0]):
            draw_edge_marker(comp, fonts, width)
        for _ in range(rng.choices((0, 1, 2), weights=(0.6, 0.3, 0.1))[0]):
            draw_scattered_line(comp, fonts, width)
        if rng.random() < 0.2:
            parts.append("text_over_image")
            draw_text_over_speckle(comp, fonts, width)
        if rng.random() < 0.15:
            parts.append("code")
            size = int(rng.uniform(50, 160) * max(width / 512, 0.7))
            comp.draw_code(
                rng.randint(0, max(0, width - size)), rng.randint(0, max(0, height - size)), size
            )
    # Hard negatives last (never labelled), away from the text so no label's ink changes.
    negatives = draw_hard_negatives_apart(
        comp, rng.choices((0, 1, 2, 4, 7), weights=(0.2, 0.25, 0.25, 0.2, 0.1))[0]
    )
    parts += [f"negative:{name}" for name in negatives]

    out = degrade(comp.image, rng)
    labels = comp.labels
    if max_side and max(out.shape[:2]) > max_side:
        scale = max_side / max(out.shape[:2])
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        out = cv2.resize(out, new_size, interpolation=cv2.INTER_AREA)
        labels = [
            Label(
                lb.cls,
                int(lb.x0 * scale),
                int(lb.y0 * scale),
                math.ceil(lb.x1 * scale),
                math.ceil(lb.y1 * scale),
                lb.text,
            )
            for lb in labels
        ]
    return Sample(np.ascontiguousarray(out), labels, parts)
