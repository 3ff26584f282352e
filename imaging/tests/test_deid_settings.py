"""De-identification settings: the installation secret and the options, checked at start."""

from __future__ import annotations

from typing import Any

import pytest

from imaging.vault import identity
from medimg.tests.test_settings import production_env, run_manage


def test_it_refuses_to_start_production_without_the_deid_secret() -> None:
    env = production_env()
    del env["MEDIMG_DEID_SECRET"]
    result = run_manage(env, "check")
    assert result.returncode != 0
    assert "MEDIMG_DEID_SECRET" in result.stderr


@pytest.mark.parametrize("entry", ["00081030", "0009100", "GEMS:0008:01", "GEMS:0009:1000"])
def test_it_refuses_a_safe_private_entry_that_is_not_private(entry: str) -> None:
    result = run_manage(production_env(DEID_SAFE_PRIVATE=f"00091001,{entry}"), "check")
    assert result.returncode != 0
    assert "DEID_SAFE_PRIVATE" in result.stderr and entry in result.stderr


@pytest.mark.parametrize(
    ("name", "value"), [("DEID_DESCRIPTORS", "keep"), ("DICOM_OUTPUT_SYNTAX", "jpeg-lossy")]
)
def test_it_refuses_an_unknown_descriptors_mode_or_output_syntax(name: str, value: str) -> None:
    result = run_manage(production_env(**{name: value}), "check")
    assert result.returncode != 0
    assert name in result.stderr and value in result.stderr


def test_it_derives_stable_separate_secrets_from_the_installation_secret(settings: Any) -> None:
    settings.MEDIMG_DEID_SECRET = "d4" * 32
    uids, dates = identity.uid_secret(), identity.date_secret()
    assert uids != dates and len(uids) == len(dates) == 32
    assert (identity.uid_secret(), identity.date_secret()) == (uids, dates)
    settings.MEDIMG_DEID_SECRET = "e5" * 32
    assert identity.uid_secret() != uids


def test_it_reads_the_options_and_the_safe_private_list_from_settings(settings: Any) -> None:
    settings.DEID_RETAIN_PATIENT_CHARACTERISTICS = True
    settings.DEID_RETAIN_DEVICE_IDENTITY = False
    settings.DEID_SAFE_PRIVATE = ["00091001", "GEMS_IDEN_01:0009:01"]
    settings.DEID_DESCRIPTORS = "clean"
    assert identity.deid_options(pixels_clean=True) == (
        "retain_long_modified_dates",
        "clean_pixel_data",
        "clean_descriptors",
        "retain_patient_characteristics",
    )
    assert "clean_pixel_data" not in identity.deid_options(pixels_clean=False)
    assert identity.safe_private() == (0x00091001, ("GEMS_IDEN_01", 0x0009, 0x01))
