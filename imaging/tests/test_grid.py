"""The grid overview: numbered, labelled boxes drawn over a redacted frame."""

from __future__ import annotations

import numpy as np
import pytest

from engine.pixels.grid import FONT_PATH, PALETTE, GridBox, draw_grid, text_colour
from imaging.tests.fixtures import samples


def test_it_draws_numbered_boxes_in_palette_colours():
    image = samples.real_rgb().copy()
    image[60:100, 40:120] = 0  # A redacted region.
    regions = [
        GridBox(number=1, box=(40, 60, 120, 100), label="text", confidence=0.91),
        GridBox(number=2, box=(5, 5, 30, 20), label="barcode", confidence=None),
    ]
    before = image.copy()

    grid = draw_grid(image, regions)

    assert grid.shape == (120, 160, 3) and grid.dtype == np.uint8
    assert np.array_equal(image, before)  # The input is not drawn on.
    # The outline of box 1 is in colour 1: its left edge, below any caption band.
    assert tuple(grid[90, 40]) == PALETTE[0]
    assert tuple(grid[99, 80]) == PALETTE[0]
    # The inside of the box stays as it was (the redacted fill), away from the caption.
    assert tuple(grid[85, 80]) == (0, 0, 0)
    # Box 2 has colour 2 somewhere on its outline.
    assert tuple(grid[19, 20]) == PALETTE[1]


def test_it_writes_the_caption_in_a_band():
    image = np.full((200, 300, 3), 128, np.uint8)
    grid = draw_grid(
        image, [GridBox(number=3, box=(100, 100, 200, 150), label="name", confidence=0.5)]
    )
    band = grid[80:100, 100:200]
    colour = np.array(PALETTE[2])
    assert (band == colour).all(axis=2).any()
    text = np.array(text_colour(PALETTE[2]))
    assert (band == text).all(axis=2).any()  # Caption pixels in the contrasting colour.
    assert GridBox(number=3, box=(0, 0, 1, 1), label="name", confidence=0.5).caption == "3 name 50%"
    assert GridBox(number=4, box=(0, 0, 1, 1), label="id").caption == "4 id"
    # The detector's classes read as words, not identifiers.
    assert GridBox(number=5, box=(0, 0, 1, 1), label="phi_text", confidence=0.63).caption == (
        "5 patient text 63%"
    )


def test_it_keeps_captions_inside_the_image_at_the_top_edge():
    image = np.zeros((100, 100), np.uint8)
    grid = draw_grid(image, [GridBox(number=1, box=(0, 0, 40, 30), label="text", confidence=0.8)])
    assert grid.shape == (100, 100, 3)
    assert (grid[0:10, 0:40] == np.array(PALETTE[0])).all(axis=2).any()


def test_it_contrasts_caption_text_with_the_band():
    assert text_colour((240, 228, 66)) == (0, 0, 0)
    assert text_colour((0, 114, 178)) == (255, 255, 255)
    assert FONT_PATH.exists()


def test_it_refuses_non_uint8_images():
    with pytest.raises(ValueError):
        draw_grid(samples.real_grey16(), [])
    with pytest.raises(ValueError):
        draw_grid(np.zeros((4, 4, 2), np.uint8), [])
