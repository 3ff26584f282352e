"""Write a YOLO-format data set of synthetic burned-in-text images.

    python model/detector/generate.py --out /work/data/detector --n-train 1200 --n-val 150

Layout: OUT/images/{train,val}/*.jpg, OUT/labels/{train,val}/*.txt, OUT/data.yaml.
The data set is generated outside the repository and never committed.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from model.detector.backgrounds import load_backgrounds
from model.detector.synth import CLASS_NAMES, Label, Sample, compose_sample, font_paths


def yolo_label_lines(labels: list[Label], height: int, width: int) -> list[str]:
    lines = []
    for lb in labels:
        x0, y0 = max(0, lb.x0), max(0, lb.y0)
        x1, y1 = min(width, lb.x1), min(height, lb.y1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
        lines.append(f"{lb.cls} {cx:.6f} {cy:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
    return lines


def write_sample(sample: Sample, image_path: Path, label_path: Path) -> None:
    h, w = sample.image.shape[:2]
    bgr = cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR)
    # High JPEG quality: the degradations were already applied on purpose in compose_sample.
    cv2.imwrite(str(image_path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 97])
    label_path.write_text("\n".join(yolo_label_lines(sample.labels, h, w)) + "\n")


def draw_labels(sample: Sample) -> np.ndarray:
    """Overlay of the label boxes, for checking by eye."""
    colours = ((255, 0, 255), (0, 160, 255), (255, 128, 0))
    out = sample.image.copy()
    for lb in sample.labels:
        cv2.rectangle(out, (lb.x0 - 1, lb.y0 - 1), (lb.x1, lb.y1), colours[lb.cls], 1)
    return out


def generate_split(
    out: Path, split: str, count: int, seed: int, groups: dict[str, list[np.ndarray]], max_side: int
) -> int:
    images, labels = out / "images" / split, out / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    fonts = font_paths()
    boxes = 0
    for index in range(count):
        # One generator per image: any image can be regenerated alone from (seed, split, index).
        rng = random.Random(f"{seed}-{split}-{index}")
        sample = compose_sample(rng, groups, fonts, max_side=max_side)
        stem = f"{split}_{index:05d}"
        write_sample(sample, images / f"{stem}.jpg", labels / f"{stem}.txt")
        boxes += len(sample.labels)
    return boxes


def write_data_yaml(out: Path) -> Path:
    path = out / "data.yaml"
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASS_NAMES))
    path.write_text(
        f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n"
    )
    return path


def generate_dataset(
    out: Path, n_train: int, n_val: int, seed: int = 0, max_side: int = 640
) -> Path:
    groups = load_backgrounds()
    generate_split(out, "train", n_train, seed, groups, max_side)
    generate_split(out, "val", n_val, seed, groups, max_side)
    return write_data_yaml(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/work/data/detector"))
    parser.add_argument("--n-train", type=int, default=1200)
    parser.add_argument("--n-val", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument(
        "--preview",
        type=int,
        default=0,
        help="write this many overlays with label boxes to OUT/preview instead",
    )
    args = parser.parse_args()
    if args.preview:
        groups = load_backgrounds()
        fonts = font_paths()
        (args.out / "preview").mkdir(parents=True, exist_ok=True)
        for index in range(args.preview):
            sample = compose_sample(
                random.Random(f"{args.seed}-preview-{index}"), groups, fonts, max_side=args.max_side
            )
            overlay = cv2.cvtColor(draw_labels(sample), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(args.out / "preview" / f"{index:03d}.png"), overlay)
        return
    path = generate_dataset(args.out, args.n_train, args.n_val, args.seed, args.max_side)
    print(path)


if __name__ == "__main__":
    main()
