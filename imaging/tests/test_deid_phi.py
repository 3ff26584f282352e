"""PHI in free text of "de-identified" DICOM (issue 21 item 6) and what DICOM outputs say
about their pixels (issue 13 item 5): real files from pydicom-data with the issue's values."""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from engine.dicom import deid, deid_text
from engine.dicom import io as dicom
from imaging.tests.deid_checks import dciodvfy_available, dciodvfy_errors
from imaging.tests.fixtures.samples import deid_bytes, dicom_bytes
from imaging.vault import identity

SECRET = b"installation-secret-for-tests-32b"
SHIFT = -137

# The header of the patient, and the free text that repeated it.
HEADER = {
    "PatientName": "Li^Na",
    "PatientID": "4711233",
    "AccessionNumber": "55123",
    "PatientTelephoneNumbers": "555-867-5309",
    "PatientBirthDate": "19650412",
    "OtherPatientIDs": "HOSP-0099812",
}
FREE_TEXT = {
    "StudyDescription": "CT head f/u Li Na MRN 4711233 acc 55123 tel 555-867-5309",
    "ImageComments": "Patient born 12 Apr 1965, DOB confirmed April 12, 1965 (12/04/1965)",
    "ProtocolName": "HEAD NA LI 1965-04-12",
    "RequestedProcedureDescription": "CT head for NA, LI MRN 4711-233 dob 12.04.1965",
    "SeriesDescription": "Ax 5mm Li Na",
}
# The full name in a code sequence that no table row removes (kept and walked).
CODE_MEANING = "CT head of Na Li"
# Every way the values above may survive, case- and separator-insensitively.
DIGITS = ("4711233", "55123", "5558675309", "19650412", "12041965", "04121965", "0099812")


def read(data: bytes) -> pydicom.FileDataset:
    return pydicom.dcmread(io.BytesIO(data))


def source(**extra: Any) -> bytes:
    ds = read(dicom_bytes("CT_small.dcm"))
    for keyword, value in {**HEADER, **FREE_TEXT, **extra}.items():
        setattr(ds, keyword, value)
    code = Dataset()
    code.CodeValue = "CTHEAD"
    code.CodingSchemeDesignator = "99LOCAL"
    code.CodeMeaning = CODE_MEANING
    ds.ProcedureCodeSequence = Sequence([code])
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def run(data: bytes, options: tuple[str, ...], **kw: Any) -> deid.DeidResult:
    return deid.deidentify(data, options=options, uid_secret=SECRET, date_shift_days=SHIFT, **kw)


def texts(ds: Dataset) -> list[tuple[str, str]]:
    """(keyword, value) of every text element at every depth."""
    found = []
    for element in ds:
        if element.VR == "SQ":
            for item in element.value or []:
                found.extend(texts(item))
        elif element.VR in deid.SCRUB_VRS and element.value not in (None, ""):
            values = element.value if isinstance(element.value, list | tuple) else [element.value]
            if isinstance(element.value, pydicom.multival.MultiValue):
                values = list(element.value)
            found.extend((element.keyword, str(v)) for v in values)
    return found


def surviving(ds: Dataset) -> list[tuple[str, str]]:
    """Text elements that still hold a piece of the patient's identity."""
    left = []
    for keyword, value in texts(ds):
        plain = deid_text.normalise(value)
        words = {w.casefold() for w in re.findall(r"[^\W\d_]+", value)}
        if (
            any(d in plain for d in DIGITS)
            or {"li", "na"} <= words
            or "1965" in value
            or re.search(r"\bapr", value, re.IGNORECASE)
        ):
            left.append((keyword, value))
    return left


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(deid.DEFAULT_OPTIONS, id="clean-descriptors"),
        pytest.param(
            tuple(o for o in deid.DEFAULT_OPTIONS if o != "clean_descriptors"), id="remove"
        ),
        pytest.param((), id="basic-only"),
    ],
)
def test_it_leaves_none_of_the_patients_values_in_any_text_element(
    options: tuple[str, ...],
) -> None:
    data = source()
    before = surviving(read(data))
    assert {k for k, _ in before} >= {*FREE_TEXT, "CodeMeaning"}  # the test sees them
    out = read(run(data, options).data)
    assert surviving(out) == []
    assert out.PatientIdentityRemoved == "YES"


def test_clean_descriptors_keeps_what_the_descriptors_say_without_the_patient() -> None:
    out = read(run(source(), deid.DEFAULT_OPTIONS).data)
    assert out.StudyDescription == "CT head f/u MRN acc tel"
    assert out.ImageComments == "Patient born DOB confirmed"
    assert out.ProtocolName == "HEAD"
    assert out.RequestedProcedureDescription == "CT head for MRN dob"
    assert out.SeriesDescription == "Ax 5mm"
    assert out.ProcedureCodeSequence[0].CodeMeaning == "CT head of"
    assert out.ProcedureCodeSequence[0].CodeValue == "CTHEAD"  # codes are not free text


def test_it_replaces_a_descriptor_it_cannot_clean_with_certainty() -> None:
    # A telephone number, a date and a record number that the header does not hold.
    data = source(
        StudyDescription="CT head, call 555-123-4567",
        ImageComments="seen 3 March 2019",
        SeriesDescription="MRN 99887766",
    )
    out = read(run(data, deid.DEFAULT_OPTIONS).data)
    assert out.StudyDescription == deid_text.PLACEHOLDER
    assert out.ImageComments == deid_text.PLACEHOLDER
    assert out.SeriesDescription == deid_text.PLACEHOLDER


def test_it_cuts_the_patients_values_from_text_no_table_row_names() -> None:
    # Kept attributes: the name in a code meaning, the record number in a device label.
    data = source(ImageType=["ORIGINAL", "PRIMARY", "AXIAL"])
    out = read(run(data, ()).data)
    assert out.ProcedureCodeSequence[0].CodeMeaning == "CT head of"
    assert list(out.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert out.Modality == "CT" and out.Manufacturer == read(data).Manufacturer


def test_the_cleaned_text_is_restored_exactly_for_a_doctor() -> None:
    data = source()
    result = run(data, deid.DEFAULT_OPTIONS)
    assert deid.reidentify(result.data, result.removed_values) == data
    assert result.actions_applied["00081032[0].00080104"] == "C"  # CodeMeaning, recorded


def test_by_default_descriptors_are_removed_not_cleaned(settings: Any) -> None:
    settings.DEID_DESCRIPTORS = "remove"
    assert "clean_descriptors" not in identity.deid_options(pixels_clean=True)
    settings.DEID_DESCRIPTORS = "clean"
    assert "clean_descriptors" in identity.deid_options(pixels_clean=True)


def test_the_default_setting_is_the_conservative_one() -> None:
    from django.conf import settings as django_settings

    assert django_settings.DEID_DESCRIPTORS == "remove"


def test_it_finds_dates_in_the_forms_people_write_them() -> None:
    found = deid_text.build_identity(person_names=(), removed_texts=(), dates=["19650412"])
    for written in (
        "19650412",
        "1965-04-12",
        "12/04/1965",
        "04/12/1965",
        "12.04.1965",
        "12.4.1965",
        "12 Apr 1965",
        "12th of April 1965",
        "April 12, 1965",
        "Apr. 12 1965",
        "1965 Apr 12",
        "12-APR-65",
    ):
        assert deid_text.scrub_identity(f"dob {written} ok", found) == "dob ok", written
    # Not a date of this patient, and not cut out of a longer number.
    assert deid_text.scrub_identity("ref 119650412", found) == "ref 119650412"


def test_two_letter_name_parts_go_only_next_to_another_part() -> None:
    found = deid_text.build_identity(person_names=["Li^Na"], removed_texts=(), dates=())
    assert deid_text.scrub_identity("Na+ and K+ levels", found) == "Na+ and K+ levels"
    assert deid_text.scrub_identity("for LI, NA today", found) == "for today"
    assert deid_text.scrub_identity("LiNa", found) == ""


# --- Burned In Annotation, 113101 and the written syntax (issue 13 item 5) ------------------


def test_a_flagged_scan_says_yes_even_where_the_file_said_no() -> None:
    ds = read(dicom_bytes("US1_UNCR.dcm"))
    ds.BurnedInAnnotation = "NO"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    data = buffer.getvalue()
    pixels = dicom.decode_pixels(dicom.read_dataset(data))
    flagged = identity.dicom_deidentify(data, pixels, pixels_clean=False, regions=2)
    out = read(flagged.data)
    assert out.BurnedInAnnotation == "YES"
    assert "113101" not in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    assert flagged.report["pixels"]["burned_in_annotation"] == "YES"
    cleared = read(identity.dicom_deidentify(data, pixels, pixels_clean=True, regions=2).data)
    assert cleared.BurnedInAnnotation == "NO"
    assert "113101" in [i.CodeValue for i in cleared.DeidentificationMethodCodeSequence]
    assert "Clean Pixel Data Option" in list(cleared.DeidentificationMethod)


@pytest.mark.parametrize(
    ("setting", "uid"),
    [
        ("uncompressed", "1.2.840.10008.1.2.1"),
        ("rle", "1.2.840.10008.1.2.5"),
        ("jpeg-ls", "1.2.840.10008.1.2.4.80"),
        ("jpeg2000", "1.2.840.10008.1.2.4.90"),
    ],
)
def test_outputs_are_written_uncompressed_or_lossless_as_the_setting_says(
    settings: Any, setting: str, uid: str
) -> None:
    settings.DICOM_OUTPUT_SYNTAX = setting
    data = dicom_bytes("SC_rgb_jpeg_dcmtk.dcm")  # a lossy (JPEG baseline) source
    pixels = dicom.decode_pixels(dicom.read_dataset(data))
    pixels[:, :10, :10] = 0  # a redacted corner
    outcome = identity.dicom_deidentify(data, pixels, pixels_clean=True, regions=1)
    out = read(outcome.data)
    assert out.file_meta.TransferSyntaxUID == uid
    # Exactly the redacted pixels: nothing lost on the way out.
    assert np.array_equal(dicom.decode_pixels(dicom.read_dataset(outcome.data)), pixels)
    # Lossy once, lossy for ever (PS3.3 C.7.6.1.1.5).
    assert out.LossyImageCompression == "01"
    assert "ISO_10918_1" in list(np.atleast_1d(out.LossyImageCompressionMethod))


def test_a_lossy_source_that_did_not_say_so_is_marked_lossy() -> None:
    ds = read(dicom_bytes("SC_rgb_jpeg_dcmtk.dcm"))
    for keyword in ("LossyImageCompression", "LossyImageCompressionMethod"):
        if keyword in ds:
            del ds[keyword]
    buffer = io.BytesIO()
    ds.save_as(buffer)
    data = buffer.getvalue()
    pixels = dicom.decode_pixels(dicom.read_dataset(data))
    out = read(dicom.write_redacted_dataset(data, pixels))
    assert out.LossyImageCompression == "01"
    assert out.LossyImageCompressionMethod == "ISO_10918_1"
    lossless = read(dicom.write_redacted_dataset(dicom_bytes("CT_small.dcm"), _px("CT_small.dcm")))
    assert lossless.get("LossyImageCompression") in (None, "", "00")


def _px(name: str) -> np.ndarray:
    return dicom.decode_pixels(dicom.read_dataset(dicom_bytes(name)))


def test_it_refuses_an_unknown_output_syntax() -> None:
    with pytest.raises(ValueError, match="output syntax"):
        dicom.write_redacted_dataset(
            dicom_bytes("CT_small.dcm"), _px("CT_small.dcm"), syntax="jpeg"
        )


def test_a_code_meaning_that_repeats_the_removed_study_description_stays() -> None:
    # deid-data's CT brain: Procedure Code Sequence's CodeMeaning (Type 1) is the Study
    # Description. Removing the description must not take the code's meaning with it.
    data = deid_bytes("humans/ctbrain1.dcm")
    out = read(run(data, ("retain_long_modified_dates", "clean_pixel_data")).data)
    assert "StudyDescription" not in out
    assert out.ProcedureCodeSequence[0].CodeMeaning == "CT BRAIN WO IVCON"
    assert out.RequestedProcedureCodeSequence[0].CodeMeaning == "CT BRAIN WO IVCON"


@pytest.mark.skipif(not dciodvfy_available(), reason="dciodvfy (Debian dicom3tools) missing")
@pytest.mark.parametrize("setting", ["uncompressed", "rle", "jpeg-ls", "jpeg2000"])
@pytest.mark.parametrize("name", ["US1_UNCR.dcm", "SC_rgb_jpeg_dcmtk.dcm", "CT_small.dcm"])
def test_every_output_syntax_adds_no_dciodvfy_error(settings: Any, setting: str, name: str) -> None:
    # Colour JPEG 2000 is written YBR_RCT: the US modules allow nothing else with it.
    settings.DICOM_OUTPUT_SYNTAX = setting
    data = dicom_bytes(name)
    outcome = identity.dicom_deidentify(data, _px(name), pixels_clean=True, regions=0)
    assert dciodvfy_errors(outcome.data) - dciodvfy_errors(data) == set()
    assert np.array_equal(dicom.decode_pixels(dicom.read_dataset(outcome.data)), _px(name))


def test_it_finds_a_name_written_in_the_files_own_character_set() -> None:
    ds = read(source())
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Jürgen"
    code = Dataset()
    code.CodeValue = "CTHEAD"
    code.CodingSchemeDesignator = "99LOCAL"
    code.CodeMeaning = "Kopf MÜLLER Jürgen"
    ds.ProcedureCodeSequence = Sequence([code])  # encoded with the new character set
    buffer = io.BytesIO()
    ds.save_as(buffer)
    out = read(run(buffer.getvalue(), ()).data)
    assert out.ProcedureCodeSequence[0].CodeMeaning == "Kopf"


def test_it_finds_a_name_in_a_script_written_without_spaces() -> None:
    ds = read(source())
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Li^Na=李^娜=リ^ナ"
    code = Dataset()
    code.CodeValue = "CTHEAD"
    code.CodingSchemeDesignator = "99LOCAL"
    code.CodeMeaning = "头部CT李娜复查"
    ds.ProcedureCodeSequence = Sequence([code])  # encoded with the new character set
    buffer = io.BytesIO()
    ds.save_as(buffer)
    out = read(run(buffer.getvalue(), ()).data)
    assert out.ProcedureCodeSequence[0].CodeMeaning == "头部CT复查"


def test_an_uploaded_file_leaves_none_of_the_patients_values_in_its_export(
    api: Any, doctor: Any, upload: Any, bright_detector: None, settings: Any
) -> None:
    # Through the app with its defaults (DEID_DESCRIPTORS=remove), then with clean.
    for mode in ("remove", "clean"):
        settings.DEID_DESCRIPTORS = mode
        response = upload(("ct.dcm", source()))
        assert response.status_code == 201, response.content
        scan_id = response.json()[0]["id"]
        api.force_authenticate(doctor)
        exported = api.get(f"/api/images/{scan_id}/export/?format=dicom")
        assert exported.status_code == 200, exported.content
        out = read(bytes(exported.content))
        assert surviving(out) == [], mode
        codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
        assert ("113105" in codes) == (mode == "clean")


def test_codes_and_measurements_are_not_taken_for_the_patient() -> None:
    # pydicom's test-SR: the patient is "Test^..." and a coding scheme is "TEST"; a
    # Derivation Description gives a compression ratio of 0.084906.
    data = source(PatientName="Test^Na", DerivationDescription="JPEG, ratio 0.084906")
    ds = read(data)
    ds.ProcedureCodeSequence[0].CodingSchemeDesignator = "TEST"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "TEST"]
    buffer = io.BytesIO()
    ds.save_as(buffer)
    out = read(run(buffer.getvalue(), deid.DEFAULT_OPTIONS).data)
    assert out.ProcedureCodeSequence[0].CodingSchemeDesignator == "TEST"
    assert list(out.ImageType) == ["ORIGINAL", "PRIMARY", "TEST"]
    assert out.DerivationDescription == "JPEG, ratio 0.084906"
    assert deid_text.looks_identifying("tel 555.867.5309")
