"""Map ECG leads by name to the 12 standard leads, deriving the limb leads a device did not send.

Lead names follow the standard 12-lead ECG (AHA/ACC/HRS 2007 recommendations for the
standardization of the ECG, part I). Devices spell them in many ways ("AVR", "aVR", "MLII",
"DII", "lead II", "V1 "); :func:`canonical_lead` maps all of these to :data:`LEADS` names.

Einthoven's and Goldberger's laws give the four dependent limb leads from any two of I, II, III:
III = II - I, aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2. Monitors that send the eight
independent leads (I, II, V1-V6) are therefore complete.
"""

from __future__ import annotations

import re
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
_PREFIX = re.compile(r"^(LEAD|ECG|EKG)[\s_\-]*", re.IGNORECASE)

INDEPENDENT_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
LIMB_DERIVED: tuple[str, ...] = ("III", "aVR", "aVL", "aVF")


def canonical_lead(name: str) -> str:
    """Return the standard name of ``name`` ("AVR" -> "aVR", "MLII" -> "II", "lead V1" -> "V1").

    Raises:
        SignalError: the name is not a known spelling of a standard lead.
    """
    key = _PREFIX.sub("", str(name).strip())
    key = re.sub(r"[\s_\-]+", "", key).upper()
    try:
        return _ALIASES[key]
    except KeyError:
        raise SignalError(f"unknown lead name {name!r}; expected one of {list(LEADS)} or a common alias") from None


def derive_limb_leads(i: np.ndarray, ii: np.ndarray) -> dict[str, np.ndarray]:
    """III, aVR, aVL, aVF from leads I and II (Einthoven and Goldberger)."""
    return {"III": ii - i, "aVR": -(i + ii) / 2.0, "aVL": i - ii / 2.0, "aVF": ii - i / 2.0}


def to_standard_leads(signal: np.ndarray, leads: Sequence[str], *, allow_missing: bool = False) -> np.ndarray:
    """Reorder a multi-lead signal to the 12 standard leads, deriving missing limb leads.

    Args:
        signal: (L, S) samples, one row per entry of ``leads`` (or (L, ...): lead first, any
            trailing shape, e.g. (L, B, S) for a batch of windows; every step is element-wise).
        leads: the lead names as the source spells them.
        allow_missing: fill leads that can be neither found nor derived with NaN (flagged
            ``missing:`` by the quality checks) instead of raising.

    Returns:
        (12, S) (or (12, ...)) float64 in :data:`LEADS` order.

    Raises:
        SignalError: wrong shape, unknown or duplicated lead names, or leads missing.
    """
    arr = np.asarray(signal, dtype=np.float64)
    if arr.ndim < 2 or arr.shape[0] != len(leads):
        raise SignalError(f"signal of shape {arr.shape} does not match {len(leads)} lead names {list(leads)}")
    rows: dict[str, np.ndarray] = {}
    for row, name in zip(arr, leads):
        std = canonical_lead(name)
        if std in rows:
            raise SignalError(f"lead {std!r} appears twice in {list(leads)}")
        rows[std] = row
    # Any two of I, II, III give the third (III = II - I).
    if "I" not in rows and "II" in rows and "III" in rows:
        rows["I"] = rows["II"] - rows["III"]
    if "II" not in rows and "I" in rows and "III" in rows:
        rows["II"] = rows["I"] + rows["III"]
    if "I" in rows and "II" in rows:
        for name, values in derive_limb_leads(rows["I"], rows["II"]).items():
            rows.setdefault(name, values)
    missing = [name for name in LEADS if name not in rows]
    if missing and not allow_missing:
        raise SignalError(f"leads {missing} are missing and cannot be derived from {list(leads)}")
    out = np.full((len(LEADS),) + arr.shape[1:], np.nan)
    for k, name in enumerate(LEADS):
        if name in rows:
            out[k] = rows[name]
    return out
