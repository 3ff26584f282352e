"""Display rendering (engine.pixels.rendering) on real pydicom-data files: modality LUT and
Hounsfield units, windows and presets, VOI LUT, MONOCHROME1, palette, YBR, multi-frame,
overlay planes."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi
from pydicom.sequence import Sequence

from engine.dicom import io as dicom
from engine.errors import EngineError
from engine.pixels import rendering
from imaging.tests.fixtures import samples


def _load(name: str) -> tuple[pydicom.Dataset, np.ndarray]:
    ds = dicom.read_dataset(samples.dicom_bytes(name))
    return ds, dicom.decode_pixels(ds)


def _linear(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 onto 0..255, written out by hand."""
    scaled = ((values - (centre - 0.5)) / (width - 1) + 0.5) * 255
    below = values <= centre - 0.5 - (width - 1) / 2
    above = values > centre - 0.5 + (width - 1) / 2
    out = np.where(below, 0, np.where(above, 255, np.rint(scaled)))
    return np.clip(out, 0, 255).astype(np.uint8)


# --- Moved from test_dicom: the default rendering ----------------------------------------


def test_it_windows_with_the_files_own_window():
    # MR_small: WindowCenter 600, WindowWidth 1600, no rescale.
    ds, pixels = _load("MR_small.dcm")
    rendered = rendering.render_frame_uint8(ds, pixels[0])
    assert rendered.shape == (64, 64, 3) and rendered.dtype == np.uint8
    assert np.array_equal(rendered[..., 0], rendered[..., 2])
    values = pixels[0].astype(float)
    expected = np.clip(np.rint(((values - 599.5) / 1599 + 0.5) * 255), 0, 255)
    assert np.array_equal(rendered[..., 0], expected.astype(np.uint8))


def test_it_applies_the_rescale_before_stretching_when_there_is_no_window():
    # CT_small: slope 1, intercept -1024, no window: percentile stretch of Hounsfield units.
    ds, pixels = _load("CT_small.dcm")
    hounsfield = rendering.modality_values(ds, pixels[0])
    assert np.array_equal(hounsfield, pixels[0].astype(float) - 1024)
    rendered = rendering.render_frame_uint8(ds, pixels[0])
    assert np.array_equal(rendered[..., 0], rendering.stretch_to_uint8(hounsfield))
    assert rendered.min() == 0 and rendered.max() == 255


def test_it_inverts_monochrome1():
    ds, pixels = _load("MR_small.dcm")
    normal = rendering.render_frame_uint8(ds, pixels[0])
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted = rendering.render_frame_uint8(ds, pixels[0])
    assert np.array_equal(inverted.astype(int), 255 - normal.astype(int))


def test_it_renders_palette_and_rgb_sources():
    ds, pixels = _load("OBXXXX1A.dcm")
    rendered = rendering.render_frames_uint8(ds, pixels)
    assert rendered.shape == (1, 600, 800, 3)
    # A palette image is in colour, not grey, and goes through its own palette.
    assert np.any(rendered[0][..., 0] != rendered[0][..., 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lut = np.asarray(apply_color_lut(pixels[0], ds))
    expected = lut if lut.dtype == np.uint8 else (lut.astype(np.uint32) >> 8).astype(np.uint8)
    assert np.array_equal(rendered[0], expected[..., :3])
    rgb_ds, rgb16 = _load("SC_rgb_16bit_2frame.dcm")
    rendered16 = rendering.render_frames_uint8(rgb_ds, rgb16)
    assert rendered16.shape == (2, 100, 100, 3) and rendered16.dtype == np.uint8
    assert np.array_equal(rendered16, np.rint(rgb16 / 65535 * 255).astype(np.uint8))


def test_it_stretches_constant_images_to_black():
    assert not rendering.stretch_to_uint8(np.full((4, 4), 7.0)).any()


# --- CT: Hounsfield units and presets ------------------------------------------------------


def test_it_renders_ct_presets_from_hounsfield_units():
    ds, pixels = _load("CT_small.dcm")
    hounsfield = rendering.modality_values(ds, pixels[0])
    # Real tissue values: this slice spans air-like to bone-like densities.
    assert hounsfield.min() == 128 - 1024 and hounsfield.max() == 2191 - 1024
    for name, (centre, width) in rendering.PRESETS.items():
        window = rendering.window_choice(ds, window=name)
        assert window is not None and (window.centre, window.width) == (centre, width)
        rendered = rendering.render_frame_uint8(ds, pixels[0], window=window)
        assert np.array_equal(rendered[..., 0], _linear(hounsfield, centre, width)), name
    brain = rendering.render_frame_uint8(
        ds, pixels[0], window=rendering.window_choice(ds, window="brain")
    )
    # Brain window 40/80: at or below 0 HU is black, above 80 HU white.
    assert (brain[..., 0][hounsfield <= 0] == 0).all()
    assert (brain[..., 0][hounsfield > 80] == 255).all()


def test_it_takes_an_explicit_centre_and_width():
    ds, pixels = _load("CT_small.dcm")
    window = rendering.window_choice(ds, centre=100.0, width=500.0)
    rendered = rendering.render_frame_uint8(ds, pixels[0], window=window)
    hounsfield = pixels[0].astype(float) - 1024
    assert np.array_equal(rendered[..., 0], _linear(hounsfield, 100, 500))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("MR_small.dcm", {"window": "brain"}),  # presets are Hounsfield units: CT only
        ("CT_small.dcm", {"window": "file"}),  # CT_small has no window of its own
        ("CT_small.dcm", {"window": "spine"}),
        ("CT_small.dcm", {"centre": 40.0}),
        ("CT_small.dcm", {"centre": 40.0, "width": 0.5}),
        ("CT_small.dcm", {"window": "brain", "centre": 40.0, "width": 80.0}),
        ("US1_UNCR.dcm", {"window": "auto"}),  # colour: no windows
    ],
)
def test_it_refuses_windows_the_image_cannot_take(name, kwargs):
    ds, _pixels = _load(name)
    with pytest.raises(EngineError) as caught:
        rendering.window_choice(ds, **kwargs)
    assert caught.value.code == "invalid_window"


def test_it_lists_the_windows_a_viewer_may_offer():
    ct, _ = _load("CT_small.dcm")
    options = rendering.window_options(ct)
    assert [p["name"] for p in options["presets"]] == [*rendering.PRESETS, "auto"]
    assert options["default"] == "auto"
    mr, _ = _load("MR-SIEMENS-DICOM-WithOverlays.dcm")
    options = rendering.window_options(mr)
    assert [p["name"] for p in options["presets"]] == ["file", "auto"]
    assert [(w["centre"], w["width"]) for w in options["file"]] == [(450.0, 790.0), (200.0, 443.0)]
    colour, _ = _load("US1_UNCR.dcm")
    assert rendering.window_options(colour)["windowable"] is False


# --- LUTs ----------------------------------------------------------------------------------


def test_it_applies_a_modality_lut_sequence():
    ds, pixels = _load("mlut_18.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.asarray(apply_modality_lut(pixels[0], ds), dtype=float)
    values = rendering.modality_values(ds, pixels[0])
    assert np.array_equal(values, expected)
    assert not np.array_equal(values, pixels[0].astype(float))  # the LUT did something


def test_it_applies_the_files_voi_lut_sequence_by_default():
    ds, pixels = _load("vlut_04.dcm")  # an 8-bit image with a 256-entry, 16-bit VOI LUT
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lut_out = np.asarray(apply_voi(pixels[0].astype(np.int64), ds), dtype=float)
    expected = np.clip(np.rint(lut_out / 65535 * 255), 0, 255).astype(np.uint8)
    rendered = rendering.render_frame_uint8(ds, pixels[0])
    assert np.array_equal(rendered[..., 0], expected)
    # Its LUT is a ramp; an inverted ramp must invert the picture, so the LUT is what is used.
    ds.VOILUTSequence[0].LUTData = [65535 - 257 * i for i in range(256)]
    inverted = rendering.render_frame_uint8(ds, pixels[0])
    assert np.array_equal(inverted[..., 0].astype(int), 255 - pixels[0].astype(int))


def test_it_reads_rescale_from_enhanced_functional_groups():
    ds, pixels = _load("CT_small.dcm")
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        del ds[keyword]
    transform = Dataset()
    transform.RescaleSlope = 2
    transform.RescaleIntercept = -1000
    transform.RescaleType = "HU"
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    values = rendering.modality_values(ds, pixels[0])
    assert np.array_equal(values, pixels[0].astype(float) * 2 - 1000)
    # A per-frame window (Frame VOI LUT macro) is the file's own window for that frame.
    voi = Dataset()
    voi.WindowCenter = 300
    voi.WindowWidth = 1000
    per_frame = Dataset()
    per_frame.FrameVOILUTSequence = Sequence([voi])
    ds.PerFrameFunctionalGroupsSequence = Sequence([per_frame])
    rendered = rendering.render_frame_uint8(ds, pixels[0], index=0)
    assert np.array_equal(rendered[..., 0], _linear(values, 300, 1000))
    options = rendering.window_options(ds)
    assert options["default"] == "file" and options["file"][0]["centre"] == 300.0


# --- Photometric interpretations, frames, overlays -----------------------------------------


def test_it_renders_a_real_monochrome1_radiograph_inverted():
    ds, pixels = _load("RG1_UNCR.dcm")  # CR, MONOCHROME1, window 15000/30000
    rendered = rendering.render_frame_uint8(ds, pixels[0])
    windowed = _linear(rendering.modality_values(ds, pixels[0]), 15000, 30000)
    assert np.array_equal(rendered[..., 0].astype(int), 255 - windowed.astype(int))


def test_it_renders_ybr_like_the_same_image_in_rgb():
    ybr_ds, ybr = _load("SC_ybr_full_uncompressed.dcm")
    rgb_ds, rgb = _load("SC_rgb.dcm")
    assert dicom.pixels_photometric(ybr_ds) == "RGB"  # converted on decoding
    rendered_ybr = rendering.render_frame_uint8(ybr_ds, ybr[0])
    rendered_rgb = rendering.render_frame_uint8(rgb_ds, rgb[0])
    # The same picture stored two ways: equal up to the YBR round trip's rounding.
    assert np.abs(rendered_ybr.astype(int) - rendered_rgb.astype(int)).max() <= 6


def test_it_renders_every_frame_of_a_multiframe_file():
    ds, pixels = _load("emri_small.dcm")
    rendered = rendering.render_frames_uint8(ds, pixels)
    assert rendered.shape == (10, 64, 64, 3)
    for index in (0, 9):
        alone = rendering.render_frame_uint8(ds, pixels[index], index=index)
        assert np.array_equal(rendered[index], alone)
    assert not np.array_equal(rendered[0], rendered[9])


def test_it_burns_overlay_planes_into_the_display():
    ds, pixels = _load("MR-SIEMENS-DICOM-WithOverlays.dcm")
    assert rendering.overlay_groups(ds) == [0x6000]
    plane = np.asarray(ds.overlay_array(0x6000)).astype(bool)  # origin (1, 1), same size
    shown = rendering.render_frame_uint8(ds, pixels[0])
    hidden = rendering.render_frame_uint8(ds, pixels[0], overlays=False)
    assert plane.sum() == 323
    assert (shown[plane] == 255).all()
    assert np.array_equal(shown[~plane], hidden[~plane])
    assert (hidden[plane] != 255).any()  # the overlay is not just bright anatomy
