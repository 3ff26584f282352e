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


def random_name(rng: random.Random) -> str:
    last, first = rng.choice(LAST_NAMES), rng.choice(FIRST_NAMES)
    style = rng.random()
    if style < 0.35:
        name = f"{last}^{first}"
        if rng.random() < 0.3:
            name += f"^{rng.choice(string.ascii_uppercase)}"
    elif style < 0.55:
        name = f"{last}, {first}"
    elif style < 0.75:
        name = f"{first} {last}"
    else:
        name = f"{last.title()}, {first.title()}"
    if rng.random() < 0.15:
        name = name.lower().title()
    return name


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
        return rng.choice((f"{date} {time}", date, time, f"{date}  {time}", f"Study: {date}"))
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
