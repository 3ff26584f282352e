"""QC statistics, robust outliers and K-means clusters (engine.pixels.qc) on hand-checkable arrays
and a real CT."""

from __future__ import annotations

import numpy as np
import pytest

from engine.dicom import io as dicom
from engine.pixels import qc
from imaging.tests.fixtures import samples


def _two_level_image() -> np.ndarray:
    # 8 background pixels alternating 0/2 (mean 1, std 1) and 8 foreground pixels of 101.
    frame = np.array([[0, 2, 0, 2], [2, 0, 2, 0], [101] * 4, [101] * 4], dtype=np.uint8)
    return frame[np.newaxis]


def test_it_computes_percentiles_and_snr_by_hand():
    stats = qc.scan_statistics(_two_level_image())
    # Sorted: 0 x4, 2 x4, 101 x8. The median falls between 2 and 101.
    assert stats["p50"] == pytest.approx(51.5)
    assert stats["mean"] == pytest.approx(51.0)
    assert stats["min"] == 0 and stats["max"] == 101
    assert stats["p1"] == pytest.approx(0.0)
    assert stats["p99"] == pytest.approx(101.0)
    # (mean foreground - mean background) / std background = (101 - 1) / 1.
    assert stats["snr"] == pytest.approx(100.0)
    assert (stats["frames"], stats["rows"], stats["columns"], stats["channels"]) == (1, 4, 4, 1)
    assert stats["spacing_mm"] is None and stats["scanner"] == "" and stats["modality"] == ""


def test_it_has_no_snr_without_noise_or_contrast():
    assert qc.snr_estimate(np.full(16, 7.0)) is None
    noiseless = np.array([0.0] * 8 + [50.0] * 8)
    assert qc.snr_estimate(noiseless) is None


def test_it_reads_hounsfield_units_spacing_and_scanner_from_a_real_ct():
    ds = dicom.read_dataset(samples.dicom_bytes("CT_small.dcm"))
    pixels = dicom.decode_pixels(ds)
    stats = qc.scan_statistics(pixels, ds=ds)
    hounsfield = pixels.astype(float) - 1024
    assert stats["intensity"] == "modality"
    assert stats["p50"] == pytest.approx(float(np.percentile(hounsfield, 50)), abs=1e-4)
    assert stats["min"] == hounsfield.min() and stats["max"] == hounsfield.max()
    assert stats["modality"] == "CT"
    assert stats["scanner"] == "GE MEDICAL SYSTEMS RHAPSODE"
    assert stats["spacing_mm"] == pytest.approx([0.661468, 0.661468])
    assert stats["slice_thickness_mm"] == pytest.approx(5.0)
    assert stats["snr"] is not None and stats["snr"] > 0


def test_it_uses_luminance_for_colour():
    rgb = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    rgb[0, 0, 0] = (255, 0, 0)
    stats = qc.scan_statistics(rgb)
    assert stats["intensity"] == "luminance"
    assert stats["max"] == pytest.approx(0.299 * 255)


def test_it_computes_modified_z_scores():
    z = qc.robust_z([1, 2, 3, 4, 100])
    # median 3, MAD = median(2, 1, 0, 1, 97) = 1.
    assert z[4] == pytest.approx(0.6745 * 97)
    assert z[0] == pytest.approx(-0.6745 * 2)
    # MAD 0: the mean absolute deviation (4 / 5) stands in, scaled by 1.2533.
    assert qc.robust_z([5, 5, 5, 5, 9])[4] == pytest.approx(4 / (1.2533 * 0.8))
    assert not qc.robust_z([3, 3, 3]).any()


def _row(scan_id: int, p50: float, *, modality: str = "CT", scanner: str = "GE A") -> dict:
    return {"id": scan_id, "modality": modality, "scanner": scanner, "qc": {"p50": p50}}


def test_it_flags_outliers_within_their_scanner_and_modality():
    rows = [_row(i, v) for i, v in enumerate([10, 11, 12, 10, 11, 50], start=1)]
    # The same values on another scanner are that scanner's normal.
    rows += [_row(i, 50, scanner="Siemens B") for i in range(11, 16)]
    # Too few scans to judge, however odd.
    rows += [_row(21, 10, modality="MR"), _row(22, 9000, modality="MR")]
    found = qc.outliers(rows, metrics=("p50",))
    assert [o["id"] for o in found] == [6]
    flag = found[0]["flags"][0]
    assert flag["metric"] == "p50" and flag["value"] == 50 and flag["median"] == 11
    assert flag["z"] == pytest.approx(0.6745 * 39 / 1, abs=0.01)
    assert found[0]["group_size"] == 6 and found[0]["scanner"] == "GE A"


def test_it_finds_intensity_clusters_and_a_silhouette_score():
    rng = np.random.default_rng(1)
    frame = np.repeat(np.array([0.0, 100.0, 200.0]), 400).reshape(30, 40)
    frame = frame + rng.normal(0, 2, frame.shape)
    mask = np.ones(frame.shape, dtype=bool)
    mask[:5, :5] = False  # a redacted region
    result = qc.kmeans_clusters(frame, k=3, mask=mask, sample=600)
    assert result.centres == pytest.approx([0, 100, 200], abs=1)
    assert result.sizes == [400 - 25, 400, 400]
    assert (result.labels[:5, :5] == -1).all()
    assert set(np.unique(result.labels[10:20])) == {1}
    assert result.silhouette is not None and result.silhouette > 0.9
    assert result.sample_size == 600
    colours = qc.cluster_image(result.labels)
    assert (colours[:5, :5] == qc.OUTSIDE).all() and (colours[-1, -1] == qc.PALETTE[2]).all()
    # One flat image cannot be split: one cluster, no silhouette.
    flat = qc.kmeans_clusters(np.zeros((8, 8)), k=3)
    assert flat.centres == [0.0] and flat.silhouette is None
    with pytest.raises(ValueError):
        qc.kmeans_clusters(frame, k=1)


@pytest.mark.parametrize("max_values", [10**9, 50_000, 7_777])
def test_colour_cine_statistics_read_frame_by_frame_equal_the_whole_array_ones(
    max_values: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    import pydicom

    from bench.cine import cine_dicom
    from engine.crypto.sealed_frames import FileFrames
    from engine.pixels import rendering

    ds = pydicom.dcmread(io.BytesIO(cine_dicom(5, 96, 128)))
    pixels = dicom.decode_pixels(ds)
    monkeypatch.setattr(qc, "MAX_VALUES", max_values)
    # What the statistics were before (the whole cine rendered, then one stride over it).
    display = rendering.render_frames_uint8(ds, pixels, overlays=False)
    flat = qc.luminance(display).reshape(-1)
    if flat.size > max_values:
        flat = flat[:: int(np.ceil(flat.size / max_values))]
    np.testing.assert_array_equal(
        qc.intensity_values(pixels, ds=ds, display=qc._Rendered(ds, pixels)), flat
    )
    whole = qc.scan_statistics(pixels, ds=ds, display=display)
    assert qc.image_statistics(pixels, ds=ds) == whole
    # Read from a raw frames file one frame at a time, as the worker does: the same.
    import tempfile

    with tempfile.TemporaryFile() as handle:
        handle.write(np.ascontiguousarray(pixels).tobytes())
        frames = FileFrames(handle, shape=pixels.shape, dtype=pixels.dtype)
        assert qc.image_statistics(frames, ds=ds) == whole


def test_greyscale_statistics_stride_over_the_frames_as_over_the_whole_array(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 4096, size=(7, 33, 41)).astype(np.uint16)
    monkeypatch.setattr(qc, "MAX_VALUES", 1000)
    flat = pixels.astype(np.float64).reshape(-1)
    expected = flat[:: int(np.ceil(flat.size / 1000))]
    np.testing.assert_array_equal(qc.intensity_values(pixels), expected)
