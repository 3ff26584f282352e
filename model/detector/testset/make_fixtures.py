"""Cut the small real-image fixtures used by the detector tests from the real test set.

    python model/detector/testset/make_fixtures.py

Writes testset/fixtures/*.png (header strips with burned-in PHI, a few KB each) and
fixtures.json with their phi_text boxes in crop coordinates, taken from ground_truth.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from model.detector.testset import load_frame, load_ground_truth

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# (file, rows kept, columns kept): the header of each image, with some image below it.
CROPS = {
    "ultrasounds/GREYSCALE_IMAGE.dcm": (0, 96, 0, 1024),
    "ultrasounds/RGB_IMAGE.dcm": (0, 96, 0, 900),
    "OBXXXX1A.dcm": (0, 96, 0, 800),
    "gdcm-US-ALOKA-16.dcm": (0, 64, 0, 640),
}


def main() -> None:
    FIXTURES.mkdir(exist_ok=True)
    index = []
    for truth in load_ground_truth():
        if truth.file not in CROPS:
            continue
        top, bottom, left, right = CROPS[truth.file]
        frame = load_frame(truth.package, truth.file, truth.frame)[top:bottom, left:right]
        name = Path(truth.file).stem + ".png"
        bgr = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(FIXTURES / name), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        boxes = [
            {"box": [b.x0 - left, b.y0 - top, b.x1 - left, b.y1 - top], "text": b.text}
            for b in truth.boxes
            if b.cls == "phi_text" and b.y1 <= bottom and b.x1 <= right
        ]
        index.append({"file": name, "source": truth.key, "phi_boxes": boxes})
    (FIXTURES / "fixtures.json").write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    main()
