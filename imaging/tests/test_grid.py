"""The grid overview: numbered, labelled boxes drawn over a redacted frame."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

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


def _crowded_corner() -> list[GridBox]:
    # 40 small boxes packed into the top-left corner of a 512 x 512 frame, 2 px apart.
    boxes = []
    for i in range(40):
        row, col = divmod(i, 8)
        x, y = 2 + col * 14, 2 + row * 10
        boxes.append(GridBox(i + 1, (x, y, x + 12, y + 8), "phi_text", 0.5 + i / 100))
    return boxes


def _layout_for(boxes: list[GridBox], size: int) -> list:
    from engine.pixels.grid import label_font, label_layout

    font = label_font(max(10, min(32, round(size / 45))))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    sizes = []
    for b in boxes:
        options = []
        for text in dict.fromkeys((b.caption, b.short_caption)):
            left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
            options.append((text, right - left + 5, bottom - top + 5))
        sizes.append(options)
    return label_layout([b.box for b in boxes], sizes, size, size)


def test_no_two_tags_meet_in_a_crowded_corner():
    boxes = _crowded_corner()
    placements = _layout_for(boxes, 512)

    assert all(p is not None for p in placements), "every box gets a tag on a 512 px frame"
    rects = [p.rect for p in placements]
    for i, a in enumerate(rects):
        assert 0 <= a[0] < a[2] <= 512 and 0 <= a[1] < a[3] <= 512
        for b in rects[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    # Crowded: some tags had to move away (with a leader line) or shrink to the number.
    assert any(p.leader for p in placements)
    assert any(p.text == str(b.number) for p, b in zip(placements, boxes, strict=True)) or all(
        p.text == b.caption for p, b in zip(placements, boxes, strict=True)
    )


def test_a_lone_box_keeps_its_tag_above_it():
    placements = _layout_for([GridBox(1, (100, 100, 200, 150), "phi_text", 0.9)], 300)
    rect = placements[0].rect
    assert rect[3] == 100 and rect[0] == 100 and not placements[0].leader


def test_the_drawn_crowded_corner_shows_every_number_and_a_leader_line():
    image = np.zeros((512, 512), np.uint8)
    grid = draw_grid(image, _crowded_corner())
    # Tags moved out of the corner: coloured pixels appear well outside the packed boxes.
    outside = grid[:, 130:]
    assert (outside.max(axis=2) > 0).any()


def test_manual_boxes_and_leftovers_read_as_such():
    assert GridBox(2, (0, 0, 1, 1), "phi_text", 1.0, manual=True).caption == "2 patient text manual"
    assert GridBox(0, (0, 0, 1, 1), "phi_text", 0.7, leftover=True).caption == "? leftover text"
    image = np.zeros((100, 100), np.uint8)
    grid = draw_grid(image, [GridBox(0, (20, 40, 60, 70), "phi_text", 0.7, leftover=True)])
    from engine.pixels.grid import LEFTOVER_COLOUR

    assert (grid[40:71, 20:61] == np.array(LEFTOVER_COLOUR)).all(axis=2).any()
