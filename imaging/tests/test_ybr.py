"""Fast JPEG colour frames (engine.dicom.ybr, engine.dicom.io.decode_frame): the same pixels
as pydicom's own decoding and conversion, byte for byte, on generated cines and on every
8-bit JPEG colour file of the real-file corpus."""

from __future__ import annotations

from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array
from pydicom.pixels.processing import convert_color_space

from bench.cine import cine_dicom
from engine.dicom import io as dicom
from engine.dicom import ybr
from imaging.tests import corpus


def test_the_table_conversion_is_pydicoms_on_every_triplet_and_any_frame_shape() -> None:
    # Building the tables checks all 2^24 triplets against pydicom (None if any differs).
    assert ybr._tables() is not None
    rng = np.random.default_rng(7)
    for shape in [(768, 1024, 3), (743, 975, 3), (5, 7, 3), (2, 16, 16, 3)]:
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        expected = convert_color_space(frame.copy(), "YBR_FULL", "RGB")
        np.testing.assert_array_equal(ybr.ybr_full_to_rgb(frame), expected)
    # Grey (Cb = Cr = 128, most of an ultrasound frame) and the corners of the cube.
    corners = np.array(
        [[[0, 0, 0], [255, 255, 255], [0, 255, 0], [255, 0, 255], [128, 128, 128], [7, 0, 255]]],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(
        ybr.ybr_full_to_rgb(corners), convert_color_space(corners.copy(), "YBR_FULL", "RGB")
    )
    assert ybr.ybr_full_to_rgb(np.zeros((4, 4, 3), np.uint16)) is None


def test_cine_frames_decode_to_pydicoms_pixels_without_pydicoms_decoders(monkeypatch: Any) -> None:
    import io

    data = cine_dicom(4, 96, 128)
    ds = pydicom.dcmread(io.BytesIO(data))
    expected = [pixel_array(ds, index=i) for i in range(4)]
    calls: list[int] = []
    real = dicom._jpeg_ybr_frame

    def spy(ds: Any, index: int, shape: Any) -> Any:
        frame = real(ds, index, shape)
        calls.append(index if frame is not None else -1)
        return frame

    monkeypatch.setattr(dicom, "_jpeg_ybr_frame", spy)
    for i in range(4):
        np.testing.assert_array_equal(dicom.decode_frame(ds, i), expected[i])
    assert calls == [0, 1, 2, 3]  # every frame went the fast way


def test_anything_else_keeps_pydicoms_decoding() -> None:
    import io

    ds = pydicom.dcmread(io.BytesIO(cine_dicom(2, 64, 64, jpeg=False)))  # uncompressed RGB
    assert dicom._jpeg_ybr_frame(ds, 0, dicom.geometry(ds)) is None
    np.testing.assert_array_equal(dicom.decode_frame(ds, 1), pixel_array(ds, index=1))


def _jpeg_colour_entries() -> list[corpus.Entry]:
    if not (corpus.corpus_dir() / "manifest.tsv").is_file():
        return []
    return [
        e
        for e in corpus.manifest()
        if e.cls == "valid" and ("JPEG Baseline" in e.reason or "JPEG Extended" in e.reason)
    ]


@pytest.mark.skipif(
    not _jpeg_colour_entries(),
    reason=f"the real-file corpus is not at {corpus.corpus_dir()} (../shared/corpus)",
)
def test_every_jpeg_baseline_file_of_the_corpus_decodes_to_pydicoms_pixels() -> None:
    fast = 0
    for entry in _jpeg_colour_entries():
        ds = pydicom.dcmread(entry.path)
        shape = dicom.geometry(ds)
        try:
            expected = pydicom.pixels.pixel_array(ds)
        except Exception:  # Not pydicom's to decode frame by frame: not this path either.
            continue
        if shape.frames == 1:
            expected = expected[np.newaxis]
        for index in range(shape.frames):
            frame = dicom._jpeg_ybr_frame(ds, index, shape)
            if frame is not None:
                fast += 1
                np.testing.assert_array_equal(frame, expected[index], err_msg=entry.name)
            np.testing.assert_array_equal(
                dicom.decode_frame(ds, index), expected[index], err_msg=entry.name
            )
    assert fast > 0
