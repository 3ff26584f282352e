"""Fake but realistic strings for burned-in annotations: identifying (PHI) and technical."""

from __future__ import annotations

import random
import string

LAST_NAMES = [
    "SMITH",
    "JOHNSON",
    "WILLIAMS",
    "BROWN",
    "JONES",
    "GARCIA",
    "MILLER",
    "DAVIS",
    "RODRIGUEZ",
    "MARTINEZ",
    "HERNANDEZ",
    "LOPEZ",
    "GONZALEZ",
    "WILSON",
    "ANDERSON",
    "THOMAS",
    "TAYLOR",
    "MOORE",
    "JACKSON",
    "MARTIN",
    "LEE",
    "PEREZ",
    "THOMPSON",
    "WHITE",
    "HARRIS",
    "SANCHEZ",
    "CLARK",
    "RAMIREZ",
    "LEWIS",
    "ROBINSON",
    "WALKER",
    "YOUNG",
    "ALLEN",
    "KING",
    "WRIGHT",
    "SCOTT",
    "TORRES",
    "NGUYEN",
    "HILL",
    "FLORES",
    "GREEN",
    "ADAMS",
    "NELSON",
    "BAKER",
    "HALL",
    "RIVERA",
    "CAMPBELL",
    "MITCHELL",
    "CARTER",
    "ROBERTS",
    "MUELLER",
    "SCHMIDT",
    "SCHNEIDER",
    "FISCHER",
    "WEBER",
    "DUBOIS",
    "MOREAU",
    "LAURENT",
    "ROSSI",
    "RUSSO",
    "FERRARI",
    "KOWALSKI",
    "NOWAK",
    "YAMAMOTO",
    "TANAKA",
    "KIM",
    "PARK",
    "CHEN",
    "WANG",
    "LI",
    "ZHANG",
    "OKAFOR",
    "MENSAH",
    "OBRIEN",
    "MACDONALD",
    "VANDERBERG",
    "DOWNTOWN",
]
FIRST_NAMES = [
    "JAMES",
    "MARY",
    "JOHN",
    "PATRICIA",
    "ROBERT",
    "JENNIFER",
    "MICHAEL",
    "LINDA",
    "WILLIAM",
    "ELIZABETH",
    "DAVID",
    "BARBARA",
    "RICHARD",
    "SUSAN",
    "JOSEPH",
    "JESSICA",
    "THOMAS",
    "SARAH",
    "CHARLES",
    "KAREN",
    "CHRISTOPHER",
    "NANCY",
    "DANIEL",
    "LISA",
    "MATTHEW",
    "BETTY",
    "ANTHONY",
    "MARGARET",
    "MARK",
    "SANDRA",
    "PAUL",
    "ASHLEY",
    "STEVEN",
    "KIMBERLY",
    "ANDREW",
    "EMILY",
    "KENNETH",
    "DONNA",
    "JOSHUA",
    "MICHELLE",
    "KEVIN",
    "CAROL",
    "BRIAN",
    "AMANDA",
    "GEORGE",
    "MELISSA",
    "ANNA",
    "HANS",
    "FRANZ",
    "MARIE",
    "PIERRE",
    "GIULIA",
    "MARCO",
    "AKIRA",
    "YUKI",
    "WEI",
    "MIN",
    "JOON",
    "CHIDI",
    "AMA",
    "SEAN",
    "FIONA",
]
INSTITUTION_WORDS = [
    "ST MARY'S",
    "GENERAL",
    "MEMORIAL",
    "UNIVERSITY",
    "CITY",
    "COUNTY",
    "REGIONAL",
    "CHILDREN'S",
    "BAPTIST",
    "METHODIST",
    "MERCY",
    "SACRED HEART",
    "WESTWAY",
    "NORTHSIDE",
    "RIVERSIDE",
    "LAKEVIEW",
    "VALLEY",
    "SUMMIT",
    "CLEVELAND",
    "MAYO",
]
INSTITUTION_KINDS = (
    "HOSPITAL",
    "MEDICAL CENTER",
    "MED CTR",
    "CLINIC",
    "IMAGING",
    "RADIOLOGY",
    "HEALTH",
    "Medical Center",
    "Hospital",
    "Klinikum",
    "Radiology Dept",
)
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


# Names with diacritics (drawn in fonts that have the glyphs: Noto, DejaVu, Liberation, FreeFont).
ACCENTED_LAST_NAMES = [
    "MÜLLER",
    "GARCÍA",
    "NÚÑEZ",
    "DVOŘÁK",
    "ŁUKASIEWICZ",
    "SØRENSEN",
    "ÇELIK",
    "GÖKÇE",
    "PÉREZ",
    "BJÖRK",
    "ÅBERG",
    "NGUYỄN",
    "JANSEN-ØSTERGÅRD",
    "WOJCIECHOWSKA",
    "CONCEIÇÃO",
    "Ó SÚILLEABHÁIN",
    "HÄMÄLÄINEN",
    "STRAßBURGER",
]
ACCENTED_FIRST_NAMES = [
    "JOSÉ",
    "FRANÇOIS",
    "ZOË",
    "RENÉE",
    "ÅSA",
    "JÜRGEN",
    "ŠTĚPÁN",
    "ÉMILIE",
    "INÊS",
    "JOÃO",
    "MAŁGORZATA",
    "SIOBHÁN",
    "HÅKON",
    "ÎLE",
]
# How scanners print a person's name: DICOM's LAST^FIRST, LAST, FIRST, First Last, and so on.
NAME_STYLES = ("LAST^FIRST", "LAST, FIRST", "First Last", "Last, First", "LAST FIRST", "Last^First")


def format_name(last: str, first: str, style: str, middle: str = "") -> str:
    """`last` and `first` (upper case) in one of NAME_STYLES."""
    if style == "LAST^FIRST":
        return f"{last}^{first}" + (f"^{middle}" if middle else "")
    if style == "LAST, FIRST":
        return f"{last}, {first}" + (f" {middle}" if middle else "")
    if style == "First Last":
        return f"{first.title()} {last.title()}"
    if style == "Last, First":
        return f"{last.title()}, {first.title()}"
    if style == "LAST FIRST":
        return f"{last} {first}"
    return f"{last.title()}^{first.title()}"


def random_name(rng: random.Random, accented: float = 0.12) -> str:
    """A person's name; `accented` of them carry diacritics (see needs_unicode_font)."""
    if rng.random() < accented:
        last = rng.choice(ACCENTED_LAST_NAMES + LAST_NAMES[:10])
        first = rng.choice(ACCENTED_FIRST_NAMES)
    else:
        last, first = rng.choice(LAST_NAMES), rng.choice(FIRST_NAMES)
    middle = rng.choice(string.ascii_uppercase) if rng.random() < 0.15 else ""
    style = rng.choices(NAME_STYLES, weights=(0.3, 0.22, 0.2, 0.12, 0.08, 0.08))[0]
    return format_name(last, first, style, middle)


def needs_unicode_font(text: str) -> bool:
    """True when `text` has characters beyond ASCII (bitmap and URW faces may lack them)."""
    return not text.isascii()


def random_date(rng: random.Random, year_low: int = 1930, year_high: int = 2026) -> str:
    year, month, day = rng.randint(year_low, year_high), rng.randint(1, 12), rng.randint(1, 28)
    formats = (
        f"{year}-{month:02d}-{day:02d}",
        f"{month:02d}/{day:02d}/{year}",
        f"{day:02d}.{month:02d}.{year}",
        f"{day:02d}-{MONTHS[month - 1]}-{year % 100:02d}",
        f"{day:02d} {MONTHS[month - 1].title()} {year}",
        f"{year}{month:02d}{day:02d}",
        f"{month}/{day}/{year}",
        f"{day:02d}/{month:02d}/{year % 100:02d}",
    )
    return rng.choice(formats)


def random_time(rng: random.Random) -> str:
    hour, minute, second = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
    formats = (
        f"{hour:02d}:{minute:02d}:{second:02d}",
        f"{hour:02d}:{minute:02d}",
        f"{(hour % 12) or 12}:{minute:02d}:{second:02d} {'AM' if hour < 12 else 'PM'}",
        f"{hour:02d}{minute:02d}{second:02d}",
    )
    return rng.choice(formats)


DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def random_datetime(rng: random.Random, year_low: int = 1995, year_high: int = 2026) -> str:
    """A whole date-time stamp as scanners print it, Unix ctime ("Thu Dec  3 16:24:43 2026")
    among them."""
    import datetime

    moment = datetime.datetime(
        rng.randint(year_low, year_high),
        rng.randint(1, 12),
        rng.randint(1, 28),
        rng.randint(0, 23),
        rng.randint(0, 59),
        rng.randint(0, 59),
    )
    day, mon = DAYS[moment.weekday()], MONTHS[moment.month - 1].title()
    meridiem = "AM" if moment.hour < 12 else "PM"
    formats = (
        moment.strftime("%a %b ") + f"{moment.day:2d}" + moment.strftime(" %H:%M:%S %Y"),  # ctime
        f"{day} {mon} {moment.day:02d} {moment:%H:%M:%S} {moment.year}",
        f"{moment:%Y/%m/%d %H:%M:%S}",
        f"{moment:%Y-%m-%dT%H:%M:%S}",
        f"{moment.day:02d}-{mon.upper()}-{moment.year} {moment:%H:%M}",
        f"{moment:%m/%d/%Y} {(moment.hour % 12) or 12}:{moment:%M} {meridiem}",
        f"{moment:%d.%m.%Y %H:%M}",
        f"{mon} {moment.day}, {moment.year} {moment:%H:%M}",
        f"{moment:%Y%m%d %H%M%S}",
        f"{moment:%d/%m/%y %H:%M:%S}",
    )
    return rng.choice(formats)


def ctime_stamp(rng: random.Random) -> str:
    """A Unix ctime date-time ("Day Mon DD HH:MM:SS YYYY"), the format the first model missed."""
    import datetime

    moment = datetime.datetime(
        rng.randint(1995, 2026),
        rng.randint(1, 12),
        rng.randint(1, 28),
        rng.randint(0, 23),
        rng.randint(0, 59),
        rng.randint(0, 59),
    )
    return moment.strftime("%a %b ") + f"{moment.day:2d}" + moment.strftime(" %H:%M:%S %Y")


def random_id(rng: random.Random) -> str:
    digits = "".join(rng.choices(string.digits, k=rng.randint(6, 10)))
    style = rng.random()
    if style < 0.4:
        return digits
    if style < 0.6:
        return f"{rng.choice(string.ascii_uppercase)}{rng.choice(string.ascii_uppercase)}{digits}"
    if style < 0.8:
        return f"{digits[:3]}-{digits[3:6]}-{digits[6:]}".rstrip("-")
    return f"{rng.randint(10, 99)}{rng.choice(string.ascii_uppercase)}{digits[:5]}"


def random_institution(rng: random.Random) -> str:
    return f"{rng.choice(INSTITUTION_WORDS)} {rng.choice(INSTITUTION_KINDS)}"


def phi_line(rng: random.Random) -> str:
    """One identifying line as scanners print it (name, ID, dates, age/sex, institution...)."""
    kind = rng.random()
    if kind < 0.22:
        name = random_name(rng)
        return rng.choice((name, f"Name: {name}", f"Patient: {name}", f"PT: {name}", name.upper()))
    if kind < 0.36:
        mrn = random_id(rng)
        return rng.choice((mrn, f"ID: {mrn}", f"MRN: {mrn}", f"PID {mrn}", f"Pat ID: {mrn}"))
    if kind < 0.48:
        dob = random_date(rng, 1925, 2024)
        return rng.choice((f"DOB: {dob}", f"Born {dob}", f"D.O.B. {dob}", dob, f"Birth: {dob}"))
    if kind < 0.64:
        date, time = random_date(rng, 1995, 2026), random_time(rng)
        stamp = random_datetime(rng)
        return rng.choice(
            (f"{date} {time}", date, time, f"{date}  {time}", f"Study: {date}", stamp, stamp)
        )
    if kind < 0.74:
        age, sex = rng.randint(0, 99), rng.choice("MFO")
        return rng.choice(
            (
                f"{age}Y {sex}",
                f"{age:03d}Y",
                f"{sex} {age}y",
                f"Age: {age}",
                f"{age} yrs {sex}",
                f"Sex: {sex}",
                f"{sex}/{age}",
            )
        )
    if kind < 0.86:
        return random_institution(rng)
    if kind < 0.94:
        acc = "".join(rng.choices(string.digits, k=rng.randint(6, 12)))
        return rng.choice((f"Acc: {acc}", f"ACC# {acc}", f"Accession {acc}", f"A{acc}"))
    # A combined header line, the way many ultrasound banners print it.
    return f"{random_name(rng)}  {random_id(rng)}  {random_date(rng, 1930, 2024)}"


TECH_WORDS = (
    "L",
    "R",
    "AP",
    "PA",
    "LAT",
    "PORTABLE",
    "SUPINE",
    "ERECT",
    "UPRIGHT",
    "LEFT",
    "RIGHT",
    "AXIAL",
    "SAG",
    "COR",
    "T1",
    "T2",
    "FLAIR",
    "DWI",
    "ADC",
    "STIR",
    "PD",
    "W",
    "H",
    "A",
    "P",
    "S",
    "I",
    "PELVIS",
    "ABDOMEN",
    "LIVER",
    "KIDNEY",
    "THYROID",
    "BREAST",
    "CHEST",
    "HEAD",
    "C5-1",
    "L12-5",
    "S5-1",
    "Gen",
    "Pen",
    "Res",
    "THI",
    "CINE",
    "FREEZE",
    "2D",
    "M",
    "CF",
    "PW",
    "PWR",
    "Doppler",
    "Page 1/3",
    "LYMPH NODE",
    "Sag Liver",
    "Trans",
    "Long",
    "ECG",
    "HR",
    "Philips",
    "SIEMENS",
    "GE",
    "TOSHIBA",
    "Adv Breast",
    "Crd",
    "Abd",
    "OB",
    "Vasc",
    "MSK",
    "Neo",
    "Post",
    "Pre",
)


def tech_line(rng: random.Random) -> str:
    """A non-identifying label: markers, sequence names, machine settings, scale numbers."""
    kind = rng.random()
    if kind < 0.35:
        return rng.choice(TECH_WORDS)
    if kind < 0.55:
        return rng.choice(
            (
                f"{rng.randint(1, 30)} cm",
                f"{rng.randint(0, 25)}",
                f"{rng.uniform(0, 3):.1f}",
                f"-{rng.randint(1, 120)}",
                f"{rng.randint(1, 150)}mm",
                f"x{rng.uniform(0.5, 4):.1f}",
            )
        )
    if kind < 0.8:
        return rng.choice(
            (
                f"MI {rng.uniform(0.1, 1.9):.1f}",
                f"TIS {rng.uniform(0.1, 2):.1f}",
                f"TIB {rng.uniform(0.1, 2):.1f}",
                f"G{rng.randint(30, 90)}",
                f"{rng.randint(2, 60)}Hz",
                f"{rng.randint(1, 20)}MHz",
                f"DR{rng.randint(40, 80)}",
                f"kVp {rng.randint(50, 140)}",
                f"mAs {rng.randint(1, 400)}",
                f"TR {rng.randint(300, 9000)}",
                f"TE {rng.randint(5, 120)}",
                f"SL {rng.uniform(1, 10):.1f}",
                f"FOV {rng.randint(18, 48)}cm",
                f"W {rng.randint(50, 4000)} L {rng.randint(-500, 1000)}",
                f"Im: {rng.randint(1, 300)}/{rng.randint(1, 300)}",
                f"Se: {rng.randint(1, 20)}",
                f"{rng.randint(20, 160)} bpm",
                f"DVA: {rng.randint(50, 100)}%",
                f"Z {rng.uniform(-200, 200):.1f}",
            )
        )
    words = rng.sample(TECH_WORDS, k=rng.randint(2, 3))
    return " ".join(words)


def single_characters(rng: random.Random) -> str:
    """Single-letter orientation markers that sit at image edges."""
    return rng.choice(("L", "R", "A", "P", "S", "I", "H", "F", "LT", "RT"))
