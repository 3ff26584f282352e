"""Finding a patient's identity in DICOM free text, for `engine.dicom.deid`.

    build_identity(person_names=, removed_texts=, dates=) -> Identity   # from the header
    scrub_identity(text, identity) -> str          # those values cut out of any text
    scrub_descriptor(text, identity) -> str        # and a free-text descriptor cleaned or replaced
    looks_identifying(text) -> bool                # a date, phone number, ID or e-mail left

Plain module, no pydicom: strings in, strings out.

What counts as the patient's identity (`Identity`), taken from the header before anything is
changed:
- person names: every part (family, given, middle, prefix, suffix, each word of each) of every
  PN value the profile removes or replaces, and the parts joined ("LiNa", "NaLi"). Parts of
  3+ letters are cut wherever they stand as a word; 2-letter parts ("Li", "Na") only next to
  another name part, since alone they are too common ("Na" the element). Parts in Chinese,
  Japanese or Korean script (the ideographic and phonetic groups of a PN value), which are
  written without spaces, are cut wherever they stand, from two characters on;
- identifiers: every value the profile removes or replaces that holds a digit and 4+ letters
  or digits (Patient ID, Other Patient IDs, Accession Number, telephone numbers, admission and
  order numbers...), compared without case and without separators: "4711-233", "4711 233" and
  "MRN4711233" all hold 4711233;
- dates: every DA and DT value in the file (birth, study, series, any depth), in the forms
  people write them: 19650412, 1965-04-12, 12/04/1965, 04/12/1965, 12.4.1965, 12.04.65,
  "12 Apr 1965", "12th of April 1965", "April 12, 1965", "Apr. 12 1965", "1965 Apr 12";
- words: every word of 3+ letters of every text value the profile removes (institution,
  address...), cut from descriptors only (`scrub_descriptor`): elsewhere they would eat
  technical words ("AXIAL") that a removed description also held.

Matching is case-insensitive, and for identifiers and numeric dates separator-insensitive; a
match must not continue into more digits (or more letters, for a value ending in a letter), so
"55123" is not cut out of "551234".
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

PLACEHOLDER = "REMOVED"  # what a descriptor that cannot be cleaned with certainty becomes
MIN_IDENTIFIER = 4  # shorter identifiers ("1", "A12") match too much to be evidence
LETTERS = re.compile(r"[^\W\d_]+")
WORD = re.compile(r"[^\W_]{3,}")
NAME_SPLIT = re.compile(r"[\^=]")
SHORT_NAME_GAP = re.compile(r"[^\w]{1,3}")  # what may stand between two parts of one name
ORDINAL = r"(?:st|nd|rd|th)?"
SEP = r"[\s.,/\-]*"
CUT_PUNCTUATION = " ,;:-/"

_MONTHS = [
    (calendar.month_name[m].casefold(), calendar.month_abbr[m].casefold()) for m in range(1, 13)
]
_ANY_MONTH = "(?:" + "|".join(rf"{abbr}(?:{full[3:]})?" for full, abbr in _MONTHS) + "|sept)"

# What still looks identifying in a descriptor after the header's values are cut: a date in
# any common form, a telephone number, an ID-like run of 5+ digits, an e-mail address.
ANY_DATE = re.compile(
    rf"(?<![\w])(?:"
    rf"\d{{1,2}}{ORDINAL}{SEP}(?:of\s+)?{_ANY_MONTH}\.?{SEP}\d{{2,4}}"
    rf"|{_ANY_MONTH}\.?{SEP}\d{{1,2}}{ORDINAL}{SEP}\d{{2,4}}"
    rf"|\d{{4}}{SEP}{_ANY_MONTH}\.?{SEP}\d{{1,2}}"
    rf"|\d{{4}}[-./]\d{{1,2}}[-./]\d{{1,2}}"
    rf"|\d{{1,2}}[-./]\d{{1,2}}[-./]\d{{2,4}}"
    rf"|\d{{8}})(?![\w])",
    re.IGNORECASE,
)
PHONE = re.compile(r"(?<![\w.])(?:\+|00)?\(?\d{1,4}\)?(?:[\s.\-/]?\(?\d{2,4}\)?){2,5}(?![\w])")
DIGIT_RUN = re.compile(r"(?<!\d)\d{5,}(?!\d)")
# A decimal number ("0.084906", "1.25") is a measurement, not a telephone number or an ID.
DECIMAL = re.compile(r"(?<![\d.,])\d+[.,]\d+(?![.,]?\d)")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


@dataclass(frozen=True)
class Identity:
    names: frozenset[str] = frozenset()  # name parts of 3+ letters, and joined parts
    short_names: frozenset[str] = frozenset()  # 2-letter name parts
    identifiers: tuple[str, ...] = ()  # case-folded, letters and digits only
    dates: tuple[dt.date, ...] = ()
    words: frozenset[str] = frozenset()  # for descriptors only
    unspaced: frozenset[str] = frozenset()  # names in scripts written without spaces

    def __bool__(self) -> bool:
        return bool(
            self.names or self.short_names or self.identifiers or self.dates or self.unspaced
        )


# --------------------------------------------------------------------------- building it


def name_parts(value: str) -> tuple[set[str], set[str]]:
    """(parts of 3+ letters and joined parts, 2-letter parts) of a PN value."""
    parts: list[str] = []
    for component in NAME_SPLIT.split(value):
        parts.extend(p.casefold() for p in LETTERS.findall(component))
    long = {p for p in parts if len(p) >= 3}
    short = {p for p in parts if len(p) == 2}
    named = [p for p in parts if len(p) >= 2]
    if len(named) >= 2:
        long.update({named[0] + named[1], named[1] + named[0], "".join(named)})
    return long, short


def unspaced_parts(value: str) -> set[str]:
    """Name parts in scripts written without spaces between words (Chinese, Japanese,
    Korean), matched inside longer runs of letters: each part of two characters or more, and
    family and given name joined both ways ("李^娜" gives "李娜" and "娜李")."""
    parts: set[str] = set()
    for group in value.split("="):
        pieces = [
            p
            for component in group.split("^")
            for p in LETTERS.findall(component)
            if all(_unspaced_script(c) for c in p)
        ]
        parts.update(p for p in pieces if len(p) >= 2)
        if len(pieces) >= 2:
            parts.update({pieces[0] + pieces[1], pieces[1] + pieces[0]})
    return parts


def _unspaced_script(char: str) -> bool:
    code = ord(char)
    return (
        0x2E80 <= code <= 0x9FFF  # CJK radicals, kana, CJK ideographs
        or 0xAC00 <= code <= 0xD7AF  # Hangul syllables
        or 0xF900 <= code <= 0xFAFF  # CJK compatibility ideographs
        or 0x20000 <= code <= 0x3134F  # CJK extensions
    )


def normalise(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


def parse_date(value: str) -> dt.date | None:
    text = value.strip()[:8]
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None


def build_identity(
    *,
    person_names: Iterable[str],
    removed_texts: Iterable[str],
    dates: Iterable[str],
) -> Identity:
    """An Identity from the header's values: PN values the profile removes, every other text
    value it removes, and every DA/DT value."""
    names: set[str] = set()
    short: set[str] = set()
    unspaced: set[str] = set()
    for value in person_names:
        long_parts, short_parts = name_parts(value)
        names |= long_parts
        short |= short_parts
        unspaced |= unspaced_parts(value)
    identifiers: set[str] = set()
    words: set[str] = set()
    for value in removed_texts:
        words.update(w.casefold() for w in WORD.findall(value) if not w.isdigit())
        plain = normalise(value)
        if len(plain) >= MIN_IDENTIFIER and any(c.isdigit() for c in plain):
            identifiers.add(plain)
    parsed = {d for d in (parse_date(v) for v in dates) if d is not None}
    return Identity(
        names=frozenset(names),
        short_names=frozenset(short),
        # Longest first: "4711233" is cut before a "4711" that it contains.
        identifiers=tuple(sorted(identifiers, key=lambda s: (-len(s), s))),
        dates=tuple(sorted(parsed)),
        words=frozenset(words | names),
        unspaced=frozenset(unspaced),
    )


# --------------------------------------------------------------------------- finding it


def _name_spans(text: str, identity: Identity) -> list[tuple[int, int]]:
    tokens = [(m.start(), m.end(), m.group(0).casefold()) for m in LETTERS.finditer(text)]
    known = identity.names | identity.short_names
    spans = []
    for index, (start, end, token) in enumerate(tokens):
        if token in identity.names:
            spans.append((start, end))
        elif token in identity.short_names:
            neighbours = []
            if index > 0:
                neighbours.append((tokens[index - 1], text[tokens[index - 1][1] : start]))
            if index + 1 < len(tokens):
                neighbours.append((tokens[index + 1], text[end : tokens[index + 1][0]]))
            if any(
                other[2] in known and SHORT_NAME_GAP.fullmatch(gap) for other, gap in neighbours
            ):
                spans.append((start, end))
    return spans


def _bounded(text: str, start: int, end: int) -> bool:
    """A match must not run on into more of the same kind (digits, or letters)."""
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    for outside, inside in ((before, text[start]), (after, text[end - 1])):
        if outside and (
            (outside.isdigit() and inside.isdigit()) or (outside.isalpha() and inside.isalpha())
        ):
            return False
    return True


def _normalised_spans(text: str, needles: Iterable[str]) -> list[tuple[int, int]]:
    """Where each needle (letters and digits only) stands in `text`, separators ignored."""
    chars: list[str] = []
    positions: list[int] = []
    for index, char in enumerate(text):
        if char.isalnum():
            chars.append(char.casefold())
            positions.append(index)
    plain = "".join(chars)
    spans = []
    for needle in needles:
        at = plain.find(needle)
        while at != -1:
            start, end = positions[at], positions[at + len(needle) - 1] + 1
            if _bounded(text, start, end):
                spans.append((start, end))
            at = plain.find(needle, at + 1)
    return spans


def _numeric_forms(day: dt.date) -> set[str]:
    y4, y2 = f"{day.year:04d}", f"{day.year % 100:02d}"
    m2, d2, m1, d1 = f"{day.month:02d}", f"{day.day:02d}", str(day.month), str(day.day)
    forms = {y4 + m2 + d2, y2 + m2 + d2}
    for d, m in ((d2, m2), (d1, m1), (d2, m1), (d1, m2)):
        for y in (y4, y2):
            forms.update({d + m + y, m + d + y})
    return {f for f in forms if len(f) >= 6}


@functools.lru_cache(maxsize=4096)
def _month_name_pattern(day: dt.date) -> re.Pattern[str]:
    full, abbr = _MONTHS[day.month - 1]
    month = rf"(?:{abbr}(?:{full[3:]})?{'|sept' if day.month == 9 else ''})\.?"
    d = rf"0?{day.day}{ORDINAL}"
    y = rf"(?:{day.year:04d}|'?{day.year % 100:02d})"
    return re.compile(
        rf"(?<![\w])(?:{d}{SEP}(?:of\s+)?{month}{SEP}{y}"
        rf"|{month}{SEP}{d}{SEP}{y}"
        rf"|{day.year:04d}{SEP}{month}{SEP}{d})(?![\w])",
        re.IGNORECASE,
    )


def identity_spans(text: str, identity: Identity, *, names: bool = True) -> list[tuple[int, int]]:
    """Where the patient's names (unless `names` is False), identifiers and dates stand."""
    spans: list[tuple[int, int]] = []
    if names:
        spans += _name_spans(text, identity)
        for part in identity.unspaced:
            at = text.find(part)
            while at != -1:
                spans.append((at, at + len(part)))
                at = text.find(part, at + 1)
    spans += _normalised_spans(text, identity.identifiers)
    for day in identity.dates:
        spans += _normalised_spans(text, _numeric_forms(day))
        spans += [m.span() for m in _month_name_pattern(day).finditer(text)]
    return spans


def _cut(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` without the spans. Separators left next to a cut ("born , see", "Li-Na" ->
    "-") go with it; pieces that stood apart stay apart, pieces that touched ("ED_HEAD_" and
    "_SEQ" around a word) stay joined."""
    if not spans:
        return text
    pieces: list[str] = []
    apart: list[bool] = []  # was there a separator around the cut before pieces[i + 1]
    position = 0
    for start, end in sorted(spans):
        if end <= position:
            continue
        start = max(start, position)
        pieces.append(text[position:start])
        around = text[start - 1 : start] + text[end : end + 1]
        apart.append(any(c.isspace() or c in CUT_PUNCTUATION for c in around))
        position = end
    pieces.append(text[position:])
    last = len(pieces) - 1
    out = ""
    for index, piece in enumerate(pieces):
        if index:
            piece = piece.lstrip(CUT_PUNCTUATION)
        if index < last:
            piece = piece.rstrip(CUT_PUNCTUATION)
        if not any(c.isalnum() for c in piece):
            continue
        if out and index and apart[index - 1]:
            out += " "
        out += piece
    return re.sub(r"\s{2,}", " ", out).strip()


def scrub_identity(text: str, identity: Identity, *, names: bool = True) -> str:
    """`text` without the patient's names, identifiers and dates (any text element); without
    `names`, identifiers and dates only (a code string: "TEST" is a coding scheme there even
    when it is a patient's name elsewhere)."""
    if not identity or not text:
        return text
    return _cut(text, identity_spans(text, identity, names=names))


def scrub_words(text: str, words: frozenset[str]) -> str:
    spans = [m.span() for m in WORD.finditer(text) if m.group(0).casefold() in words]
    return _cut(text, spans)


def looks_identifying(text: str) -> bool:
    """A date, a telephone number, an ID-like digit run or an e-mail address is left."""
    if ANY_DATE.search(text) or EMAIL.search(text):
        return True
    numbers = DECIMAL.sub(" ", text)
    if DIGIT_RUN.search(numbers):
        return True
    return any(sum(c.isdigit() for c in m.group(0)) >= 7 for m in PHONE.finditer(numbers))


def scrub_descriptor(text: str, identity: Identity) -> str:
    """A free-text descriptor cleaned: the patient's values and the removed values' words cut
    out; if what is left still looks identifying (a date, phone number, ID or e-mail that the
    header does not explain), it cannot be cleaned with certainty and becomes PLACEHOLDER."""
    if not text:
        return text
    cleaned = scrub_words(scrub_identity(text, identity), identity.words)
    return PLACEHOLDER if looks_identifying(cleaned) else cleaned
