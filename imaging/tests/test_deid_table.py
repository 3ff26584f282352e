"""The generator of Table E.1-1 (issue 13 item 9): how the 2026c rows and the 2020 option
columns are put together, on small inputs of the sources' own shapes."""

from __future__ import annotations

import ast
import json
from typing import Any

from engine.dicom import deid
from engine.dicom.deid_table import generate

OLD_ROWS = [
    {"tag": "(0010,0010)", "name": "Patient's Name", "stdCompIOD": "Y", "basicProfile": "Z"},
    {
        "tag": "(0008,0020)",
        "name": "Study Date",
        "stdCompIOD": "Y",
        "basicProfile": "Z",
        "rtnLongFullDatesOpt": "K",
        "rtnLongModifDatesOpt": "C",
    },
    {
        "tag": "(0010,0020)",
        "name": "Patient ID",
        "stdCompIOD": "Y",
        "basicProfile": "Z",
        "cleanDescOpt": None,
    },
    {
        "tag": "(GGGG,EEEE) where gggg is odd",
        "name": "Private attributes",
        "stdCompIOD": "N",
        "basicProfile": "X",
        "rtnSafePrivOpt": "C",
    },
]
NEW_LIST = """
D_TAGS = [
    (0x0040, 0xB034),  # Annotation DateTime
]
Z_TAGS = [
    (0x0010, 0x0010),  # Patient's Name
    (0x0008, 0x0020),  # Study Date
]
X_TAGS = [
    (0x0010, 0x0012),  # Name to Use
    (0x6000, 0x3000, 0xFF00, 0xFFFF),  # Overlay Data
]
U_TAGS = [
    (
        0x0040,
        0x4023,
    ),  # Referenced General Purpose Scheduled Procedure Step Transaction UID
]
Z_D_TAGS = [
    (0x0010, 0x0020),  # Patient ID
]
ALL_TAGS = []
"""


def table() -> dict[str, Any]:
    old, merged = generate.convert_2020(OLD_ROWS)
    return generate.convert(generate.parse_basic_lists(NEW_LIST), old, merged)


def test_it_reads_every_list_without_running_it() -> None:
    basic = generate.parse_basic_lists(NEW_LIST)
    assert basic["00100020"] == ("Z/D", "Patient ID")
    assert basic["60xx3000"] == ("X", "Overlay Data")
    assert basic["00404023"][1].startswith("Referenced General Purpose")  # a wrapped tuple
    ast.parse(NEW_LIST)  # the input is a list file, never imported


def test_old_rows_keep_their_2020_option_columns_and_take_the_new_basic_action() -> None:
    rows = {r["tag"]: r for r in table()["attributes"]}
    assert rows["00080020"]["basic"] == "Z"
    assert rows["00080020"]["retain_long_modified_dates"] == "C"
    assert rows["00080020"]["options_from"] == "2020"
    assert rows["00100020"]["basic"] == "Z/D"
    assert table()["basic_changed_since_2020"] == [
        {"tag": "00100020", "name": "Patient ID", "2020": "Z"}
    ]


def test_new_rows_get_the_date_and_uid_options_and_nothing_else() -> None:
    rows = {r["tag"]: r for r in table()["attributes"]}
    annotation = rows["0040B034"]  # a DateTime that pydicom's dictionary may not know
    assert annotation["retain_long_modified_dates"] == "C"
    assert annotation["retain_long_full_dates"] == "K"
    assert annotation["options_from"] == "inferred"
    assert rows["00404023"]["retain_uids"] == "K"
    name_to_use = rows["00100012"]
    assert name_to_use["options_from"] == "none"
    assert [c for c in generate.COLUMNS.values() if name_to_use[c]] == ["basic"]
    # Under every option the basic action applies: never looser than the standard.
    rule = deid.Rule(name_to_use["name"], {c: name_to_use[c] for c in generate.COLUMNS.values()})
    assert deid.resolve(rule, tuple(deid.OPTION_CODES)) == "X"


def test_the_private_row_comes_from_the_2020_table() -> None:
    data = table()
    rows = {r["tag"]: r for r in data["attributes"]}
    assert rows["odd-group"]["basic"] == "X" and rows["odd-group"]["retain_safe_private"] == "C"
    assert data["rows_added_since_2020"] == 4  # Annotation DateTime, Name to Use, 60xx, UID
    json.dumps(data)  # the committed file is this, rendered


def test_the_committed_table_is_what_the_generator_writes_from_its_parts() -> None:
    committed = json.loads(deid.TABLE_PATH.read_text())
    previous = json.loads(deid.TABLE_PATH.with_name("table_e1_1_2020.json").read_text())
    old = {r["tag"]: r for r in previous["attributes"]}
    for row in committed["attributes"]:
        if row["options_from"] == "2020":
            options = {c: row[c] for c in generate.COLUMNS.values() if c != "basic"}
            assert options == {c: old[row["tag"]][c] for c in options}, row["tag"]
    assert committed["source"]["basic"]["sha256"] == generate.BASIC_SHA256
    assert committed["source"]["options"]["sha256"] == generate.OPTIONS_SHA256
