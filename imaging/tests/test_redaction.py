from __future__ import annotations

import numpy as np

from engine.pixels.redaction import fill_regions, pad_box


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


def _line(text: str = "WESTWAY MEDICAL") -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """White text on black, and the tight box of its ink."""
    import cv2

    from engine.pixels.redaction import INK_CONTRAST

    image = np.zeros((40, 400), np.uint8)
    cv2.putText(image, text, (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1, cv2.LINE_8)
    # Faint antialiased fringes are padding's job; the box is that of the ink proper.
    ys, xs = np.nonzero(image > 2 * INK_CONTRAST)
    return image, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def test_it_grows_a_line_box_over_letters_the_detector_cut_off() -> None:
    from engine.pixels.redaction import complete_line

    image, (x0, y0, x1, y1) = _line()
    short = (x0 + 20, y0, x1 - 15, y1)  # a letter or two missing at each end
    grown = complete_line(image, short)
    assert grown[0] <= x0 and grown[2] >= x1
    assert (grown[1], grown[3]) == (y0, y1)
    # Nothing beyond the line is taken: the ink ends within a gap of the true ends.
    assert grown[2] - x1 < 3 and x0 - grown[0] < 3


def test_it_leaves_a_complete_line_and_a_distant_word_alone() -> None:
    from engine.pixels.redaction import complete_line

    image, box = _line("DOE JANE")
    import cv2

    # Another word far to the right (more than a line-height gap) is not joined.
    cv2.putText(image, "R", (300, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1, cv2.LINE_8)
    grown = complete_line(image, box)
    # At most an antialiased fringe column more on either side; never out to the "R".
    assert all(abs(a - b) <= 2 for a, b in zip(grown, box, strict=True))
    assert grown[2] < 290


def test_it_bounds_growth_on_texture_and_skips_non_line_shapes() -> None:
    from engine.pixels.redaction import LINE_MAX_GROWTH, complete_line

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(60, 600), dtype=np.uint8)
    box = (280, 20, 320, 32)
    grown = complete_line(texture, box)
    reach = int(LINE_MAX_GROWTH * 12)
    assert grown[0] >= 280 - reach - 1 and grown[2] <= 320 + reach + 1
    # A square (a barcode, an icon) is not a line: unchanged.
    assert complete_line(texture, (100, 10, 130, 40)) == (100, 10, 130, 40)
