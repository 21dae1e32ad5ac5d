"""Per-bed ST-change alarm: ST moved from the bed's reference in two contiguous leads, sustained.

Criteria follow the AHA practice standards for ECG monitoring (Drew et al., Circulation 110,
2004; Sandau et al., Circulation 136, 2017): alarm when ST deviates 1-2 mm (100-200 uV) from the
patient's baseline in two or more *contiguous* leads for at least a minute; contiguity as in the
Fourth Universal Definition of MI (Thygesen et al., Circulation 138, 2018): leads facing the same
territory, inferior II/III/aVF, lateral I/aVL/V5/V6, and neighbouring precordial leads V1..V6.
aVR stands alone. Both leads of a pair must move the same way (both up or both down).

Alarm behaviour mirrors the MI policy (``stream/policy.py``; IEC 60601-1-8 practice): the
condition must hold on every measurable window for ``sustain_s`` to start; an episode ends only
after no contiguous pair has deviated by ``end_uv`` (below ``threshold_uv``: hysteresis) for
``end_s``; windows that cannot be measured neither start nor end anything, but a gap longer than
``max_gap_s`` restarts the sustain clock. Level 2 at ``escalate_uv`` (``update`` event), back to
level 1 below ``escalate_uv - deescalate_margin_uv``. Episode ids are deterministic (the same
formula as ``stream.core.schema.make_alert_id``) so a replay re-emits the same ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from engine.config import LEADS
from engine.errors import ConfigError, StateError

KIND_ST_CHANGE = "st_change"

# Territories of contiguous leads; within a group every pair is contiguous, except the precordial
# row, where only neighbours are (V1-V2, ..., V5-V6).
LEAD_GROUPS: dict[str, tuple[str, ...]] = {"inferior": ("II", "III", "aVF"), "lateral": ("I", "aVL", "V5", "V6")}
PRECORDIAL: tuple[str, ...] = ("V1", "V2", "V3", "V4", "V5", "V6")


def _pairs() -> tuple[tuple[int, int], ...]:
    out: set[tuple[int, int]] = set()
    for leads in LEAD_GROUPS.values():
        idx = [LEADS.index(n) for n in leads]
        out |= {(a, b) for a in idx for b in idx if a < b}
    idx = [LEADS.index(n) for n in PRECORDIAL]
    out |= set(zip(idx[:-1], idx[1:]))
    return tuple(sorted(out))


CONTIGUOUS_PAIRS: tuple[tuple[int, int], ...] = _pairs()


def episode_id(bed_id: str, patient_id: str, first_window_end_ns: int) -> str:
    """A deterministic ``st-...`` episode id (same inputs, e.g. a replay, give the same id)."""
    h = hashlib.sha256(f"st|{KIND_ST_CHANGE}|{bed_id}|{patient_id}|{first_window_end_ns}".encode()).hexdigest()
    return f"st-{h[:20]}"


def deviating_leads(delta_uv: np.ndarray, threshold_uv: float) -> tuple[str, ...]:
    """Leads of every contiguous pair whose ST changed by ``threshold_uv`` or more, same direction.

    Args:
        delta_uv: (12,) ST change from the reference, NaN where unknown.
        threshold_uv: the size of change that counts.
    """
    d = np.nan_to_num(np.asarray(delta_uv, dtype=np.float64), nan=0.0)
    up, down = d >= threshold_uv, d <= -threshold_uv
    hit: set[int] = set()
    for a, b in CONTIGUOUS_PAIRS:
        if (up[a] and up[b]) or (down[a] and down[b]):
            hit |= {a, b}
    return tuple(LEADS[k] for k in sorted(hit))


@dataclass(frozen=True)
class StChangeConfig:
    """Thresholds and timing of the ST-change alarm (uV and seconds of window time)."""

    threshold_uv: float = 100.0
    end_uv: float = 75.0
    sustain_s: float = 60.0
    end_s: float = 30.0
    max_gap_s: float = 20.0
    escalate_uv: float = 200.0
    deescalate_margin_uv: float = 50.0

    def __post_init__(self) -> None:
        if not (0 < self.end_uv <= self.threshold_uv <= self.escalate_uv):
            raise ConfigError(f"need 0 < end_uv ({self.end_uv}) <= threshold_uv ({self.threshold_uv}) <= escalate_uv ({self.escalate_uv})")
        if min(self.sustain_s, self.end_s, self.max_gap_s, self.deescalate_margin_uv) < 0:
            raise ConfigError(f"sustain_s={self.sustain_s}, end_s={self.end_s}, max_gap_s={self.max_gap_s}, "
                              f"deescalate_margin_uv={self.deescalate_margin_uv} must be >= 0")


@dataclass(frozen=True)
class StChangeEvent:
    """A decision for one window: ``start``, ``update`` (level change) or ``end`` of an ``st_change`` episode.

    Attributes:
        leads: the contiguous leads deviating now (at start: the ones that started it).
        delta_uv: (12,) ST change from the reference in :data:`LEADS` order, NaN where unknown
            (all NaN on a discharge end).
        max_delta_uv: the largest absolute change among ``leads`` (0 when none).
    """

    phase: str
    alert_id: str
    level: int
    leads: tuple[str, ...]
    delta_uv: np.ndarray
    max_delta_uv: float
    window_seq: int
    window_end_ns: int
    kind: str = KIND_ST_CHANGE


@dataclass
class _Bed:
    patient_id: str
    since_ns: int = -1  # first window of the current deviating run (-1: none)
    calm_since_ns: int = -1  # first window of the current run below end_uv in an episode
    last_seen_ns: int = -1  # last measurable window
    active_id: str = ""
    level: int = 0
    last_window_seq: int = -1
    last_window_end_ns: int = -1


class StChangePolicy:
    """Turn each window's ST change from the reference into ``st_change`` events, one state per bed."""

    def __init__(self, config: StChangeConfig = StChangeConfig()) -> None:
        self.config = config
        self._beds: dict[str, _Bed] = {}

    def _bed(self, bed_id: str, patient_id: str) -> _Bed:
        b = self._beds.get(bed_id)
        if b is None or b.patient_id != patient_id:
            b = _Bed(patient_id=patient_id)  # a new patient starts clean
            self._beds[bed_id] = b
        return b

    def active(self, bed_id: str) -> str:
        """The bed's active episode id, or "" when none."""
        b = self._beds.get(bed_id)
        return b.active_id if b else ""

    def update(self, bed_id: str, patient_id: str, delta_uv: np.ndarray | None, window_seq: int, window_end_ns: int) -> list[StChangeEvent]:
        """Feed one window's ST change (None: the window could not be measured); return its events.

        Windows not newer than the last seen (a replayed duplicate) are ignored, as in the MI policy.
        """
        c = self.config
        b = self._bed(bed_id, patient_id)
        if window_seq <= b.last_window_seq and window_end_ns <= b.last_window_end_ns:
            return []
        b.last_window_seq, b.last_window_end_ns = window_seq, int(window_end_ns)
        if delta_uv is None or not np.isfinite(delta_uv).any():
            return []
        d = np.asarray(delta_uv, dtype=np.float64)
        if b.last_seen_ns >= 0 and window_end_ns - b.last_seen_ns > c.max_gap_s * 1e9:
            b.since_ns = -1  # too long unmeasured: the change must be seen sustained again
        b.last_seen_ns = int(window_end_ns)
        leads = deviating_leads(d, c.threshold_uv)
        size = max((abs(d[LEADS.index(n)]) for n in leads), default=0.0)
        level = 2 if size >= c.escalate_uv else 1
        if not b.active_id:
            if not leads:
                b.since_ns = -1
                return []
            if b.since_ns < 0:
                b.since_ns = int(window_end_ns)
            if window_end_ns - b.since_ns < c.sustain_s * 1e9:
                return []
            b.active_id = episode_id(bed_id, patient_id, window_end_ns)
            b.level, b.calm_since_ns = level, -1
            return [StChangeEvent("start", b.active_id, level, leads, d.copy(), float(size), window_seq, int(window_end_ns))]
        still = deviating_leads(d, c.end_uv)
        if not still:
            if b.calm_since_ns < 0:
                b.calm_since_ns = int(window_end_ns)
            if window_end_ns - b.calm_since_ns >= c.end_s * 1e9:
                ev = StChangeEvent("end", b.active_id, b.level, (), d.copy(), 0.0, window_seq, int(window_end_ns))
                b.active_id, b.level, b.since_ns, b.calm_since_ns = "", 0, -1, -1
                return [ev]
            return []
        b.calm_since_ns = -1
        peak = max(abs(d[LEADS.index(n)]) for n in still)
        if b.level < 2 and level == 2 or b.level == 2 and peak < c.escalate_uv - c.deescalate_margin_uv:
            b.level = 3 - b.level
            return [StChangeEvent("update", b.active_id, b.level, leads or still, d.copy(), float(peak), window_seq, int(window_end_ns))]
        return []

    def discharge(self, bed_id: str, window_seq: int, window_end_ns: int) -> list[StChangeEvent]:
        """The bed left: end an active episode and forget the bed."""
        b = self._beds.pop(bed_id, None)
        if b is None or not b.active_id:
            return []
        return [StChangeEvent("end", b.active_id, b.level, (), np.full(len(LEADS), np.nan), 0.0, window_seq, int(window_end_ns))]

    def forget(self, bed_id: str) -> None:
        """Drop a bed's state without events (partition revoked)."""
        self._beds.pop(bed_id, None)

    def export_state(self, bed_id: str) -> dict | None:
        """The bed's state as JSON-able data (persisted so a restarted worker continues episodes)."""
        b = self._beds.get(bed_id)
        return None if b is None else dict(vars(b))

    def import_state(self, bed_id: str, data: dict) -> None:
        """Restore :meth:`export_state` output.

        Raises:
            StateError: unknown or malformed fields.
        """
        try:
            b = _Bed(patient_id=str(data["patient_id"]), **{k: int(data[k]) for k in vars(_Bed("")) if k not in ("patient_id", "active_id")},
                     active_id=str(data["active_id"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"bad saved ST-change state for a bed: {exc!r}") from None
        self._beds[bed_id] = b
