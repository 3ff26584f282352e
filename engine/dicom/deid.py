"""DICOM header de-identification, DICOM PS3.15 Annex E, and exact re-identification.

    deidentify(ds_bytes, *, options, uid_secret, date_shift_days, safe_private=(),
               pseudonym=None) -> DeidResult(data, removed_values, actions_applied, options)
    reidentify(deid_bytes, removed_values) -> bytes

Plain module, no ORM: bytes in, bytes out. The action table is `deid_table/table_e1_1.json`,
every row of PS3.15 Table E.1-1 (edition in its "edition" field, source in
`deid_table/generate.py`), applied to every element at every sequence depth and to the file
meta information.

The Basic Application Level Confidentiality Profile always applies; `options` adds the
options named in OPTION_CODES. For an attribute, an applied option's column overrides the
basic action; when two applied options disagree the stricter wins (X > Z > D > U > C > K).
Action codes:
    X  remove                   Z  empty value (Patient's Name and ID: the pseudonym)
    K  keep                     D  a dummy value of the VR (dates 19000101, text ANONYMIZED)
    U  UID replaced by "2.25." + the integer of the first 16 bytes of HMAC-SHA256(uid_secret,
       uid): deterministic, so one study stays one study and references stay consistent
    C  clean: DA and DT shifted by `date_shift_days` (TM unchanged: a whole-day shift keeps the
       time of day); text as `engine.dicom.deid_text.scrub_descriptor` leaves it (see "Free
       text" below); sequences cleaned item by item; anything else gets the basic action.
Composite codes need the IOD's attribute type to choose; this module does not look types up
and takes the choice that keeps the file valid for every type without leaking the value:
X/Z -> Z, X/D -> D, Z/D -> D, X/Z/D -> Z (a zero-length value is valid for Type 2 and 3; the
X/Z/D attributes, institution, station and device names, are not Type 1 in any image IOD),
X/Z/U* -> the sequence kept with its items de-identified (its UIDs are U rows). A sequence
under X/Z or X/Z/D is removed rather than emptied, except Acquisition Context Sequence (Type 2
where it is required): the others are Type 3, and a Type 3 sequence with no items fails
dciodvfy ("1-n required"). Responsible Person and Responsible Organization (X) are emptied
instead: Type 2C for animal patients. When Overlay Data (60xx,3000) is removed, the rest of
its overlay group goes too, since an Overlay Plane without its data is invalid.
Attributes not in the table are kept, except two safety nets stricter than the table: any DA
or DT is treated as X/D (C under Retain Modified Dates, K under Retain Full Dates), and any UI
value that is not a UID the standard defines (SOP classes, transfer syntaxes...) as U (K
under Retain UIDs), and any unlisted text whose whole value is one the profile removes
elsewhere in the file (an ID copied into a request sequence, such as Scheduled Procedure Step
ID, which later editions list as X) as X; group 0002 other than Media Storage SOP Instance UID
is kept. Sequences
are always walked, since a kept sequence can hold identifying attributes. Private elements
(odd groups) are removed unless `safe_private` lists them: an int tag (e.g. 0x00091001), or
(private creator, group, element offset) such as
("GEMS_IDEN_01", 0x0009, 0x01); a private creator element stays while one of its elements does.

Added after the table: PatientIdentityRemoved YES, DeidentificationMethod (one value per
option applied) and DeidentificationMethodCodeSequence (CID 7050 codes, scheme DCM),
LongitudinalTemporalInformationModified (MODIFIED, UNMODIFIED or REMOVED) and, with the
`clean_pixel_data` option only, BurnedInAnnotation NO. `clean_pixel_data` is a promise by the
caller that `ds_bytes` already has its pixel data redacted and confirmed clean on every frame
(the detector pass and its verification, `engine.dicom.io.write_redacted_dataset`): this module
never touches pixel data. `pixels_flagged=True` (the verification pass still found text)
sets BurnedInAnnotation YES, whatever the file said; otherwise it is left as it was.

Free text: every text element the profile keeps (not in the table, or K), at any depth, has the
patient's names, identifiers and dates cut out (`engine.dicom.deid_text`: every part of every name,
IDs and phone numbers without regard to case or separators, dates in their written forms);
C on text (Clean Descriptors and the other cleaning options) also cuts the words of every
removed value and replaces a descriptor that still holds a date, a phone number or an ID-like
number with "REMOVED"; so does free text inside a sequence under C (CodeMeaning in a
Procedure Code Sequence).

`removed_values` maps an element path ("00100010", "00081140[0].00081155", "meta.00020003")
to {"keyword", "vr", "display", "element"}: `element` is the original element encoded alone
(explicit VR little endian, base64), or None where the element did not exist and was added.
It holds patient identity: the caller encrypts it (with the scan's data key) before storing
it. `display` is the original value as text, for an authorised doctor's view.
`reidentify` puts every original element back and writes the file the same way, so its
bytes are those of the source dataset written by pydicom (for the usual files written that
way, the source bytes themselves).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import functools
import hashlib
import hmac
import io
import json
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID_dictionary

from engine.dicom import deid_text

TABLE_PATH = Path(__file__).resolve().parent / "deid_table" / "table_e1_1.json"

BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
# DICOM CID 7050 (De-identification Method), coding scheme DCM.
OPTION_CODES: dict[str, tuple[str, str]] = {
    "clean_pixel_data": ("113101", "Clean Pixel Data Option"),
    "clean_graphics": ("113103", "Clean Graphics Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_long_full_dates": (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    "retain_long_modified_dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
}
# What medimg applies by default; Retain Patient Characteristics and Retain Device Identity
# are settings the caller adds.
DEFAULT_OPTIONS = ("retain_long_modified_dates", "clean_pixel_data", "clean_descriptors")

STRICTNESS = ("K", "C", "U", "D", "Z", "X")  # later is stricter
COMPOSITE = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "Z", "X/Z/U*": "U*"}
TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN", "CS", "AE"})
DUMMY_TEXT = "ANONYMIZED"
DUMMY_BY_VR: dict[str, Any] = {
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "AS": "000Y",
    "PN": "ANONYMIZED",
    "DS": "0",
    "IS": "0",
    "UR": "",
    "AE": "ANONYMIZED",
}
NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"})
BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
# X attributes that are Type 2C in the Patient Module (required, possibly empty, for animals):
# emptied rather than removed, which leaks nothing and keeps the file valid.
EMPTIED_NOT_REMOVED = frozenset({0x00102297, 0x00102299})  # Responsible Person, Organization
OVERLAY_DATA = 0x3000  # (60xx,3000): without it the rest of its Overlay Plane is invalid
# X/Z sequences that are Type 2 where an IOD requires them: emptied, never removed.
TYPE2_SEQUENCES = frozenset({0x00400555})  # Acquisition Context Sequence
PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
# Text elements searched for the patient's identity wherever they are (`deid_text`).
SCRUB_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN", "CS"})
# Codes: the value, scheme and version of a Code Sequence item (CodeMeaning is its text),
# and the mapping resource. Never cut: a code is no one's name.
CODE_TAGS = frozenset({0x00080100, 0x00080102, 0x00080103, 0x00080105, 0x00080119, 0x00080120})
# Inside a sequence being cleaned as a descriptor, the free-text VRs cleaned as descriptors
# (a code value, SH or UC, is a code: only the patient's own values are cut from it).
DESCRIPTOR_VRS = frozenset({"LO", "ST", "LT", "UT"})


class DeidError(ValueError):
    """The input is not a DICOM file this module can de-identify, or an unknown option."""


@dataclass(frozen=True)
class Rule:
    name: str
    actions: dict[str, str | None]  # column -> action code


@dataclass
class DeidResult:
    data: bytes
    removed_values: dict[str, dict[str, Any]]
    actions_applied: dict[str, str]  # element path -> action code actually applied
    options: tuple[str, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------- the table


@functools.cache
def load_table() -> tuple[dict[int, Rule], list[tuple[int, int, Rule]], Rule, str]:
    """(exact tags, repeating-group masks (mask, value, rule), private rule, edition label)."""
    table = json.loads(TABLE_PATH.read_text())
    exact: dict[int, Rule] = {}
    repeating: list[tuple[int, int, Rule]] = []
    private: Rule | None = None
    for row in table["attributes"]:
        rule = Rule(row["name"], {column: row[column] for column in table["columns"]})
        tag = row["tag"]
        if tag == "odd-group":
            private = rule
        elif "x" in tag:
            mask = int("".join("0" if c == "x" else "F" for c in tag), 16)
            repeating.append((mask, int(tag.replace("x", "0"), 16), rule))
        else:
            exact[int(tag, 16)] = rule
    if private is None:
        raise RuntimeError("the table has no private-attributes row")
    return exact, repeating, private, str(table["edition_label"])


def rule_for(tag: int) -> Rule | None:
    exact, repeating, _private, _edition = load_table()
    rule = exact.get(tag)
    if rule is not None:
        return rule
    for mask, value, candidate in repeating:
        if tag & mask == value and (tag >> 16) % 2 == 0:
            return candidate
    return None


# Safety nets beyond the table, stricter than the standard on purpose: the 2020 table predates
# attributes added since (Instance Creation Date is in none of its rows), and a date or an
# instance UID is identifying whatever attribute holds it.
UNLISTED_DATE = Rule(
    "date or date-time not in Table E.1-1",
    {"basic": "X/D", "retain_long_modified_dates": "C", "retain_long_full_dates": "K"},
)
UNLISTED_UID = Rule("instance UID not in Table E.1-1", {"basic": "U", "retain_uids": "K"})


# An attribute the table does not list (or lists in a later edition only, such as Scheduled
# Procedure Step ID) holding exactly a value the profile removes elsewhere in the file: an
# ID copied into a request sequence, say. It goes the way of the original.
UNLISTED_COPY = Rule("copy of an identifying value, not in Table E.1-1", {"basic": "X"})
COPY_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
MIN_COPIED_VALUE = 4  # shorter values ("M", "CT") match too much to be evidence


def _raw_text(item: Item) -> str:
    """An element's value as case-folded text, without decoding it in the dataset."""
    value = item.value
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("latin-1")
    return str(value or "").strip(" \x00").casefold()


def _unlisted_rule(element: DataElement) -> Rule | None:
    if element.VR in ("DA", "DT"):
        return UNLISTED_DATE
    if element.VR == "UI" and element.tag.group != 0x0002 and element.value:
        values = _map_values(element.value, str)
        values = values if isinstance(values, list) else [values]
        # SOP classes, transfer syntaxes and other UIDs the standard defines identify nobody.
        if any(v.strip() and v.strip() not in UID_dictionary for v in values):
            return UNLISTED_UID
    return None


def resolve(rule: Rule, options: Iterable[str]) -> str:
    """The single action for an attribute under the applied options."""
    from_options = [rule.actions.get(o) for o in options]
    chosen = [a for a in from_options if a]
    action = max(chosen, key=_strictness) if chosen else rule.actions["basic"] or "X"
    return COMPOSITE.get(action, action)


def _strictness(action: str) -> int:
    return STRICTNESS.index(COMPOSITE.get(action, action).rstrip("*")[0])


# --------------------------------------------------------------------------- value helpers


def remap_uid(uid: str, secret: bytes) -> str:
    """The de-identified UID for `uid`: same input and secret, same output, always."""
    digest = hmac.new(secret, uid.strip().encode("ascii", "replace"), hashlib.sha256).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def patient_pseudonym(patient_id: str, secret: bytes) -> str:
    """A stable, non-reversible stand-in for a patient ID (without the secret)."""
    digest = hmac.new(secret, b"patient:" + patient_id.encode(), hashlib.sha256).hexdigest()
    return "ANON-" + digest[:12].upper()


def patient_date_shift(patient_key: str, secret: bytes, *, max_days: int = 3650) -> int:
    """One date shift per patient, in days back: between 1 and `max_days`, never 0."""
    digest = hmac.new(secret, b"date-shift:" + patient_key.encode(), hashlib.sha256).digest()
    return -(1 + int.from_bytes(digest[:8], "big") % max_days)


def shift_da(value: str, days: int) -> str:
    text = value.strip()
    if not text:
        return value
    for fmt in ("%Y%m%d", "%Y.%m.%d"):  # the second is the pre-1993 ACR-NEMA form
        try:
            parsed = dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
        return (parsed + dt.timedelta(days=days)).strftime("%Y%m%d")
    return ""  # Not a date we can move: drop it rather than leak it.


def shift_dt(value: str, days: int) -> str:
    text = value.strip()
    if len(text) < 8:
        return ""  # A year or year-month only cannot be shifted by days without leaking it.
    moved = shift_da(text[:8], days)
    return moved + text[8:] if moved else ""


def _map_values(value: Any, function: Any) -> Any:
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [function(str(v)) for v in value]
    return function(str(value)) if value is not None else value


def _display(element: DataElement) -> str:
    if element.VR == "SQ":
        return f"<sequence of {len(element.value or [])} items>"
    if element.VR in BINARY_VRS:
        return f"<{len(element.value or b'')} bytes>"
    value = element.value
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


def encode_element(element: DataElement) -> str:
    holder = Dataset()
    holder.add(copy.deepcopy(element))
    out = DicomBytesIO()
    out.is_little_endian = True
    out.is_implicit_VR = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_dataset(out, holder)
    return base64.b64encode(out.getvalue()).decode("ascii")


def decode_element(encoded: str) -> DataElement:
    raw = base64.b64decode(encoded)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        holder = read_dataset(io.BytesIO(raw), is_implicit_VR=False, is_little_endian=True)
    [element] = list(holder)
    return holder[element.tag]


def _path(prefix: str, tag: BaseTag) -> str:
    return f"{prefix}{int(tag):08X}"


# --------------------------------------------------------------------------- the walk
#
# Elements are looked at through `Dataset.get_item`, which leaves them as pydicom read them
# (raw bytes): only those the profile changes are decoded. So everything untouched is
# written back byte for byte, and the originals recorded are the raw bytes from the file,
# which makes `reidentify` exact even for values that decoding would normalise (odd-length
# binary values, text padding).


@dataclass
class _Context:
    options: tuple[str, ...]
    secret: bytes
    days: int
    safe_private: tuple[Any, ...]
    pseudonym: str
    identity: deid_text.Identity
    identifying_values: set[str] = field(default_factory=set)
    descriptor_depth: int = 0  # > 0 while walking a sequence cleaned as a descriptor
    pixels_flagged: bool = False
    removed: dict[str, dict[str, Any]] = field(default_factory=dict)
    applied: dict[str, str] = field(default_factory=dict)


Item = DataElement | RawDataElement


def _vr(item: Item) -> str:
    if item.VR:
        return str(item.VR)
    try:
        return str(dictionary_VR(item.tag)).split(" or ")[0]
    except KeyError:
        return "UN"


def _record(ctx: _Context, path: str, ds: Dataset, item: Item | None, action: str) -> None:
    """Remember the original of `item` (None: the element did not exist) before a change."""
    ctx.applied[path] = action
    if path in ctx.removed:
        return
    if item is None:
        ctx.removed[path] = {"keyword": "", "vr": "", "display": "", "element": None}
        return
    element = ds[item.tag]  # decoded, for the display text
    record: dict[str, Any] = {
        "keyword": element.keyword,
        "vr": element.VR,
        "display": _display(element),
        "element": encode_element(element),
    }
    if isinstance(item, RawDataElement) and item.value is not None:
        record["raw"] = {
            "vr": item.VR,
            "length": item.length,
            "value": base64.b64encode(bytes(item.value)).decode("ascii"),
            "implicit": item.is_implicit_VR,
            "little": item.is_little_endian,
        }
    ctx.removed[path] = record


def _private_kept(ds: Dataset, tag: BaseTag, safe: tuple[Any, ...]) -> bool:
    if not safe:
        return False
    group, elem = tag.group, tag.element
    if int(tag) in safe:
        return True
    if elem < 0x1000:
        return False  # creators are decided by their blocks; group lengths go
    creator_tag = (group << 16) | (elem >> 8)
    if creator_tag not in ds:
        return False
    name = str(ds[creator_tag].value).strip()
    return (name, group, elem & 0xFF) in safe


def _walk(ds: Dataset, ctx: _Context, prefix: str) -> None:
    _, _, private_rule, _ = load_table()
    tags = list(ds.keys())
    kept_blocks = {
        (t.group, (t.element >> 8) & 0xFF)
        for t in tags
        if t.is_private and _private_kept(ds, t, ctx.safe_private)
    }
    for tag in tags:
        item = ds.get_item(tag)
        vr = _vr(item)
        path = _path(prefix, tag)
        if tag.is_private:
            creator_of_kept = 0x0010 <= tag.element <= 0x00FF and (
                (tag.group, tag.element) in kept_blocks
            )
            if creator_of_kept or _private_kept(ds, tag, ctx.safe_private):
                if vr == "SQ":
                    _walk_items(ds[tag], ctx, path)
                continue
            _record(ctx, path, ds, item, private_rule.actions["basic"] or "X")
            del ds[tag]
            continue
        rule = rule_for(int(tag))
        if rule is None and vr in ("DA", "DT", "UI"):
            rule = _unlisted_rule(ds[tag])
        if rule is None and vr in COPY_VRS and _raw_text(item) in ctx.identifying_values:
            rule = UNLISTED_COPY
        if rule is None:
            if vr == "SQ":
                _walk_items(ds[tag], ctx, path)
            elif vr in SCRUB_VRS:
                _scrub_kept(ds, item, ctx, path)
            continue
        _apply(ds, item, resolve(rule, ctx.options), rule, ctx, path)
    _drop_orphan_overlays(ds, ctx, prefix)


def _drop_orphan_overlays(ds: Dataset, ctx: _Context, prefix: str) -> None:
    """An overlay whose Overlay Data was removed goes whole: the rest of its Overlay Plane
    (rows, columns, origin...) would describe nothing and make the file invalid."""
    for tag in list(ds.keys()):
        group = tag.group
        if not (0x6000 <= group <= 0x601E and group % 2 == 0):
            continue
        if (group << 16) | OVERLAY_DATA in ds:
            continue
        if ctx.applied.get(_path(prefix, Tag(group, OVERLAY_DATA))) != "X":
            continue  # the file had no Overlay Data here: not ours to fix
        _record(ctx, _path(prefix, tag), ds, ds.get_item(tag), "X")
        del ds[tag]


def _walk_items(element: DataElement, ctx: _Context, path: str) -> None:
    for index, item in enumerate(element.value or []):
        _walk(item, ctx, f"{path}[{index}].")


def _apply(ds: Dataset, item: Item, action: str, rule: Rule, ctx: _Context, path: str) -> None:
    tag, vr = item.tag, _vr(item)
    if action == "Z" and vr == "SQ" and "X" in (rule.actions["basic"] or ""):
        action = "Z" if int(tag) in TYPE2_SEQUENCES else "X"
    if action == "X" and int(tag) in EMPTIED_NOT_REMOVED:
        action = "Z"
    if action == "C" and vr == "SQ":
        ctx.descriptor_depth += 1
        _walk_items(ds[tag], ctx, path)
        ctx.descriptor_depth -= 1
        return
    if action in ("K", "U*"):
        if vr == "SQ":
            _walk_items(ds[tag], ctx, path)
        elif vr in SCRUB_VRS:
            _scrub_kept(ds, item, ctx, path)
        return
    if action == "C":
        element = ds[tag]
        cleaned = _clean(element, ctx)
        if cleaned is None:  # Nothing sensible to clean to: the basic action instead.
            basic = COMPOSITE.get(rule.actions["basic"] or "X", rule.actions["basic"] or "X")
            _apply(ds, item, "X" if basic in ("C", "K") else basic, rule, ctx, path)
            return
        if _same(cleaned, element.value):
            ds[tag] = item  # untouched: back to the bytes as read
            return
        _record(ctx, path, ds, item, "C")
        ds[tag].value = cleaned
        return
    _record(ctx, path, ds, item, action)
    if action == "X":
        del ds[tag]
    elif action == "Z":
        if int(tag) in (PATIENT_NAME, PATIENT_ID):
            ds[tag].value = ctx.pseudonym
        else:
            ds[tag].value = Sequence() if vr == "SQ" else (b"" if vr in BINARY_VRS else None)
    elif action == "D":
        # Patient ID is Z/D in later editions: its dummy value is the pseudonym too.
        is_patient = int(tag) in (PATIENT_NAME, PATIENT_ID)
        ds[tag].value = ctx.pseudonym if is_patient else _dummy(vr)
    elif action == "U":
        if vr != "UI":
            del ds[tag]  # A U row holding something other than a UID: remove it.
            ctx.applied[path] = "X"
        else:
            ds[tag].value = _map_values(ds[tag].value, lambda u: remap_uid(u, ctx.secret))
    else:
        raise DeidError(f"unknown action {action!r} for {rule.name}")


def _same(new: Any, old: Any) -> bool:
    as_list = (list, tuple, pydicom.multival.MultiValue)
    if isinstance(new, as_list) or isinstance(old, as_list):
        new_l = list(new) if isinstance(new, as_list) else [new]
        old_l = list(old) if isinstance(old, as_list) else [old]
        return [str(v) for v in new_l] == [str(v) for v in old_l]
    return str(new) == str(old)


def _dummy(vr: str) -> Any:
    if vr == "SQ":
        return Sequence()
    if vr in NUMERIC_VRS:
        return 0
    if vr in BINARY_VRS:
        return b""
    if vr == "UI":
        return "2.25.0"
    return DUMMY_BY_VR.get(vr, DUMMY_TEXT)


def _clean(element: DataElement, ctx: _Context) -> Any:
    vr = element.VR
    dates = "retain_long_modified_dates" in ctx.options
    if vr == "DA":
        return _map_values(element.value, lambda v: shift_da(v, ctx.days)) if dates else None
    if vr == "DT":
        return _map_values(element.value, lambda v: shift_dt(v, ctx.days)) if dates else None
    if vr == "TM":
        return element.value if dates else None
    if vr in TEXT_VRS:
        return _map_values(element.value, lambda v: deid_text.scrub_descriptor(v, ctx.identity))
    return None


def _scrub_kept(ds: Dataset, item: Item, ctx: _Context, path: str) -> None:
    """A text element the profile keeps (not in the table, or K): the patient's names,
    identifiers and dates cut out of it wherever they stand, CodeMeaning in a code sequence
    as much as Study Description; inside a sequence cleaned as a descriptor, free text is
    cleaned as a descriptor (`deid_text.scrub_descriptor`). Left untouched (as read) when
    nothing is found."""
    if not ctx.identity or item.value is None or int(item.tag) in CODE_TAGS:
        return
    vr = _vr(item)
    descriptor = ctx.descriptor_depth > 0 and vr in DESCRIPTOR_VRS
    names = vr != "CS"  # defined terms: "HEAD", "TEST" are codes, whoever bears the name
    if not descriptor:
        raw = _raw_text(item)
        # Decided on the raw text, the common case, where it is ASCII; other bytes are only
        # text once decoded with the file's character set (UTF-8 "Müller" is not latin-1).
        if raw.isascii() and not deid_text.identity_spans(raw, ctx.identity, names=names):
            return
    element = ds[item.tag]
    if descriptor:
        clean = functools.partial(deid_text.scrub_descriptor, identity=ctx.identity)
    else:
        clean = functools.partial(deid_text.scrub_identity, identity=ctx.identity, names=names)
    cleaned = _map_values(element.value, lambda v: clean(v) or (v and DUMMY_TEXT))
    if _same(cleaned, element.value):
        ds[item.tag] = item  # untouched: back to the bytes as read
        return
    _record(ctx, path, ds, item, "C")
    ds[item.tag].value = cleaned


def _identifying(ds: Dataset, options: tuple[str, ...]) -> tuple[deid_text.Identity, set[str]]:
    """(the patient's identity as `deid_text` searches for it, whole values case-folded) from
    every value the profile removes or replaces, and every date, at any depth."""
    names: list[str] = []
    texts: list[str] = []
    dates: list[str] = []
    whole: set[str] = set()

    def visit(dataset: Dataset) -> None:
        for element in dataset:
            if element.VR == "SQ":
                for item in element.value or []:
                    visit(item)
                continue
            if element.VR not in TEXT_VRS and element.VR not in ("DA", "DT"):
                continue  # not text (and never the pixel data as a string)
            values = _map_values(element.value, str) if element.value is not None else []
            values = values if isinstance(values, list) else [values]
            if element.VR in ("DA", "DT"):
                dates.extend(values)
                continue
            rule = rule_for(int(element.tag))
            if rule is None or element.VR not in TEXT_VRS:
                continue
            if resolve(rule, options) in ("K", "C"):
                continue
            # A descriptor (a row Clean Descriptors would clean) describes the study: a copy
            # of it (CodeMeaning "CT BRAIN WO IVCON") is no identifier to remove whole.
            descriptor = rule.actions.get("clean_descriptors") == "C"
            for value in values:
                texts.append(value)
                if element.VR == "PN":
                    names.append(value)
                if len(value.strip()) >= MIN_COPIED_VALUE and not descriptor:
                    whole.add(value.strip().casefold())

    visit(ds)
    identity = deid_text.build_identity(person_names=names, removed_texts=texts, dates=dates)
    return identity, whole


# --------------------------------------------------------------------------- public API


def _read(data: bytes) -> pydicom.FileDataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # pydicom raises many types for a damaged file.
        raise DeidError("not a readable DICOM file") from exc
    return ds


def _write(ds: pydicom.FileDataset) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcmwrite(out, ds)  # As read: same transfer syntax, preamble and element encoding.
    return out.getvalue()


def deidentify(
    ds_bytes: bytes,
    *,
    options: Iterable[str],
    uid_secret: bytes,
    date_shift_days: int,
    safe_private: Iterable[Any] = (),
    pseudonym: str | None = None,
    pixels_flagged: bool = False,
) -> DeidResult:
    """De-identify a DICOM Part 10 file; see the module docstring."""
    applied = tuple(dict.fromkeys(options))
    unknown = [o for o in applied if o not in OPTION_CODES]
    if unknown:
        raise DeidError(f"unknown de-identification options: {', '.join(unknown)}")
    if len(uid_secret) < 16:
        raise DeidError("uid_secret must be at least 16 bytes")
    safe = tuple(safe_private)
    if safe and "retain_safe_private" not in applied:
        applied += ("retain_safe_private",)
    ds = _read(ds_bytes)
    patient_id = str(ds.get("PatientID", "") or "")
    identity, whole = _identifying(_read(ds_bytes), applied)
    ctx = _Context(
        options=applied,
        secret=uid_secret,
        days=int(date_shift_days),
        safe_private=safe,
        pseudonym=pseudonym or patient_pseudonym(patient_id, uid_secret),
        # From a parse of its own: reading every value decodes it, and `ds` must stay raw.
        identity=identity,
        identifying_values=whole,
        pixels_flagged=pixels_flagged,
    )
    try:
        _walk(ds.file_meta, ctx, "meta.")
        _walk(ds, ctx, "")
        _mark(ds, ctx)
        data = _write(ds)
    except DeidError:
        raise
    except Exception as exc:  # An element pydicom cannot decode or encode: a damaged file.
        raise DeidError("the DICOM file has an element that cannot be read") from exc
    return DeidResult(
        data=data,
        removed_values=ctx.removed,
        actions_applied=ctx.applied,
        options=applied,
    )


def _mark(ds: Dataset, ctx: _Context) -> None:
    """The attributes that say what was done (PS3.3 C.7.1.1 and C.12.1)."""
    _, _, _, edition = load_table()
    codes = [BASIC_PROFILE] + [OPTION_CODES[o] for o in ctx.options]
    method = f"{edition} Basic Profile"  # e.g. "DICOM PS3.15 2020a/b Basic Profile"
    if "retain_long_full_dates" in ctx.options:
        temporal = "UNMODIFIED"
    elif "retain_long_modified_dates" in ctx.options:
        temporal = "MODIFIED"
    else:
        temporal = "REMOVED"
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    additions: list[tuple[str, str, Any]] = [
        ("PatientIdentityRemoved", "CS", "YES"),
        ("DeidentificationMethod", "LO", [method] + [m for _, m in codes[1:]]),
        ("DeidentificationMethodCodeSequence", "SQ", Sequence(items)),
        ("LongitudinalTemporalInformationModified", "CS", temporal),
    ]
    if "clean_pixel_data" in ctx.options:
        additions.append(("BurnedInAnnotation", "CS", "NO"))
    elif ctx.pixels_flagged:
        additions.append(("BurnedInAnnotation", "CS", "YES"))
    for keyword, vr, value in additions:
        tag = Tag(keyword)
        path = _path("", tag)
        if path not in ctx.removed:
            _record(ctx, path, ds, ds.get_item(tag) if tag in ds else None, "set")
        ctx.applied[path] = "set"
        ds[tag] = DataElement(tag, vr, value)


def reidentify(deid_bytes: bytes, removed_values: dict[str, dict[str, Any]]) -> bytes:
    """The original file back: every recorded element restored, every added one removed."""
    ds = _read(deid_bytes)
    # By depth, so a sequence is back in place before its items' elements are. (A replaced
    # or removed element is never walked into, so no path lies inside one.)
    for path in sorted(removed_values, key=lambda p: p.count(".")):
        record = removed_values[path]
        parent, tag = _locate(ds, path)
        if record["element"] is None:
            if tag in parent:
                del parent[tag]
            continue
        raw = record.get("raw")
        if raw is not None:
            # The bytes as they were in the file: written back unchanged.
            parent[tag] = RawDataElement(
                Tag(tag),
                raw["vr"],
                raw["length"],
                base64.b64decode(raw["value"]),
                0,
                raw["implicit"],
                raw["little"],
            )
        else:
            parent[tag] = decode_element(record["element"])
    return _write(ds)


def _locate(ds: pydicom.FileDataset, path: str) -> tuple[Dataset, int]:
    parts = path.split(".")
    current: Dataset = ds
    if parts[0] == "meta":
        meta = ds.file_meta if hasattr(ds, "file_meta") else FileMetaDataset()
        current, parts = meta, parts[1:]
    for part in parts[:-1]:
        match = re.fullmatch(r"([0-9A-F]{8})\[(\d+)\]", part)
        if match is None:
            raise DeidError(f"bad element path {path!r}")
        current = current[int(match.group(1), 16)].value[int(match.group(2))]
    return current, int(parts[-1], 16)


def iter_paths(removed_values: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str, str]]:
    """(path, keyword, display) of the original identifying values, for a doctor's view."""
    for path in sorted(removed_values):
        record = removed_values[path]
        if record["element"] is not None:
            yield path, record["keyword"], record["display"]
