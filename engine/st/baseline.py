"""Per-bed ST reference: the patient's own ST level over the first clean minutes after admission.

ST monitoring alarms on *change from the patient's baseline*, not on absolute ST (AHA scientific
statement "Practice standards for electrocardiographic monitoring in hospital settings", Drew et
al., Circulation 110, 2004, and its 2017 update, Sandau et al., Circulation 136: alarm at 1-2 mm
of change from a baseline taken when the patient is settled). IEC 60601-2-27 requires an ST
monitor to show the reference it compares against and to let the user re-learn it.

Rules (pure core: window times are the clock, no I/O):

* admission is the first window of a new ``patient_id`` in a bed (a new patient resets);
  :meth:`StBaseline.reset` re-learns on request (e.g. after reperfusion);
* the reference of a lead is the median of its J+60 (and J+80) values over the measurable windows
  of the first ``learn_s`` after admission; a lead with fewer than ``min_windows`` values keeps
  learning past ``learn_s`` until it has them, so a lead that was off at admission still gets one;
* windows flagged unmeasurable (too few beats, wide QRS, paced, ...) and flagged leads never enter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.config import LEADS
from engine.errors import ConfigError, StateError
from engine.st.measure import StMeasurement

_N = len(LEADS)


@dataclass(frozen=True)
class StBaselineSettings:
    """How the reference is learned.

    Attributes:
        learn_s: the reference is learned over this long after admission (window time).
        min_windows: a lead needs at least this many measurable windows for its reference.
    """

    learn_s: float = 120.0
    min_windows: int = 10

    def __post_init__(self) -> None:
        if not (self.learn_s >= 0 and self.min_windows >= 1):
            raise ConfigError(f"learn_s={self.learn_s} must be >= 0 and min_windows={self.min_windows} >= 1")


@dataclass
class _Bed:
    patient_id: str
    admitted_ns: int
    values60: list[np.ndarray] = field(default_factory=list)  # (12,) per measurable window, NaN where flagged
    values80: list[np.ndarray] = field(default_factory=list)
    ref60: np.ndarray = field(default_factory=lambda: np.full(_N, np.nan))
    ref80: np.ndarray = field(default_factory=lambda: np.full(_N, np.nan))


class StBaseline:
    """The ST reference of every bed, learned from its windows' :class:`StMeasurement`."""

    def __init__(self, settings: StBaselineSettings = StBaselineSettings()) -> None:
        self.settings = settings
        self._beds: dict[str, _Bed] = {}

    def _bed(self, bed_id: str, patient_id: str, window_end_ns: int) -> _Bed:
        b = self._beds.get(bed_id)
        if b is None or b.patient_id != patient_id:
            b = _Bed(patient_id=patient_id, admitted_ns=int(window_end_ns))
            self._beds[bed_id] = b
        return b

    def update(self, bed_id: str, patient_id: str, m: StMeasurement, window_end_ns: int) -> np.ndarray:
        """Feed one window's measurement; return the bed's J+60 reference, (12,) uV, NaN where not yet learned."""
        b = self._bed(bed_id, patient_id, window_end_ns)
        learning = np.isnan(b.ref60)
        if not learning.any() or not m.measurable:
            return b.ref60.copy()
        ok = m.lead_ok
        b.values60.append(np.where(ok, m.st_j60_uv, np.nan))
        b.values80.append(np.where(ok & np.isfinite(m.st_j80_uv), m.st_j80_uv, np.nan))
        if window_end_ns - b.admitted_ns >= self.settings.learn_s * 1e9:
            v60, v80 = np.stack(b.values60), np.stack(b.values80)  # (N, 12)
            ready = learning & (np.sum(np.isfinite(v60), axis=0) >= self.settings.min_windows)
            if ready.any():
                b.ref60[ready] = np.nanmedian(v60[:, ready], axis=0)
                b.ref80[ready] = np.nanmedian(v80[:, ready], axis=0)
            if not np.isnan(b.ref60).any():
                b.values60.clear()  # learned: nothing more to keep
                b.values80.clear()
        return b.ref60.copy()

    def reference(self, bed_id: str, point: str = "j60") -> np.ndarray:
        """(12,) reference in uV at ``point`` ("j60" or "j80"); all NaN for an unknown bed."""
        b = self._beds.get(bed_id)
        if b is None:
            return np.full(_N, np.nan)
        return (b.ref60 if point == "j60" else b.ref80).copy()

    def delta(self, bed_id: str, m: StMeasurement, point: str = "j60") -> np.ndarray:
        """(12,) ST change from the reference in uV; NaN where there is no reference or the lead is flagged."""
        now = m.st_j60_uv if point == "j60" else m.st_j80_uv
        return np.where(m.lead_ok, now - self.reference(bed_id, point), np.nan)

    def learned(self, bed_id: str) -> bool:
        """True when every lead of the bed has a reference."""
        b = self._beds.get(bed_id)
        return b is not None and not np.isnan(b.ref60).any()

    def reset(self, bed_id: str, window_end_ns: int) -> None:
        """Re-learn the bed's reference from ``window_end_ns`` on (same patient)."""
        b = self._beds.get(bed_id)
        if b is not None:
            self._beds[bed_id] = _Bed(patient_id=b.patient_id, admitted_ns=int(window_end_ns))

    def forget(self, bed_id: str) -> None:
        """Drop a bed (discharged, or its partition moved to another worker)."""
        self._beds.pop(bed_id, None)

    def export_state(self, bed_id: str) -> dict | None:
        """The bed's state as JSON-able data (None for an unknown bed), for a restarted worker."""
        b = self._beds.get(bed_id)
        if b is None:
            return None

        def arr(a: np.ndarray) -> list[float | None]:
            return [None if np.isnan(v) else float(v) for v in a]

        return {"patient_id": b.patient_id, "admitted_ns": b.admitted_ns, "ref60": arr(b.ref60), "ref80": arr(b.ref80),
                "values60": [arr(v) for v in b.values60], "values80": [arr(v) for v in b.values80]}

    def import_state(self, bed_id: str, data: dict) -> None:
        """Restore :meth:`export_state` output.

        Raises:
            StateError: malformed state (names the bad field).
        """
        def arr(v: object) -> np.ndarray:
            a = np.array([np.nan if x is None else float(x) for x in v], dtype=np.float64)  # type: ignore[union-attr]
            if a.shape != (_N,):
                raise ValueError(f"expected {_N} values, got {a.shape}")
            return a

        try:
            b = _Bed(patient_id=str(data["patient_id"]), admitted_ns=int(data["admitted_ns"]), ref60=arr(data["ref60"]), ref80=arr(data["ref80"]),
                     values60=[arr(v) for v in data["values60"]], values80=[arr(v) for v in data["values80"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"bad saved ST baseline state: {exc!r}") from None
        self._beds[bed_id] = b
