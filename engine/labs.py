"""The lab feature schema: which lab results MIRAGE's FiLM layers see, and how they are encoded.

Versioned and keyed by LOINC code. Each feature is converted to one canonical UCUM unit, then
normalised (``log1p`` for right-skewed markers such as troponin, then z-scored against a
reference population) so values are O(1). A lab that is absent is encoded as value 0 with mask 0;
the model's FiLM generators are bias-free so an all-missing lab vector gives exactly the identity
modulation (gamma = 1, beta = 0).

Reference ranges: hs-cTnI 99th percentile ~26 ng/L (Abbott Architect), hs-cTnT 14 ng/L (Roche
Elecsys), CK-MB upper limit ~5 ng/mL, D-dimer cut-off 500 ng/mL FEU, WBC 4-11 x10^3/uL,
potassium 3.5-5.0 mmol/L, creatinine 0.6-1.2 mg/dL (ESC 2020 NSTE-ACS guideline, 4th Universal
Definition of MI).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from engine.errors import LabError

LAB_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class LabFeature:
    """One lab feature: LOINC code, canonical unit, accepted units with factors, normalisation."""

    loinc: str
    name: str
    unit: str  # canonical UCUM unit
    conversions: tuple[tuple[str, float], ...]  # (unit, factor to canonical)
    log: bool  # log1p before z-scoring
    mean: float  # of the (possibly log1p-ed) canonical value
    std: float
    upper_reference: float  # 99th percentile / upper reference limit, canonical unit
    plausible_max: float  # above this a value is rejected as implausible

    def to_canonical(self, value: float, unit: str) -> float:
        """Convert ``value`` in ``unit`` to the canonical unit, or raise :class:`LabError`."""
        if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise LabError(f"{self.name} ({self.loinc}): value {value!r} is not a finite number")
        u = unit.strip()
        for name, factor in ((self.unit, 1.0), *self.conversions):
            if u == name or u.lower() == name.lower():
                out = float(value) * factor
                if out < 0 or out > self.plausible_max:
                    raise LabError(
                        f"{self.name} ({self.loinc}): value {value!r} {unit} is outside the plausible range "
                        f"0..{self.plausible_max} {self.unit}"
                    )
                return out
        accepted = [self.unit] + [n for n, _ in self.conversions]
        raise LabError(f"{self.name} ({self.loinc}): unit {unit!r} is not one of {accepted}")

    def normalise(self, canonical_value: float) -> float:
        v = math.log1p(canonical_value) if self.log else canonical_value
        return (v - self.mean) / self.std


LAB_FEATURES: tuple[LabFeature, ...] = (
    LabFeature("89579-7", "hs-troponin I", "ng/L", (("pg/mL", 1.0), ("ng/mL", 1000.0), ("ug/L", 1000.0)), True, 1.6, 1.4, 26.0, 1e6),
    LabFeature("67151-1", "hs-troponin T", "ng/L", (("pg/mL", 1.0), ("ng/mL", 1000.0), ("ug/L", 1000.0)), True, 2.0, 1.2, 14.0, 1e6),
    LabFeature("13969-1", "CK-MB", "ng/mL", (("ug/L", 1.0),), True, 1.1, 0.8, 5.0, 1e4),
    LabFeature("48065-7", "D-dimer", "ng/mL{FEU}",
               (("ng/mL", 1.0), ("ug/mL{FEU}", 1000.0), ("mg/L{FEU}", 1000.0), ("ug/mL", 1000.0), ("mg/L", 1000.0)),
               True, 5.8, 0.9, 500.0, 1e6),
    LabFeature("6690-2", "WBC", "10*3/uL", (("10*9/L", 1.0), ("10^9/L", 1.0), ("10^3/uL", 1.0), ("K/uL", 1.0)), False, 7.5, 2.5, 11.0, 1000.0),
    LabFeature("2823-3", "potassium", "mmol/L", (("meq/L", 1.0), ("mEq/L", 1.0)), False, 4.2, 0.45, 5.0, 20.0),
    LabFeature("2160-0", "creatinine", "mg/dL", (("umol/L", 1.0 / 88.42), ("µmol/L", 1.0 / 88.42)), True, 0.65, 0.25, 1.2, 40.0),
)

LAB_BY_LOINC: dict[str, LabFeature] = {f.loinc: f for f in LAB_FEATURES}
LAB_DIM = len(LAB_FEATURES)


def lab_feature(loinc: str) -> LabFeature:
    """Look up a feature by LOINC code, or raise :class:`LabError` naming the code."""
    try:
        return LAB_BY_LOINC[loinc.strip()]
    except (KeyError, AttributeError):
        raise LabError(f"unknown LOINC code {loinc!r}; known: {sorted(LAB_BY_LOINC)}") from None


def encode_labs(labs: Mapping[str, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """Encode canonical-unit lab values keyed by LOINC into ``(values, mask)``, both ``(D_lab,)``.

    Unknown codes are ignored (the schema is the model's contract); missing features get value 0
    and mask 0.
    """
    values = np.zeros(LAB_DIM, dtype=np.float32)
    mask = np.zeros(LAB_DIM, dtype=np.float32)
    if labs:
        for i, feat in enumerate(LAB_FEATURES):
            v = labs.get(feat.loinc)
            if v is not None and math.isfinite(v):
                values[i] = feat.normalise(float(v))
                mask[i] = 1.0
    return values, mask


def schema_dict() -> dict:
    """The schema as plain data, stored in checkpoints so a stale schema is detected."""
    return {
        "version": LAB_SCHEMA_VERSION,
        "features": [
            {"loinc": f.loinc, "name": f.name, "unit": f.unit, "log": f.log, "mean": f.mean, "std": f.std}
            for f in LAB_FEATURES
        ],
    }
