from __future__ import annotations

import random

from model.detector.crops import clip_labels, crop_positions


def test_it_clips_labels_to_the_visible_part() -> None:
    boxes = [
        (0, 300.0, 10.0, 400.0, 30.0),
        (1, 10.0, 10.0, 50.0, 30.0),
        (2, 318.5, 5.0, 330.0, 9.0),
    ]
    clipped = clip_labels(boxes, left=0, top=0, size=320)
    assert clipped == [(0, 300.0, 10.0, 320.0, 30.0), (1, 10.0, 10.0, 50.0, 30.0)]


def test_crops_stay_inside_the_image_and_mostly_hold_a_label() -> None:
    boxes = [(0, 600.0, 20.0, 630.0, 32.0)]
    positions = crop_positions(random.Random(0), 480, 640, 320, 3, boxes)
    for left, top in positions:
        assert 0 <= left <= 320 and 0 <= top <= 160
    left, top = positions[0]
    assert left <= 600 and left + 320 >= 630 and top <= 20
