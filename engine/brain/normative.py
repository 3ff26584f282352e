"""Normative comparison of brain volumetrics: z-scores by age and sex, an atrophy grade.

    age_years_from_header(patient_age, birth_date, study_date) -> float | None
    sex_code(value) -> "F" | "M" | None
    age_band(age_years) -> "20-29" ... "80+"
    atrophy_assessment(volumetrics, tissue_labels, *, age_band, sex, ...) -> dict

Decision support, not a diagnosis: the reference values come from published cohorts whose
scanners, sequences and segmentation methods differ from this one (the BPF of one healthy
group differs by 0.07 between methods in Vagberg et al. 2016), so a z-score says how unusual a
value would be in that cohort, not that the patient has a disease. docs/volumetrics.md holds
the table, the sources and how each number was taken from them.

Graded measure: the brain parenchymal fraction (BPF). Its reference mean by decade is one
minus the intracranial CSF fraction of Yamada et al. 2023 (abstract: 18.7 % in the 20s,
33.7 % at 80 and over, rising linearly), interpolated linearly over the six decade steps
between; its SD is that paper's Table 1 SD of intracranial CSF volume over its mean
intracranial volume (64.9 / 1443.3 mL = 0.045, the whole cohort of 21-92 years: wider than
within one decade, so z-scores err towards normal). The same mean serves both sexes: Ge et al.
2002 found no significant sex difference in fractional grey or white matter volume, and
Yamada's Table 1 female and male CSF fractions (21.8 %, 23.3 %) differ by 0.15 SD once their
3-year age gap is allowed for. Intracranial volume has sex-specific references (Yamada Table 1)
and is shown as a plausibility check, not graded: head size is not atrophy.

Grey and white matter fractions and the grey/white ratio are shown without a z-score: the
published tables at hand measure cortical grey and cerebral white matter only, while this
model's classes include deep and cerebellar grey matter and the brainstem, so the comparison
would be wrong by construction.

Grade: the lowest z of the graded measures, one-sided (only a smaller brain counts):
z >= -1.5 none; -2.0 <= z < -1.5 mild; -3.0 <= z < -2.0 moderate; z < -3.0 severe.
Side: hemispheric asymmetry |AI| > ASYMMETRY_THRESHOLD (0.05, the project's choice; no
normative asymmetry table is used) flags the smaller side.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GRADES = ("none", "mild", "moderate", "severe")
# (grade, z strictly below which it applies), from the most severe down.
THRESHOLDS = (("severe", -3.0), ("moderate", -2.0), ("mild", -1.5))
ASYMMETRY_THRESHOLD = 0.05
DEFAULT_AGE_BAND = "40-49"
CAVEAT = (
    "Decision support, not a diagnosis: z-scores compare this scan with published healthy "
    "cohorts measured with other scanners and methods, and the model's own sensitivity to "
    "atrophy (its card) is limited: a grade of none does not exclude atrophy. Review the "
    "images; correlate clinically."
)

SOURCES = {
    "yamada2023": (
        "Yamada S, Otani T, Ii S, Kawano H, Nozaki K, Wada S, Oshima M, Watanabe Y. "
        "Aging-related volume changes in the brain and cerebrospinal fluid using artificial "
        "intelligence-automated segmentation. Eur Radiol. 2023;33(10):7099-7112. "
        "doi:10.1007/s00330-023-09632-x"
    ),
    "ge2002": (
        "Ge Y, Grossman RI, Babb JS, Rabin ML, Mannon LJ, Kolson DL. Age-related total gray "
        "matter and white matter changes in normal adult brain. Part I: volumetric MR imaging "
        "analysis. AJNR Am J Neuroradiol. 2002;23(8):1327-1333"
    ),
    "vagberg2016": (
        "Vagberg M, Ambarki K, Lindqvist T, Birgander R, Svenningsson A. Brain parenchymal "
        "fraction in an age-stratified healthy population - determined by MRI using manual "
        "segmentation and three automated segmentation methods. J Neuroradiol. "
        "2016;43(6):384-391. doi:10.1016/j.neurad.2016.08.002"
    ),
}

AGE_BANDS = ("20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80+")
# Intracranial CSF fraction: 0.187 (20s) to 0.337 (80+), Yamada 2023 abstract, linear.
_CSF_20S, _CSF_80S = 0.187, 0.337
BPF_MEAN = {
    band: round(1.0 - (_CSF_20S + k * (_CSF_80S - _CSF_20S) / 6), 4)
    for k, band in enumerate(AGE_BANDS)
}
BPF_SD = round(64.9 / 1443.3, 4)  # Yamada 2023 Table 1: intracranial CSF SD / mean ICV
ICV_ML = {  # Yamada 2023 Table 1, mean and SD, mL
    "F": (1393.2, 91.2),
    "M": (1538.2, 137.3),
    None: (1443.3, 129.0),
}


@dataclass(frozen=True)
class Reference:
    mean: float
    sd: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "sd": self.sd,
            "range": [round(self.mean - 1.96 * self.sd, 4), round(self.mean + 1.96 * self.sd, 4)],
            "source": self.source,
        }


def bpf_reference(band: str) -> Reference:
    return Reference(
        BPF_MEAN[band],
        BPF_SD,
        f"{SOURCES['yamada2023']} (abstract: CSF 18.7 % of intracranial volume in the 20s, "
        "33.7 % at 80+, linear by decade; SD from Table 1); same for both sexes (Ge 2002)",
    )


def icv_reference(sex: str | None) -> Reference:
    mean, sd = ICV_ML[sex if sex in ("F", "M") else None]
    who = {"F": "women", "M": "men"}.get(sex or "", "all")
    return Reference(mean, sd, f"{SOURCES['yamada2023']} (Table 1, {who})")


_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$", re.IGNORECASE)
_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def _date(value: Any) -> dt.date | None:
    text = str(value or "").strip()
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None


def age_years_from_header(
    patient_age: Any = None, birth_date: Any = None, study_date: Any = None
) -> float | None:
    """Age in years from Patient's Age (AS: "045Y", "018M", "003W", "010D"), else from
    Patient's Birth Date and the Study Date; None when neither gives one."""
    match = _AGE.match(str(patient_age or ""))
    if match:
        return int(match.group(1)) * _UNIT_YEARS[match.group(2).upper()]
    born, studied = _date(birth_date), _date(study_date)
    if born and studied and studied >= born:
        return (studied - born).days / 365.25
    return None


def sex_code(value: Any) -> str | None:
    """ "F" or "M" from Patient's Sex (or a doctor's entry); None for O, empty or unknown."""
    text = str(value or "").strip().upper()
    return text[0] if text[:1] in ("F", "M") else None


def age_band(age_years: float) -> str:
    """The decade band of the reference table; under 20 is given "20-29" (the caller warns)."""
    if age_years >= 80:
        return "80+"
    decade = max(2, int(age_years // 10))
    return f"{decade * 10}-{decade * 10 + 9}"


def severity(z: float | None) -> str:
    if z is None:
        return "none"
    for grade, below in THRESHOLDS:
        if z < below:
            return grade
    return "none"


def _z(value: float, ref: Reference) -> float:
    return round((value - ref.mean) / ref.sd, 2)


def _smaller_side(ai: float | None) -> str | None:
    """The side to flag for an asymmetry index beyond the threshold (positive: left larger)."""
    if ai is None or abs(ai) <= ASYMMETRY_THRESHOLD:
        return None
    return "right" if ai > 0 else "left"


def atrophy_assessment(
    volumetrics: Mapping[str, Any],
    tissue_labels: Mapping[str, int],
    *,
    band: str | None,
    sex: str | None,
    age_source: str = "dicom",
    sex_source: str = "dicom",
) -> dict[str, Any]:
    """Z-scores, the grade and the flagged regions for `volumetrics` (brain_volumetrics(...)
    .to_dict()); `tissue_labels` maps csf/grey_matter/white_matter to class indices. Without
    a `band` the DEFAULT_AGE_BAND is used and a warning says so."""
    warnings = []
    if band is None:
        band, age_source = DEFAULT_AGE_BAND, "default"
        warnings.append(
            f"Age unknown (not in the DICOM header, not given with the request): z-scores "
            f"use the {DEFAULT_AGE_BAND} reference; give the age to compare rightly."
        )
    if band not in AGE_BANDS:
        raise ValueError(f"unknown age band {band!r}")
    if sex is None:
        sex_source = "unknown"
        warnings.append("Sex unknown: the intracranial volume is compared with both sexes.")
    bpf_ref, icv_ref = bpf_reference(band), icv_reference(sex)
    bpf, icv = float(volumetrics["bpf"]), float(volumetrics["icv_ml"])
    measures: dict[str, dict[str, Any]] = {
        "bpf": {
            "value": bpf,
            "unit": "fraction of ICV",
            "z": _z(bpf, bpf_ref),
            "graded": True,
            "reference": bpf_ref.to_dict(),
        },
        "icv": {
            "value": icv,
            "unit": "mL",
            "z": _z(icv, icv_ref),
            "graded": False,
            "reference": icv_ref.to_dict(),
        },
    }
    unscored = {
        "gm_fraction": ("gm_fraction", "fraction of ICV"),
        "wm_fraction": ("wm_fraction", "fraction of ICV"),
        "grey_white_ratio": ("grey_white_ratio", "ratio"),
    }
    for name, (key, unit) in unscored.items():
        measures[name] = {
            "value": volumetrics.get(key),
            "unit": unit,
            "z": None,
            "graded": False,
            "reference": None,
        }
    graded = [m["z"] for m in measures.values() if m["graded"] and m["z"] is not None]
    lowest = min(graded) if graded else None
    grade = severity(lowest)

    asymmetry = volumetrics.get("asymmetry") or {}
    flagged: list[dict[str, Any]] = []
    if grade != "none":
        side = _smaller_side(asymmetry.get("parenchyma")) or "both"
        for tissue in ("grey_matter", "white_matter"):
            flagged.append(
                {
                    "label": int(tissue_labels[tissue]),
                    "name": tissue,
                    "side": side,
                    "measure": "bpf",
                    "z": measures["bpf"]["z"],
                }
            )
    for tissue in ("grey_matter", "white_matter"):
        smaller = _smaller_side(asymmetry.get(tissue))
        if smaller:
            flagged.append(
                {
                    "label": int(tissue_labels[tissue]),
                    "name": tissue,
                    "side": smaller,
                    "measure": f"asymmetry_{tissue}",
                    "z": None,
                    "value": asymmetry.get(tissue),
                    "threshold": ASYMMETRY_THRESHOLD,
                }
            )
    return {
        "grade": grade,
        "lowest_z": lowest,
        "measures": measures,
        "flagged": flagged,
        "age_band": band,
        "sex": sex or "unknown",
        "age_source": age_source,
        "sex_source": sex_source,
        "thresholds": dict(THRESHOLDS),
        "asymmetry_threshold": ASYMMETRY_THRESHOLD,
        "warnings": warnings,
        "caveat": CAVEAT,
    }
