"""Print the counts of Table E.1-1 actions as medimg applies them, as a Markdown table.

    python -m imaging.deid_table.counts

One column per configuration: the Basic Profile alone, medimg's defaults (Basic plus Retain
Longitudinal Temporal Information with Modified Dates, Clean Pixel Data, Clean Descriptors),
and the defaults with each setting-driven option. Each attribute row is resolved exactly as
`imaging.deid.resolve` resolves it (an applied option's column overrides the basic action,
the stricter of two options wins, composite codes choose as the module docstring says). The
numbers count rows of the table (repeating groups such as 60xx once, the private-attributes
row once), not elements of any file.
"""

from __future__ import annotations

import json
from collections import Counter

from imaging import deid

KINDS = (
    ("X", "removed"),
    ("Z", "emptied (zero length; Patient's Name and ID: the pseudonym)"),
    ("D", "replaced with a dummy value"),
    ("U", "UID replaced (deterministic remapping)"),
    ("C", "cleaned (dates shifted, text scrubbed)"),
    ("U*", "sequence kept, its items de-identified"),
    ("K", "kept"),
)
CONFIGURATIONS = (
    ("Basic only", ()),
    ("medimg default", deid.DEFAULT_OPTIONS),
    (
        "+ Retain Patient Characteristics",
        (*deid.DEFAULT_OPTIONS, "retain_patient_characteristics"),
    ),
    ("+ Retain Device Identity", (*deid.DEFAULT_OPTIONS, "retain_device_identity")),
)


def counts(options: tuple[str, ...]) -> Counter[str]:
    table = json.loads(deid.TABLE_PATH.read_text())
    found: Counter[str] = Counter()
    for row in table["attributes"]:
        rule = deid.Rule(row["name"], {c: row[c] for c in table["columns"]})
        found[deid.resolve(rule, options)] += 1
    return found


def markdown() -> str:
    table = json.loads(deid.TABLE_PATH.read_text())
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
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
