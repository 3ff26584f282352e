"""Print the counts of Table E.1-1 actions as medimg applies them, as a Markdown table.

    python -m imaging.deid_table.counts

One column per configuration: the Basic Profile alone, medimg's defaults (Basic plus Retain
Longitudinal Temporal Information with Modified Dates and Clean Pixel Data; descriptors
removed, DEID_DESCRIPTORS=remove), the defaults with Clean Descriptors (DEID_DESCRIPTORS=clean)
and the defaults with each other setting-driven option. Then the same counts for the table
medimg used before (`table_e1_1_2020.json`, DICOM PS3.15 2020a/b) against the current one.
Each attribute row is resolved exactly as
`engine.dicom.deid.resolve` resolves it (an applied option's column overrides the basic action,
the stricter of two options wins, composite codes choose as the module docstring says). The
numbers count rows of the table (repeating groups such as 60xx once, the private-attributes
row once), not elements of any file.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from engine.dicom import deid

KINDS = (
    ("X", "removed"),
    ("Z", "emptied (zero length; Patient's Name and ID: the pseudonym)"),
    ("D", "replaced with a dummy value"),
    ("U", "UID replaced (deterministic remapping)"),
    ("C", "cleaned (dates shifted, text scrubbed)"),
    ("U*", "sequence kept, its items de-identified"),
    ("K", "kept"),
)
DEFAULT = tuple(o for o in deid.DEFAULT_OPTIONS if o != "clean_descriptors")
CONFIGURATIONS = (
    ("Basic only", ()),
    ("medimg default", DEFAULT),
    ("DEID_DESCRIPTORS=clean", deid.DEFAULT_OPTIONS),
    ("+ Retain Patient Characteristics", (*DEFAULT, "retain_patient_characteristics")),
    ("+ Retain Device Identity", (*DEFAULT, "retain_device_identity")),
)
# The table medimg used before (DICOM PS3.15 2020a/b), for the comparison.
PREVIOUS_PATH = deid.TABLE_PATH.with_name("table_e1_1_2020.json")
COMPARED = (
    ("Basic only", ()),
    ("medimg default", DEFAULT),
    ("DEID_DESCRIPTORS=clean", deid.DEFAULT_OPTIONS),
)


def counts(options: tuple[str, ...], path: Path = deid.TABLE_PATH) -> Counter[str]:
    table = json.loads(path.read_text())
    found: Counter[str] = Counter()
    for row in table["attributes"]:
        rule = deid.Rule(row["name"], {c: row[c] for c in table["columns"]})
        found[deid.resolve(rule, options)] += 1
    return found


def markdown() -> str:
    table = json.loads(deid.TABLE_PATH.read_text())
    previous = json.loads(PREVIOUS_PATH.read_text())
    columns = [(name, counts(options)) for name, options in CONFIGURATIONS]
    lines = [
        f"Rows of Table E.1-1 ({table['edition_label']}): {len(table['attributes'])}",
        "",
        "| action | " + " | ".join(name for name, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for code, label in KINDS:
        lines.append(f"| {code}: {label} | " + " | ".join(str(c[code]) for _, c in columns) + " |")
    lines.append("| total | " + " | ".join(str(sum(c.values())) for _, c in columns) + " |")
    old, new = previous["edition_label"], table["edition_label"]
    lines += [
        "",
        f"{old} ({len(previous['attributes'])} rows) against {new} "
        f"({len(table['attributes'])} rows), the same configurations:",
        "",
        "| action | "
        + " | ".join(f"{name}: {old} | {name}: {new} | change" for name, _ in COMPARED)
        + " |",
        "|---|" + "---:|---:|---:|" * len(COMPARED),
    ]
    pairs = [(counts(options, PREVIOUS_PATH), counts(options)) for _name, options in COMPARED]
    for code, label in KINDS:
        cells = [f"{a[code]} | {b[code]} | {b[code] - a[code]:+d}" for a, b in pairs]
        lines.append(f"| {code}: {label} | " + " | ".join(cells) + " |")
    cells = [
        f"{sum(a.values())} | {sum(b.values())} | {sum(b.values()) - sum(a.values()):+d}"
        for a, b in pairs
    ]
    lines.append("| total | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
