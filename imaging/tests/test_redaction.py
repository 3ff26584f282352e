from __future__ import annotations

import numpy as np

from imaging.redaction import fill_regions, pad_box


def test_it_grows_padding_with_box_height() -> None:
    short = pad_box((100, 100, 200, 108), 2, (1000, 1000))
    tall = pad_box((100, 100, 200, 160), 2, (1000, 1000))
    assert short == (96, 96, 204, 112)  # 2 + 0.25 * 8
    assert tall == (83, 83, 217, 177)  # 2 + 0.25 * 60
    assert pad_box((100, 100, 200, 160), 2, (1000, 1000), height_ratio=0) == (98, 98, 202, 162)


def test_it_clips_padding_to_the_image() -> None:
    assert pad_box((0, 0, 30, 10), 4, (20, 25)) == (0, 0, 25, 17)
    x0, y0, x1, y1 = pad_box((50, 50, 60, 60), 0, (20, 20), height_ratio=0)
    assert x1 <= x0 and y1 <= y0  # outside: empty


def test_it_fills_boxes_solid_without_touching_the_input() -> None:
    image = np.full((10, 12, 3), 200, np.uint8)
    out = fill_regions(image, [(2, 3, 5, 6), (10, 8, 40, 40)])
    assert (image == 200).all()
    assert (out[3:6, 2:5] == 0).all() and (out[8:, 10:] == 0).all()
    untouched = np.ones((10, 12), bool)
    untouched[3:6, 2:5] = False
    untouched[8:, 10:] = False
    assert (out[untouched] == 200).all()


def test_it_fills_greyscale_and_16_bit_frames() -> None:
    image = np.full((8, 8), 4000, np.uint16)
    out = fill_regions(image, [(1, 1, 3, 3)], value=0)
    assert out.dtype == np.uint16 and out[1:3, 1:3].sum() == 0 and out[0, 0] == 4000
