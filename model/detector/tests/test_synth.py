"""The generator labels exactly what it draws: every label has visible ink, no ink is unlabelled."""

from __future__ import annotations

import random

import numpy as np
import pytest

from model.detector import synth
from model.detector.synth import Composer, TextStyle, font_paths, load_font


@pytest.fixture(scope="module")
def fonts() -> list:
    return font_paths()


def background(seed: int) -> np.ndarray:
    rng = random.Random(seed)
    return synth.make_background(rng, {}, 480, 640)  # synthetic kinds only: fast, no packages


def drawn_mask(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.abs(after.astype(np.int16) - before.astype(np.int16)).max(axis=2) > 0


@pytest.mark.parametrize("seed", range(12))
def test_it_labels_every_drawn_item_and_nothing_else(seed: int, fonts: list) -> None:
    image = background(seed)
    before = image.copy()
    comp = Composer(image, random.Random(seed))
    for anchor in ("tl", "br", "tc"):
        synth.draw_text_block(comp, fonts, anchor, 3, synth.sample_text_size(comp.rng, 640))
    synth.draw_edge_marker(comp, fonts, 640)
    synth.draw_scattered_line(comp, fonts, 640)
    comp.draw_code(200, 200, 90)
    assert comp.labels, "nothing was drawn"

    changed = drawn_mask(before, image)
    # Outside the drawn items (label plus backing box) not one pixel may change.
    allowed = np.zeros(changed.shape, bool)
    for x0, y0, x1, y1 in comp.occupied:
        allowed[y0:y1, x0:x1] = True
    assert not (changed & ~allowed).any()

    for label in comp.labels:
        assert 0 <= label.x0 < label.x1 <= 640 and 0 <= label.y0 < label.y1 <= 480
        box_after = image[label.y0 : label.y1, label.x0 : label.x1].astype(np.int16)
        if label.cls == synth.BARCODE:
            # A code is dark modules on white: both must be present.
            assert box_after.max() >= 200 and box_after.min() <= 60
            continue
        # The ink of a text line stands out from the rest of its own box.
        luma = box_after @ np.array([0.299, 0.587, 0.114])
        assert np.ptp(luma) >= synth.MIN_LUMA_FOR_COLOUR, label.text
        assert changed[label.y0 : label.y1, label.x0 : label.x1].any(), label.text


def test_it_backs_or_refuses_text_that_would_be_invisible(fonts: list) -> None:
    image = np.full((200, 400, 3), 128, np.uint8)
    comp = Composer(image, random.Random(0))
    style = TextStyle(load_font(str(fonts[0]), 20), (130, 130, 130), True, None)
    label = comp.draw_text("DOE^JOHN", synth.PHI, 10, 10, style)
    assert label is not None
    # The grey-on-grey line was given a contrasting box behind it, larger than the ink.
    outer = comp.occupied[-1]
    assert outer[0] < label.x0 and outer[1] < label.y0
    box_colour = image[outer[1], outer[0]]
    assert np.abs(box_colour.astype(int) - 130).max() >= synth.MIN_LUMA_CONTRAST
    region = image[label.y0 : label.y1, label.x0 : label.x1]
    assert (np.abs(region.astype(int) - 130).max(axis=2) <= 2).any()  # the ink itself


def test_it_does_not_overlap_items(fonts: list) -> None:
    image = np.zeros((200, 400, 3), np.uint8)
    comp = Composer(image, random.Random(0))
    style = TextStyle(load_font(str(fonts[0]), 20), (255, 255, 255), True, None)
    assert comp.draw_text("12345678", synth.PHI, 10, 10, style) is not None
    assert comp.draw_text("87654321", synth.PHI, 20, 15, style) is None


def test_compose_sample_is_reproducible_and_in_bounds(fonts: list) -> None:
    first = synth.compose_sample(random.Random("x-1"), {}, fonts)
    second = synth.compose_sample(random.Random("x-1"), {}, fonts)
    assert np.array_equal(first.image, second.image)
    assert first.labels == second.labels
    height, width = first.image.shape[:2]
    assert max(height, width) <= 640
    for label in first.labels:
        assert 0 <= label.x0 < label.x1 <= width and 0 <= label.y0 < label.y1 <= height
