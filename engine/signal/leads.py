"""Map ECG leads by name to the 12 standard leads, deriving the limb leads a device did not send.

Lead names follow the standard 12-lead ECG (AHA/ACC/HRS 2007 recommendations for the
standardization of the ECG, part I). Devices spell them in many ways ("AVR", "aVR", "MLII",
"DII", "lead II", "V1 "); :func:`canonical_lead` maps all of these to :data:`LEADS` names.

Names are matched case-insensitively ("avr", "v1" as in PhysioNet's PTB Diagnostic ECG Database),
with "Lead"/"ECG" prefixes and parenthesised qualifiers dropped ("Lead I (Einthoven)", the DICOM
code meaning). Einthoven's and Goldberger's laws give the four dependent limb leads from any two of
I, II, III: III = II - I, aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2. Monitors that send
the eight independent leads (I, II, V1-V6) are therefore complete.

Signals that are no standard lead (Frank leads ``vx``/``vy``/``vz``, respiration, pacing, SpO2)
are *extra*: :func:`map_leads` lists them, and readers drop them with one log line per record and
an ``ignored:NAME`` quality flag (:func:`ignored_flags`). Only a record from which the 12 leads can
be neither taken nor derived is rejected, with the missing leads named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engine.config import LEADS
from engine.errors import SignalError

# Upper-cased, space-free spellings -> standard name.
_ALIASES: dict[str, str] = {
    **{name.upper(): name for name in LEADS},
    "MLI": "I", "MLII": "II", "MLIII": "III",
    "DI": "I", "DII": "II", "DIII": "III", "D1": "I", "D2": "II", "D3": "III",
    "L1": "I", "L2": "II", "L3": "III", "LI": "I", "LII": "II", "LIII": "III",
    "1": "I", "2": "II", "3": "III",
    "AVR": "aVR", "AVL": "aVL", "AVF": "aVF", "VR": "aVR", "VL": "aVL", "VF": "aVF",
    **{f"C{i}": f"V{i}" for i in range(1, 7)},
}
_PREFIX = re.compile(r"^(MDC[\s_]ECG[\s_]LEAD|LEAD|ECG|EKG)[\s_\-]*", re.IGNORECASE)
_QUALIFIER = re.compile(r"\(.*?\)")  # "(Einthoven)", "(Goldberger)", "(Wilson)"
IGNORED_PREFIX = "ignored:"

INDEPENDENT_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
LIMB_DERIVED: tuple[str, ...] = ("III", "aVR", "aVL", "aVF")


def canonical_lead(name: str) -> str:
    """Return the standard name of ``name`` ("AVR" -> "aVR", "MLII" -> "II", "lead V1" -> "V1").

    Raises:
        SignalError: the name is not a known spelling of a standard lead.
    """
    key = _PREFIX.sub("", _QUALIFIER.sub("", str(name)).strip())
    key = re.sub(r"[\s_\-]+", "", key).upper()
    try:
        return _ALIASES[key]
    except KeyError:
        raise SignalError(f"unknown lead name {name!r}; expected one of {list(LEADS)} or a common alias") from None


def derive_limb_leads(i: np.ndarray, ii: np.ndarray) -> dict[str, np.ndarray]:
    """III, aVR, aVL, aVF from leads I and II (Einthoven and Goldberger)."""
    return {"III": ii - i, "aVR": -(i + ii) / 2.0, "aVL": i - ii / 2.0, "aVF": ii - i / 2.0}


def is_standard_lead(name: str) -> bool:
    """True when ``name`` is a spelling of one of the 12 standard leads."""
    try:
        canonical_lead(name)
    except SignalError:
        return False
    return True


@dataclass(frozen=True)
class LeadMap:
    """Where each of the 12 standard leads of a source comes from.

    Attributes:
        rows: standard lead -> row index in the source, for the leads the source has.
        derived: standard leads the source lacks but that follow from I/II/III.
        missing: standard leads that can be neither found nor derived.
        extra: the source's names that are no standard lead, in source order (ignored).
        names: the source's names as given.
    """

    rows: dict[str, int]
    derived: tuple[str, ...]
    missing: tuple[str, ...]
    extra: tuple[str, ...]
    names: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """All 12 leads present or derivable."""
        return not self.missing

    @property
    def kept(self) -> tuple[int, ...]:
        """Source row indices of the standard leads, in source order (extras dropped)."""
        return tuple(sorted(self.rows.values()))


def map_leads(names: Sequence[str], *, allow_missing: bool = False) -> LeadMap:
    """Map a source's signal names to the 12 standard leads, setting extra signals aside.

    Args:
        names: the signal names as the source spells them, one per row.
        allow_missing: return a map with ``missing`` leads instead of raising.

    Raises:
        SignalError: a lead appears twice, or (unless ``allow_missing``) leads are missing and
            cannot be derived; the message names them and the extra signals that were ignored.
    """
    rows: dict[str, int] = {}
    extra: list[str] = []
    for k, name in enumerate(names):
        if not is_standard_lead(name):
            extra.append(str(name))
            continue
        std = canonical_lead(name)
        if std in rows:
            raise SignalError(f"lead {std!r} appears twice in {list(names)}")
        rows[std] = k
    have = set(rows)
    if len(have & {"I", "II", "III"}) >= 2:  # any two of I, II, III give the third and the augmented leads
        have |= {"I", "II", *LIMB_DERIVED}
    derived = tuple(n for n in LEADS if n in have and n not in rows)
    missing = tuple(n for n in LEADS if n not in have)
    if missing and not allow_missing:
        ignored = f" (extra signals ignored: {extra})" if extra else ""
        raise SignalError(f"leads {list(missing)} are missing and cannot be derived from {list(names)}{ignored}")
    return LeadMap(rows, derived, missing, tuple(extra), tuple(str(n) for n in names))


def ignored_flags(extra: Sequence[str]) -> list[str]:
    """Quality flags naming ignored extra signals: ``["ignored:vx", "ignored:vy"]``."""
    return [f"{IGNORED_PREFIX}{name}" for name in extra]


def to_standard_leads(signal: np.ndarray, leads: Sequence[str], *, allow_missing: bool = False,
                      ignore_extra: bool = False) -> np.ndarray:
    """Reorder a multi-lead signal to the 12 standard leads, deriving missing limb leads.

    Args:
        signal: (L, S) samples, one row per entry of ``leads`` (or (L, ...): lead first, any
            trailing shape, e.g. (L, B, S) for a batch of windows; every step is element-wise).
        leads: the lead names as the source spells them.
        allow_missing: fill leads that can be neither found nor derived with NaN (flagged
            ``missing:`` by the quality checks) instead of raising.
        ignore_extra: drop rows whose name is no standard lead (see :func:`map_leads`) instead
            of raising.

    Returns:
        (12, S) (or (12, ...)) float64 in :data:`LEADS` order.

    Raises:
        SignalError: wrong shape, unknown (unless ``ignore_extra``) or duplicated lead names, or
            leads missing.
    """
    arr = np.asarray(signal, dtype=np.float64)
    if arr.ndim < 2 or arr.shape[0] != len(leads):
        raise SignalError(f"signal of shape {arr.shape} does not match {len(leads)} lead names {list(leads)}")
    if not ignore_extra:
        for name in leads:
            canonical_lead(name)  # raises naming the first unknown name
    lead_map = map_leads(leads, allow_missing=allow_missing)
    rows = {name: arr[k] for name, k in lead_map.rows.items()}
    # Any two of I, II, III give the third (III = II - I).
    if "I" not in rows and "II" in rows and "III" in rows:
        rows["I"] = rows["II"] - rows["III"]
    if "II" not in rows and "I" in rows and "III" in rows:
        rows["II"] = rows["I"] + rows["III"]
    if "I" in rows and "II" in rows:
        for name, values in derive_limb_leads(rows["I"], rows["II"]).items():
            rows.setdefault(name, values)
    out = np.full((len(LEADS),) + arr.shape[1:], np.nan)
    for k, name in enumerate(LEADS):
        if name in rows:
            out[k] = rows[name]
    return out
