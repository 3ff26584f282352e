"""The blurred teaching copy (engine.pixels.blur): built from the redacted frame only."""

from __future__ import annotations

import numpy as np
import pytest

from engine.pixels.blur import blur_regions


def test_it_changes_only_the_boxes():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    frame[30:50, 20:90] = 0  # a filled region
    out = blur_regions(frame, [(20, 30, 90, 50)])
    mask = np.zeros((120, 160), bool)
    mask[30:50, 20:90] = True
    assert np.array_equal(out[~mask], frame[~mask])
    # The black box is gone: painted with the surroundings' colour (about mid-grey here).
    assert 60 < out[mask].mean() < 200


def test_what_was_under_the_fill_never_reaches_the_output():
    # Two redacted frames that differ only inside the box give the same blurred copy: the
    # copy depends on the surroundings alone, so nothing of a region can be recovered.
    background = np.full((100, 100), 90, np.uint8)
    one, two = background.copy(), background.copy()
    one[40:60, 10:90] = 0
    two[40:60, 10:90] = 255
    two[45:55, 20:80] = 7
    assert np.array_equal(
        blur_regions(one, [(10, 40, 90, 60)]), blur_regions(two, [(10, 40, 90, 60)])
    )


def test_it_refuses_what_is_not_one_uint8_frame():
    with pytest.raises(ValueError):
        blur_regions(np.zeros((4, 4), np.uint16), [])
    assert np.array_equal(blur_regions(np.ones((4, 4), np.uint8), []), np.ones((4, 4)))
