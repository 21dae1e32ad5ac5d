"""Lab selection, pure: which of a patient's stored results the model gets for one window.

A result observed more than ``lab_staleness_s`` before the window's end is left out and reported
as an advisory (``stale_lab:89579-7``); values are encoded by ``engine.labs`` (LOINC-keyed schema).
The Redis store they come from is ``stream.worker.store``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from engine.labs import LAB_FEATURES, encode_labs, lab_feature

log = logging.getLogger(__name__)


@dataclass
class PatientLabs:
    """Labs of one patient as given to the model for one window.

    Attributes:
        values: (D_lab,) encoded values (0 where missing).
        mask: (D_lab,) 1 where present and fresh.
        used: the labs given to the model: ``{loinc, name, value, unit, age_s}``.
        advisories: e.g. ``stale_lab:89579-7`` for results too old to use.
        available: False when the lab store could not be read.
    """

    values: np.ndarray
    mask: np.ndarray
    used: list[dict[str, Any]] = field(default_factory=list)
    advisories: list[str] = field(default_factory=list)
    available: bool = True


def empty_labs(available: bool = True) -> PatientLabs:
    values, mask = encode_labs(None)
    return PatientLabs(values, mask, [], [] if available else ["labs_unavailable"], available)


def select_labs(stored: Mapping[str, str | bytes], at_ns: int, staleness_s: float) -> PatientLabs:
    """Pure: turn a patient's stored hash into model inputs at time ``at_ns``.

    Results observed more than ``staleness_s`` before ``at_ns`` are excluded and reported as
    advisories; malformed entries are skipped. Ages are measured from the observation time.
    """
    canonical: dict[str, float] = {}
    used: list[dict[str, Any]] = []
    advisories: list[str] = []
    for raw_loinc, raw in stored.items():
        loinc = raw_loinc.decode() if isinstance(raw_loinc, bytes) else str(raw_loinc)
        try:
            obj = json.loads(raw)
            feat = lab_feature(loinc)
            value = float(obj["v"])
            observed = int(obj["o"])
        except (ValueError, KeyError, TypeError):
            log.warning("skipping malformed lab cache entry for LOINC %r", loinc)
            continue
        if not math.isfinite(value):
            continue
        age_s = (at_ns - observed) / 1e9
        if age_s > staleness_s:
            advisories.append(f"stale_lab:{loinc}")
            continue
        canonical[loinc] = value
        used.append({"loinc": loinc, "name": feat.name, "value": value, "unit": feat.unit, "age_s": round(age_s, 1)})
    values, mask = encode_labs(canonical)
    order = {f.loinc: i for i, f in enumerate(LAB_FEATURES)}
    used.sort(key=lambda d: order.get(d["loinc"], 99))
    return PatientLabs(values, mask, used, sorted(advisories), True)
