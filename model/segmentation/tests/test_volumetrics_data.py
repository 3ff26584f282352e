"""The generated atrophy series: the moved tissue is exactly the stated fraction, one-sided
atrophy stays on its side, reslicing keeps the volumes, and the DICOM series carries the
geometry the app measures with."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest

pytest.importorskip("nilearn")

from model.segmentation.volumetrics_data import (  # noqa: E402
    atrophy,
    case_record,
    make_case,
    oriented_template,
)


def test_atrophy_moves_exactly_the_stated_fraction_into_csf() -> None:
    probabilities, _ = oriented_template()
    before = probabilities.sum(axis=(1, 2, 3))
    after = atrophy(probabilities, 0.25, "both").sum(axis=(1, 2, 3))
    assert after[2] == pytest.approx(0.75 * before[2], rel=1e-4)
    assert after[3] == pytest.approx(0.75 * before[3], rel=1e-4)
    assert after[1] == pytest.approx(before[1] + 0.25 * (before[2] + before[3]), rel=1e-4)
    assert after[0] == pytest.approx(before[0])  # the intracranial outline stays


def test_one_sided_atrophy_leaves_the_other_hemisphere_alone() -> None:
    probabilities, _ = oriented_template()
    changed = atrophy(probabilities, 0.3, "left")
    middle = (probabilities.shape[3] - 1) / 2
    right = np.arange(probabilities.shape[3]) < middle
    assert np.array_equal(changed[..., right], probabilities[..., right])
    left = ~right & (np.arange(probabilities.shape[3]) > middle)
    gm_left = probabilities[2][..., left].sum()
    assert changed[2][..., left].sum() == pytest.approx(0.7 * gm_left, rel=1e-4)


def test_a_resliced_case_keeps_the_volumes_and_writes_scanner_geometry() -> None:
    from engine.dicom.series import SeriesPatient, mr_series

    probabilities, _ = oriented_template()
    whole = {k: float(probabilities[k].sum()) / 1000 for k in (1, 2, 3)}  # 1 mm voxels
    case = make_case(0.0, "both", slice_mm=4, pixel_mm=2, size=128)
    true = case.true_volumes_ml()
    assert true["grey_matter"] == pytest.approx(whole[2], rel=1e-3)
    assert true["white_matter"] == pytest.approx(whole[3], rel=1e-3)
    record = case_record(case)
    halves = record["true_hemispheres_ml"]
    assert halves["left"]["grey_matter"] + halves["right"]["grey_matter"] == pytest.approx(
        true["grey_matter"], rel=1e-3
    )
    files = mr_series(case.image[:3], case.spacing_mm, patient=SeriesPatient(age="033Y", sex="M"))
    headers = [pydicom.dcmread(io.BytesIO(f)) for f in files]
    assert [float(h.ImagePositionPatient[2]) for h in headers] == [0.0, 4.0, 8.0]
    assert [float(v) for v in headers[0].PixelSpacing] == [2.0, 2.0]
    assert headers[0].PatientAge == "033Y" and headers[0].PatientSex == "M"
    assert len({h.SeriesInstanceUID for h in headers}) == 1
    assert np.array_equal(headers[1].pixel_array, case.image[1])
