"""Scanner-like generation (issue 14 item 1): the faces, layouts, date and name formats and hard
negatives are drawn, and every label is exactly the ink of its text."""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import numpy as np
import pytest

from model.detector import phi_text, synth
from model.detector.synth import Composer


@pytest.fixture(scope="module")
def fonts() -> list[Path]:
    return synth.font_paths()


def dark_background(seed: int, height: int = 480, width: int = 640) -> np.ndarray:
    """Speckle, gradient, blobs or a flat field (synthetic kinds only: fast, no packages)."""
    return synth.make_background(random.Random(seed), {}, height, width)


def ink_box(before: np.ndarray, after: np.ndarray, comp: Composer, label: synth.Label) -> tuple:
    """The bounding box of the pixels the text itself changed: against the backing box's fill
    when the line has one, against the picture before otherwise."""
    outer = min(
        (
            o
            for o in comp.occupied
            if o[0] <= label.x0 and o[1] <= label.y0 and label.x1 <= o[2] and label.y1 <= o[3]
        ),
        key=lambda o: (o[2] - o[0]) * (o[3] - o[1]),
    )
    region = after[label.y0 : label.y1, label.x0 : label.x1].astype(np.int16)
    if outer == (label.x0, label.y0, label.x1, label.y1):
        reference = before[label.y0 : label.y1, label.x0 : label.x1].astype(np.int16)
    else:
        reference = after[outer[1], outer[0]].astype(np.int16)
    rows, cols = np.nonzero(np.abs(region - reference).max(axis=2) > 0)
    assert rows.size, f"no ink under {label.text!r}"
    return (
        label.x0 + int(cols.min()),
        label.y0 + int(rows.min()),
        label.x0 + int(cols.max()) + 1,
        label.y0 + int(rows.max()) + 1,
    )


def assert_labels_are_the_ink(before: np.ndarray, after: np.ndarray, comp: Composer) -> None:
    for label in comp.labels:
        found = ink_box(before, after, comp, label)
        # The faintest anti-aliased edge may round to no change: one pixel of slack.
        for got, want in zip(found, (label.x0, label.y0, label.x1, label.y1), strict=True):
            assert abs(got - want) <= 1, (label.text, found, label)


LAYOUT_DRAWERS = {
    "us_header": lambda comp, fonts: synth.draw_us_header(comp, fonts, 14),
    "corner_blocks": lambda comp, fonts: synth.draw_corner_blocks(comp, fonts, 12),
    "banner": lambda comp, fonts: synth.draw_banner(comp, fonts, 14),
    "text_over_image": lambda comp, fonts: synth.draw_text_over_speckle(comp, fonts, 640),
}


@pytest.mark.parametrize("layout", sorted(LAYOUT_DRAWERS))
@pytest.mark.parametrize("seed", range(4))
def test_each_layout_draws_labelled_text_whose_boxes_are_its_ink(
    layout: str, seed: int, fonts: list[Path]
) -> None:
    image = dark_background(seed)
    before = image.copy()
    comp = Composer(image, random.Random(f"{layout}-{seed}"))
    LAYOUT_DRAWERS[layout](comp, fonts)
    assert comp.labels, f"{layout} drew nothing"
    assert_labels_are_the_ink(before, image, comp)
    if layout == "us_header":
        # A full-width bar at the top, its fields on it: name, ID, date or time are PHI.
        assert all(lb.y1 <= 480 // 3 + 8 for lb in comp.labels)
        assert sum(lb.cls == synth.PHI for lb in comp.labels) >= 2
    if layout == "corner_blocks":
        corners = [
            sum((lb.x0 < 320) == left and (lb.y0 < 240) == top for lb in comp.labels)
            for left in (True, False)
            for top in (True, False)
        ]
        assert max(corners) >= 4, corners


def test_the_us_header_draws_its_logo_unlabelled(fonts: list[Path]) -> None:
    for seed in range(20):
        image = np.zeros((300, 640, 3), np.uint8)
        comp = Composer(image, random.Random(seed))
        synth.draw_us_header(comp, fonts, 14)
        ink = (image != image[image.shape[0] - 1, 0]).any(axis=2)
        labelled = np.zeros_like(ink)
        for lb in comp.labels:
            labelled[lb.y0 : lb.y1, lb.x0 : lb.x1] = True
        bar = comp.occupied[-1]
        # A logo: ink on the bar, left of every field, under no label.
        first = min(lb.x0 for lb in comp.labels)
        logo = ink[bar[1] : bar[3], :first] & ~labelled[bar[1] : bar[3], :first]
        fill = image[bar[1] + 1, bar[2] - 1]
        logo &= (image[bar[1] : bar[3], :first] != fill).any(axis=2)
        if logo.sum() > 10:
            return
    raise AssertionError("no header with a logo in 20 seeds")


@pytest.mark.parametrize("name", sorted(synth.HARD_NEGATIVES))
def test_each_hard_negative_is_drawn_unlabelled_and_leaves_labels_alone(
    name: str, fonts: list[Path]
) -> None:
    image = dark_background(3)
    comp = Composer(image, random.Random(name))
    style = synth.TextStyle(synth.load_font(str(fonts[0]), 16), (255, 255, 255), True, None)
    label = comp.draw_text("DOE^JANE 123456", synth.PHI, 250, 230, style)
    assert label is not None
    before = image.copy()
    changed = False
    for _attempt in range(5):  # a graphic may fall wholly on the label's spot: draw again
        assert synth.draw_hard_negatives_apart(comp, 0, [name]) == [name]
        changed = changed or bool((image != before).any())
    assert changed, f"{name} drew nothing"
    assert comp.labels == [label]
    box = (slice(label.y0 - 2, label.y1 + 2), slice(label.x0 - 2, label.x1 + 2))
    assert np.array_equal(image[box], before[box])


def test_bitmap_faces_are_drawn_without_smoothing_and_enlarged_by_whole_pixels(
    fonts: list[Path],
) -> None:
    bitmaps = [p for p in fonts if synth.font_family(p) == "bitmap"]
    if not bitmaps:
        pytest.skip("no bitmap faces installed (apt-get install xfonts-base fonts-terminus)")
    x11 = [p for p in bitmaps if p.name.endswith(".pcf.gz")] or bitmaps
    font = synth.load_font(str(x11[0]), 2 * synth.bitmap_native_sizes(str(x11[0]))[0])
    assert isinstance(font, synth.PixelFont) and font.scale == 2
    mask = synth.render_line_mask("SMITH^JOHN 1234", font, True)
    assert set(np.unique(mask)) <= {0, 255}
    # Every glyph pixel is a 2 x 2 block.
    height, width = mask.shape
    assert height % 2 == 0 and width % 2 == 0
    blocks = mask.reshape(height // 2, 2, width // 2, 2)
    assert (blocks.min(axis=(1, 3)) == blocks.max(axis=(1, 3))).all()
    style = synth.choose_style(random.Random(0), [x11[0]], 13)
    assert not style.antialias


def test_accented_names_are_drawn_in_a_face_that_has_their_letters(fonts: list[Path]) -> None:
    rng = random.Random(0)
    for _ in range(50):
        path = synth.pick_font(rng, fonts, "DVOŘÁK^ŠTĚPÁN")
        assert synth.font_family(path) in synth.UNICODE_FAMILIES


def test_absent_font_families_are_skipped_with_a_log_line(
    tmp_path: Path, fonts: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    dejavu = next(p for p in fonts if synth.font_family(p) == "dejavu")
    folder = tmp_path / "truetype" / "dejavu"
    folder.mkdir(parents=True)
    (folder / dejavu.name).symlink_to(dejavu)
    with caplog.at_level(logging.INFO, logger="model.detector.synth"):
        found = synth.font_paths(tmp_path)
    assert [p.name for p in found] == [dejavu.name]
    assert "no bitmap faces" in caplog.text and "apt-get install xfonts-base" in caplog.text
    assert "no noto faces" in caplog.text
    with pytest.raises(FileNotFoundError):
        synth.font_paths(tmp_path / "empty")


def test_date_time_and_name_formats() -> None:
    rng = random.Random(0)
    ctime = re.compile(
        r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ 1-3]\d \d\d:\d\d:\d\d \d{4}$"
    )
    assert all(ctime.match(phi_text.ctime_stamp(rng)) for _ in range(50))
    stamps = [phi_text.random_datetime(rng) for _ in range(400)]
    assert any(ctime.match(s) for s in stamps)
    assert any(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$", s) for s in stamps)
    names = [phi_text.random_name(rng) for _ in range(400)]
    assert any(re.match(r"^[A-Z' -]+\^[A-Z]+", n) for n in names)  # LAST^FIRST
    assert any(re.match(r"^[A-Z' -]+, [A-Z]+", n) for n in names)  # LAST, FIRST
    assert any(re.match(r"^[A-Z][a-z]+ [A-Z][a-z]+$", n) for n in names)  # First Last
    assert any(not n.isascii() for n in names)  # diacritics
    assert phi_text.format_name("DOE", "JANE", "LAST, FIRST") == "DOE, JANE"
    assert phi_text.format_name("DOE", "JANE", "First Last") == "Jane Doe"


def test_compose_sample_records_its_layout_and_negatives(fonts: list[Path]) -> None:
    layouts, negatives = set(), set()
    for seed in range(6):
        sample = synth.compose_sample(random.Random(f"parts-{seed}"), {}, fonts, max_side=None)
        layouts.update(p for p in sample.parts if p in synth.LAYOUTS)
        negatives.update(p for p in sample.parts if p.startswith("negative:"))
        height, width = sample.image.shape[:2]
        for label in sample.labels:
            assert 0 <= label.x0 < label.x1 <= width and 0 <= label.y0 < label.y1 <= height
    assert len(layouts) >= 2 and negatives
