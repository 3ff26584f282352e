"""DICOM PS3.15 de-identification on real files (pydicom-data, deid-data), and its undo."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import pydicom
import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from engine.dicom import deid
from imaging.tests.fixtures.samples import deid_bytes, dicom_bytes

SECRET = b"installation-secret-for-tests-32b"
SHIFT = -137
REAL_FILES = [
    ("pydicom", "CT_small.dcm"),  # GE private groups, patient module
    ("pydicom", "MR_small.dcm"),
    ("pydicom", "US1_UNCR.dcm"),
    ("pydicom", "OBXXXX1A_2frame.dcm"),
    ("pydicom", "rtplan.dcm"),  # nested sequences with UIDs and dates
    ("pydicom", "emri_small_big_endian.dcm"),
    ("pydicom", "JPEG2000.dcm"),
    ("deid", "humans/ctbrain1.dcm"),
    ("deid", "ultrasounds/RGB_IMAGE.dcm"),
    ("deid", "animals/cat.dcm"),
    ("deid", "dicom-cookies/image1.dcm"),
    ("pydicom", "MR-SIEMENS-DICOM-WithOverlays.dcm"),  # overlay data (60xx,3000)
]


# OBXXXX1A has nothing the basic profile removes outright (only Z/U): not a test of X.
X_FILES = [f for f in REAL_FILES if f[1] != "OBXXXX1A_2frame.dcm"]
NO_RULE = deid.Rule("not in the table", {"basic": "K"})


def load(source: str, name: str) -> bytes:
    return dicom_bytes(name) if source == "pydicom" else deid_bytes(name)


def read(data: bytes) -> pydicom.FileDataset:
    return pydicom.dcmread(io.BytesIO(data))


def run(data: bytes, options: tuple[str, ...] = deid.DEFAULT_OPTIONS, **kw: Any) -> Any:
    return deid.deidentify(data, options=options, uid_secret=SECRET, date_shift_days=SHIFT, **kw)


def table() -> dict[str, Any]:
    return json.loads(deid.TABLE_PATH.read_text())


def table_rows() -> dict[int, dict[str, Any]]:
    return {
        int(r["tag"], 16): r
        for r in table()["attributes"]
        if "x" not in r["tag"] and r["tag"] != "odd-group"
    }


def walk(ds: Dataset) -> list[DataElement]:
    """Every element at every depth."""
    found = []
    for element in ds:
        found.append(element)
        if element.VR == "SQ":
            for item in element.value or []:
                found.extend(walk(item))
    return found


def sample_value(vr: str) -> Any:
    """An identifying-looking value for an attribute of this VR."""
    return {
        "PN": "DOE^JANE",
        "DA": "19700101",
        "DT": "19700101123000",
        "TM": "123000",
        "UI": "1.2.826.0.1.3680043.10.543.99",
        "AS": "054Y",
        "DS": "72.5",
        "IS": "12345",
        "US": 7,
        "SS": 7,
        "UL": 7,
        "SL": 7,
        "FL": 1.5,
        "FD": 1.5,
        "OB": b"JANE",
        "OW": b"JANE",
        "UN": b"JANE",
        "AT": 0x00100010,
        "SH": "MRN0012345",
        "CS": "DOE JANE",
        "AE": "DOEJANE",
    }.get(vr, "DOE JANE MRN0012345")


def with_every_table_attribute(data: bytes) -> tuple[bytes, dict[int, str]]:
    """A real file with every Table E.1-1 attribute it lacks added (a value for each VR)."""
    ds = read(data)
    added = {}
    for tag, row in table_rows().items():
        if tag >> 16 in (0x0000, 0x0002) or tag in ds:
            continue
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            continue
        if vr == "SQ":
            item = Dataset()
            item.PatientName = "DOE^JANE"
            value: Any = Sequence([item])
        else:
            value = sample_value(vr)
        ds.add(DataElement(tag, vr, value))
        added[tag] = row["basic"]
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue(), added


# --- the table ------------------------------------------------------------------------------


def test_the_table_is_the_whole_of_table_e1_1_with_its_edition() -> None:
    data = table()
    assert data["edition"].startswith("DICOM PS3.15 2026c")
    assert data["edition_label"] == "DICOM PS3.15 2026c"
    basic, options = data["source"]["basic"], data["source"]["options"]
    assert (basic["package"], basic["version"]) == ("dicom-anonymizer", "2.1.0")
    assert (options["package"], options["version"]) == ("dicom-standard", "0.1.0")
    rows = {r["tag"]: r for r in data["attributes"]}
    assert len(rows) == 656 and data["rows_added_since_2020"] == 224
    assert rows["00100010"]["basic"] == "Z" and rows["00100020"]["basic"] == "Z/D"
    # Rows the 2020 table did not have: Name to Use, and a date with the dates options.
    assert rows["00100012"]["basic"] == "X" and rows["00100012"]["options_from"] == "none"
    assert rows["0040B034"]["retain_long_modified_dates"] == "C"
    assert rows["0040B034"]["options_from"] == "inferred"
    assert rows["00080018"]["basic"] == "U" and rows["00080018"]["retain_uids"] == "K"
    assert rows["00100040"]["retain_patient_characteristics"] == "K"
    assert rows["00080020"]["retain_long_modified_dates"] == "C"
    assert rows["odd-group"]["basic"] == "X"
    assert rows["60xx3000"]["basic"] == "X"
    assert {r["basic"] for r in data["attributes"]} <= set(deid.COMPOSITE) | set("DZXKCU")


# --- removal and replacement ----------------------------------------------------------------


@pytest.mark.parametrize(("source", "name"), X_FILES, ids=[n for _, n in X_FILES])
def test_it_removes_every_x_attribute_a_real_file_has(source: str, name: str) -> None:
    data = load(source, name)
    original = read(data)
    x_tags = {
        e.tag
        for e in walk(original)
        if deid.resolve(deid.rule_for(int(e.tag)) or NO_RULE, ()) == "X"
    }
    out = read(run(data, options=()).data)
    assert x_tags, "the file has no X attribute: it tests nothing"
    # Type 2C for animals: emptied instead of removed (see the module docstring).
    emptied = [e for e in walk(out) if e.tag in x_tags and int(e.tag) in deid.EMPTIED_NOT_REMOVED]
    assert all(e.is_empty for e in emptied)
    assert {e.tag for e in walk(out)} & x_tags == {e.tag for e in emptied}
    assert not [e for e in walk(out) if e.tag.is_private]


def test_every_table_action_on_every_attribute_of_an_augmented_real_file() -> None:
    data, added = with_every_table_attribute(dicom_bytes("CT_small.dcm"))
    assert len(added) > 350
    out = read(run(data, options=()).data)
    pseudonym = deid.patient_pseudonym(read(data).PatientID, SECRET)
    for tag, action in added.items():
        name = keyword_for_tag(tag) or hex(tag)
        resolved = deid.COMPOSITE.get(action, action)
        if resolved == "Z" and "X" in action and dictionary_VR(tag) == "SQ":
            # Type 3 sequences are removed: an empty one fails dciodvfy ("1-n required").
            resolved = "Z" if tag in deid.TYPE2_SEQUENCES else "X"
        if resolved == "X" and tag in deid.EMPTIED_NOT_REMOVED:
            resolved = "Z"
        if resolved == "X":
            assert tag not in out, name
        elif resolved == "Z" and tag not in (deid.PATIENT_NAME, deid.PATIENT_ID):
            assert tag in out and out[tag].is_empty, name
        elif resolved == "D":
            assert tag in out and out[tag].value != sample_value(out[tag].VR), name
        elif resolved == "U":
            assert out[tag].value.startswith("2.25."), name
        elif resolved == "U*":  # a kept sequence: its items are de-identified
            assert out[tag].value[0].PatientName == pseudonym, name
    # Nothing of the identity is left anywhere in the bytes.
    result = run(data, options=())
    for text in (b"DOE^JANE", b"MRN0012345", b"19700101", b"1.2.826.0.1.3680043.10.543.99"):
        assert text not in result.data


def test_patient_name_and_id_become_one_stable_pseudonym() -> None:
    data = deid_bytes("humans/ctbrain1.dcm")
    original = read(data)
    out = read(run(data).data)
    expected = deid.patient_pseudonym(str(original.PatientID), SECRET)
    assert str(out.PatientName) == expected and out.PatientID == expected
    assert str(original.PatientID).encode() not in run(data).data
    assert out.PatientIdentityRemoved == "YES"


def test_one_study_stays_one_study_under_new_uids() -> None:
    first = read(deid_bytes("humans/ctbrain1.dcm"))
    second = read(deid_bytes("humans/ctbrain2.dcm"))
    assert first.StudyInstanceUID == second.StudyInstanceUID
    out1 = read(run(deid_bytes("humans/ctbrain1.dcm")).data)
    out2 = read(run(deid_bytes("humans/ctbrain2.dcm")).data)

    assert out1.StudyInstanceUID == out2.StudyInstanceUID
    assert out1.StudyInstanceUID != first.StudyInstanceUID
    # (the two deid-data files share their SOP Instance UID too: same remapped UID)
    assert out1.SOPInstanceUID == out2.SOPInstanceUID
    assert out1.SOPInstanceUID != first.SOPInstanceUID
    assert out1.file_meta.MediaStorageSOPInstanceUID == out1.SOPInstanceUID
    assert out1.SOPClassUID == first.SOPClassUID  # a standard UID identifies nobody
    for uid in (out1.StudyInstanceUID, out1.SeriesInstanceUID, out1.SOPInstanceUID):
        assert pydicom.uid.UID(uid).is_valid
    # Another installation secret: other UIDs (no dictionary attack across sites).
    other = deid.deidentify(
        deid_bytes("humans/ctbrain1.dcm"),
        options=(),
        uid_secret=b"another-installation-secret-0000",
        date_shift_days=SHIFT,
    )
    assert read(other.data).StudyInstanceUID != out1.StudyInstanceUID


def test_references_in_nested_sequences_follow_the_remapped_uids() -> None:
    out = read(run(dicom_bytes("rtplan.dcm")).data)
    original = read(dicom_bytes("rtplan.dcm"))
    before = [e.value for e in walk(original) if e.VR == "UI" and e.keyword.endswith("InstanceUID")]
    after = [e.value for e in walk(out) if e.VR == "UI" and e.keyword.endswith("InstanceUID")]
    assert before and len(before) == len(after)
    assert after == [deid.remap_uid(u, SECRET) for u in before]


def test_dates_move_by_the_one_patient_shift_and_intervals_stay() -> None:
    data = dicom_bytes("CT_small.dcm")
    original, out = read(data), read(run(data).data)
    moved = 0
    for element in original:
        if element.VR != "DA" or not element.value:
            continue
        before = dt.datetime.strptime(element.value, "%Y%m%d").date()
        after = dt.datetime.strptime(out[element.tag].value, "%Y%m%d").date()
        assert (after - before).days == SHIFT, element.keyword
        moved += 1
    assert moved >= 4  # study, series, acquisition, content, instance creation
    assert out.StudyTime == original.StudyTime  # whole days: the time of day is kept
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_without_the_dates_option_dates_are_not_kept() -> None:
    data = dicom_bytes("CT_small.dcm")
    original, out = read(data), read(run(data, options=()).data)
    assert out.StudyDate == "" and out.AcquisitionDate == ""  # Z, and X/Z resolved to Z
    assert out.InstanceCreationDate != original.InstanceCreationDate  # not in the table
    assert out.LongitudinalTemporalInformationModified == "REMOVED"


def test_patient_characteristics_and_device_identity_are_settings() -> None:
    data = dicom_bytes("CT_small.dcm")
    original = read(data)
    plain = read(run(data).data)
    kept = read(
        run(
            data,
            options=deid.DEFAULT_OPTIONS
            + ("retain_patient_characteristics", "retain_device_identity"),
        ).data
    )
    assert plain.PatientSex == "" and "PatientAge" not in plain  # Z and X
    assert kept.PatientSex == original.PatientSex and kept.PatientAge == original.PatientAge
    assert plain.StationName == "" and kept.StationName == original.StationName
    codes = [item.CodeValue for item in kept.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107", "113101", "113105", "113108", "113109"]
    assert kept.DeidentificationMethod[0] == "DICOM PS3.15 2026c Basic Profile"
    assert len(kept.DeidentificationMethod) == 6
    assert all(
        item.CodingSchemeDesignator == "DCM" for item in kept.DeidentificationMethodCodeSequence
    )


def test_burned_in_annotation_says_no_only_after_the_pixel_pass() -> None:
    data = dicom_bytes("US1_UNCR.dcm")
    without = read(run(data, options=("clean_descriptors",)).data)
    assert without.get("BurnedInAnnotation") == read(data).get("BurnedInAnnotation")
    assert read(run(data, options=("clean_pixel_data",)).data).BurnedInAnnotation == "NO"


def test_clean_descriptors_keeps_the_description_without_the_identity() -> None:
    ds = read(dicom_bytes("CT_small.dcm"))
    ds.PatientName = "Kowalski^Anna"
    ds.StudyDescription = "CT head Kowalski 2004-01-19 follow-up"
    out = io.BytesIO()
    ds.save_as(out)
    result = read(run(out.getvalue()).data)
    assert result.StudyDescription == "CT head follow-up"
    assert "StudyDescription" not in read(run(out.getvalue(), options=()).data)


def test_private_tags_go_unless_safe_listed() -> None:
    data = dicom_bytes("CT_small.dcm")
    original = read(data)
    private = [e for e in original if e.tag.is_private and e.tag.element >= 0x1000]
    assert private
    keep = private[0]
    creator = original[(keep.tag.group << 16) | (keep.tag.element >> 8)].value
    result = run(data, safe_private=[(creator, keep.tag.group, keep.tag.element & 0xFF)])
    out = read(result.data)
    assert [e.tag for e in out if e.tag.is_private] == [
        (keep.tag.group << 16) | (keep.tag.element >> 8),
        keep.tag,
    ]
    assert out[keep.tag].value == keep.value
    assert "retain_safe_private" in result.options
    assert not [e for e in read(run(data).data) if e.tag.is_private]


def test_the_removed_values_name_the_patient_for_a_doctor() -> None:
    data = dicom_bytes("CT_small.dcm")
    result = run(data)
    json.dumps(result.removed_values)  # the caller serialises and encrypts it as is
    shown = {keyword: display for _, keyword, display in deid.iter_paths(result.removed_values)}
    assert shown["PatientName"] == str(read(data).PatientName)
    assert shown["PatientID"] == read(data).PatientID
    assert result.actions_applied["00100010"] == "Z"
    assert result.actions_applied["00080018"] == "U"


# --- re-identification ----------------------------------------------------------------------


@pytest.mark.parametrize(("source", "name"), REAL_FILES, ids=[n for _, n in REAL_FILES])
def test_reidentify_gives_back_the_original_file_exactly(source: str, name: str) -> None:
    data = load(source, name)
    options = deid.DEFAULT_OPTIONS + ("retain_patient_characteristics",)
    result = run(data, options=options)
    assert result.data != data

    restored = deid.reidentify(result.data, result.removed_values)
    assert restored == data
    assert read(restored) == read(data)


def test_reidentify_restores_a_file_with_every_table_attribute() -> None:
    data, _ = with_every_table_attribute(dicom_bytes("MR_small.dcm"))
    result = run(data, options=())
    assert deid.reidentify(result.data, result.removed_values) == data


def test_it_refuses_unknown_options_short_secrets_and_non_dicom() -> None:
    data = dicom_bytes("CT_small.dcm")
    with pytest.raises(deid.DeidError, match="unknown"):
        run(data, options=("retain_everything",))
    with pytest.raises(deid.DeidError, match="secret"):
        deid.deidentify(data, options=(), uid_secret=b"short", date_shift_days=SHIFT)
    with pytest.raises(deid.DeidError):
        run(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200)


def test_the_per_patient_helpers_are_stable_and_never_zero() -> None:
    shifts = {deid.patient_date_shift(f"MRN-{i}", SECRET) for i in range(200)}
    assert all(-3650 <= s <= -1 for s in shifts) and len(shifts) > 150
    assert deid.patient_date_shift("MRN-1", SECRET) == deid.patient_date_shift("MRN-1", SECRET)
    assert deid.remap_uid("1.2.3", SECRET) == deid.remap_uid("1.2.3", SECRET)
    assert len(deid.remap_uid("1.2.3", SECRET)) <= 64
