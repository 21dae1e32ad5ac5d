"""Per-bed MI alert policy: k-of-n start, hysteresis end, cooldown, escalation (pure core).

Alarm design follows IEC 60601-1-8 (alarm systems) practice for physiological alarms: a single
window above threshold does not alarm (k of the last n windows must), an active alarm does not
flicker off on one low window (the probability must stay below a lower *end* threshold for
``end_consecutive`` windows: hysteresis), and a bed that just ended an episode is quiet for
``cooldown_s`` (alarm fatigue). Escalation to level 2 when the probability reaches
``escalate_probability`` produces an ``update`` event at once; the return to level 1 needs the
probability below ``escalate_probability - deescalate_margin`` for ``end_consecutive`` windows
(the same hysteresis, so a probability hovering around 0.9 does not flap the level).

Episode ids are deterministic (:func:`stream.core.schema.make_alert_id` of the bed, patient and the
end time of the window that started the episode) so a replay after a restart re-emits the same
ids, and consumers can deduplicate on ``Alert.event_id``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import MutableMapping

from stream.core.schema import make_alert_id
from stream.errors import PolicyError

KIND_MI = "mi_suspected"


@dataclass(frozen=True)
class PolicyConfig:
    """Thresholds and timing of the alert policy.

    Attributes:
        threshold_start: probability at or above which a window counts as positive.
        threshold_end: an active episode ends when the probability is below this ...
        end_consecutive: ... for this many consecutive windows.
        k: positive windows needed ...
        n: ... among the last n windows to start an episode.
        cooldown_s: after an episode ends no new one starts for this long (window time).
        escalate_probability: level 2 at or above this probability.
        deescalate_margin: back to level 1 only below ``escalate_probability`` minus this.
    """

    threshold_start: float
    threshold_end: float
    end_consecutive: int = 2
    k: int = 2
    n: int = 3
    cooldown_s: float = 60.0
    escalate_probability: float = 0.9
    deescalate_margin: float = 0.1

    def __post_init__(self) -> None:
        if not (0.0 <= self.threshold_end <= self.threshold_start <= 1.0):
            raise PolicyError(f"need 0 <= threshold_end ({self.threshold_end}) <= threshold_start ({self.threshold_start}) <= 1")
        if not (1 <= self.k <= self.n):
            raise PolicyError(f"need 1 <= k ({self.k}) <= n ({self.n})")
        if self.end_consecutive < 1 or self.cooldown_s < 0:
            raise PolicyError(f"end_consecutive={self.end_consecutive} must be >= 1, cooldown_s={self.cooldown_s} >= 0")


@dataclass
class PolicyEvent:
    """A decision of the policy for one window: start, update (level change) or end."""

    phase: str
    alert_id: str
    level: int
    probability: float | None  # None on a discharge end (no window scored)
    window_seq: int
    window_end_ns: int


@dataclass
class EpisodeState:
    """The MI alert state of one bed (held by its :class:`stream.core.session.BedSession`)."""

    recent: deque[bool]
    patient_id: str = ""
    active_id: str = ""
    level: int = 0
    below: int = 0
    calm: int = 0  # consecutive level-2 windows below the de-escalation point
    cooldown_until_ns: int = -1
    last_window_seq: int = -1
    last_window_end_ns: int = -1


class AlertPolicy:
    """Turn per-window MI probabilities into alert events, one state per bed."""

    def __init__(self, config: PolicyConfig, beds: MutableMapping[str, EpisodeState] | None = None) -> None:
        self.config = config
        # A dict by default; the stream worker passes its BedSessions view (the state lives in each bed's session).
        self._beds: MutableMapping[str, EpisodeState] = {} if beds is None else beds

    def _state(self, bed_id: str, patient_id: str) -> EpisodeState:
        st = self._beds.get(bed_id)
        if st is None or st.patient_id != patient_id:
            # A new patient in the bed starts from a clean slate (no inherited episode).
            st = EpisodeState(recent=deque(maxlen=self.config.n), patient_id=patient_id)
            self._beds[bed_id] = st
        return st

    def active(self, bed_id: str) -> str:
        """The bed's active episode id, or "" when none."""
        st = self._beds.get(bed_id)
        return st.active_id if st else ""

    def update(self, bed_id: str, patient_id: str, probability: float, window_seq: int, window_end_ns: int) -> list[PolicyEvent]:
        """Feed one window's probability; return the events it causes (usually none).

        Windows of a bed must come in order; a window not newer than the last one seen (a
        replayed duplicate: seq and end time both not newer) is ignored. A lower seq with a newer
        end time is a restarted source (monitor reboot, new window grid) and is scored.
        """
        c = self.config
        st = self._state(bed_id, patient_id)
        if window_seq <= st.last_window_seq and window_end_ns <= st.last_window_end_ns:
            return []
        st.last_window_seq = window_seq
        st.last_window_end_ns = int(window_end_ns)
        p = float(probability)
        positive = p >= c.threshold_start
        st.recent.append(positive)
        level = 2 if p >= c.escalate_probability else 1
        events: list[PolicyEvent] = []
        if not st.active_id:
            if window_end_ns < st.cooldown_until_ns:
                return events
            if positive and sum(st.recent) >= c.k:
                st.active_id = make_alert_id("mi", KIND_MI, bed_id, patient_id, window_end_ns)
                st.level = level
                st.below = 0
                events.append(PolicyEvent("start", st.active_id, level, p, window_seq, window_end_ns))
            return events
        if p < c.threshold_end:
            st.below += 1
            if st.below >= c.end_consecutive:
                events.append(PolicyEvent("end", st.active_id, st.level, p, window_seq, window_end_ns))
                self._end(st, window_end_ns)
            return events
        st.below = 0
        if st.level < 2 and level == 2:
            st.level, st.calm = 2, 0
            events.append(PolicyEvent("update", st.active_id, 2, p, window_seq, window_end_ns))
        elif st.level == 2 and p < c.escalate_probability - c.deescalate_margin:
            st.calm += 1
            if st.calm >= c.end_consecutive:
                st.level, st.calm = 1, 0
                events.append(PolicyEvent("update", st.active_id, 1, p, window_seq, window_end_ns))
        else:
            st.calm = 0
        return events

    def _end(self, st: EpisodeState, window_end_ns: int) -> None:
        st.active_id = ""
        st.level = 0
        st.below = 0
        st.calm = 0
        st.recent.clear()
        st.cooldown_until_ns = window_end_ns + int(self.config.cooldown_s * 1e9)

    def discharge(self, bed_id: str, window_seq: int, window_end_ns: int) -> list[PolicyEvent]:
        """The bed left (end of stream): end an active episode and forget the bed."""
        st = self._beds.pop(bed_id, None)
        if st is None or not st.active_id:
            return []
        return [PolicyEvent("end", st.active_id, st.level, None, window_seq, window_end_ns)]

    def known(self, bed_id: str) -> bool:
        return bed_id in self._beds

    def export_state(self, bed_id: str) -> dict | None:
        """The bed's state as plain JSON-able data (persisted so a restarted worker continues episodes)."""
        st = self._beds.get(bed_id)
        if st is None:
            return None
        return {"patient_id": st.patient_id, "recent": [bool(x) for x in st.recent], "active_id": st.active_id,
                "level": st.level, "below": st.below, "calm": st.calm, "cooldown_until_ns": st.cooldown_until_ns,
                "last_window_seq": st.last_window_seq, "last_window_end_ns": st.last_window_end_ns}

    def import_state(self, bed_id: str, data: dict) -> None:
        """Restore a state from :meth:`export_state` (unknown or malformed fields raise PolicyError)."""
        try:
            st = EpisodeState(recent=deque((bool(x) for x in data["recent"]), maxlen=self.config.n),
                           patient_id=str(data["patient_id"]), active_id=str(data["active_id"]), level=int(data["level"]),
                           below=int(data["below"]), calm=int(data.get("calm", 0)), cooldown_until_ns=int(data["cooldown_until_ns"]),
                           last_window_seq=int(data["last_window_seq"]),
                           # states saved before end times were kept: dedupe on seq alone, as then
                           last_window_end_ns=int(data.get("last_window_end_ns", 2**63 - 1)))
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(f"bad saved policy state for a bed: {exc!r}") from None
        self._beds[bed_id] = st

    def forget(self, bed_id: str) -> None:
        """Drop a bed's state without events (partition revoked: another worker owns it now)."""
        self._beds.pop(bed_id, None)
