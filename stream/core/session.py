"""One :class:`BedSession` per monitored bed: everything the worker knows about it (pure core).

A bed's state used to be spread over the window buffer (:class:`stream.core.windower.Windower`),
the pending Kafka events and last scored window (the stream processor), the MI episode
(:class:`stream.core.policy.AlertPolicy`), the technical alarms and admission
(:class:`stream.core.technical.TechnicalMonitor`, :class:`stream.core.admission.Admissions`), with
discharge decided in four places and two idle timers. Here each bed has one session holding all of
it; the cores keep their logic (and their unit tests) but read and write the per-bed state through
views of :class:`BedSessions`, so the state of one bed lives in one object.

* :meth:`BedSession.discharge` is the one place a bed ends: end of stream, another patient in the
  bed, silence past ``idle_discharge_s`` (IEC 60601-2-27: monitoring off; an open alarm is never
  dropped silently), or its partition revoked (no events: the new owner continues the episodes).
* :class:`BedSessions` runs the one idle timer (:meth:`BedSessions.expire`).
* :meth:`BedSession.to_record` / :meth:`BedSessions.restore` are the one persisted record per
  bed (``mirage:policy:{group}:{bed_id}`` in Redis, :class:`stream.worker.store.PolicyStateStore`):
  ``{"policy": ..., "technical": ...}``, the format earlier workers wrote, so a restart across
  versions continues episodes with the same ids.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, MutableMapping, TypeVar

from stream.core.admission import REASON_END_OF_STREAM, REASON_IDLE, REASON_PATIENT_CHANGE, Admissions, BedAdmission
from stream.core.policy import AlertPolicy, EpisodeState, PolicyConfig, PolicyEvent
from stream.core.schema import Alert
from stream.core.technical import TechnicalBedState, TechnicalConfig, TechnicalMonitor
from stream.core.windower import BedBuffer, EcgWindow, Windower
from stream.errors import PolicyError

log = logging.getLogger(__name__)

REASON_REVOKED = "partition_revoked"
DISCHARGE_REASONS = (REASON_END_OF_STREAM, REASON_PATIENT_CHANGE, REASON_IDLE, REASON_REVOKED)

V = TypeVar("V")


@dataclass
class BedSession:
    """Everything the worker holds for one bed.

    Attributes:
        bed_id: the bed.
        buffer: its window buffer (source rate), None before the first chunk or after an end of stream.
        episode: its MI alert-policy state.
        technical: its technical-alarm state (open episodes, quality run).
        admission: who is monitored in the bed, since when, last chunk arrival.
        pending: ``(end sample index, token)`` of chunks not yet safe to acknowledge, oldest first.
        last_window: the last scored window (an MI ``end`` on discharge is reported on it).
        ending_ns: arrival time of its end-of-stream chunk: the bed is discharged once the windows
            that chunk completed are scored.
        dirty: its persisted record is out of date.
    """

    bed_id: str
    owner: BedSessions = field(repr=False, compare=False)
    buffer: BedBuffer | None = None
    episode: EpisodeState | None = None
    technical: TechnicalBedState | None = None
    admission: BedAdmission | None = None
    pending: deque[tuple[int, Any]] = field(default_factory=deque)
    last_window: EcgWindow | None = None
    ending_ns: int | None = None
    dirty: bool = False

    def discharge(self, reason: str, t_ns: int | None = None) -> list[Alert]:
        """End the bed: the one place its episodes end and it is forgotten.

        Its open MI episode ends (an ``end`` alert on the last scored window), its open technical
        episodes end (their ``end`` alerts come from the next :meth:`TechnicalMonitor.tick`), its
        buffer is dropped and the session leaves the registry; its pending tokens stay in
        :attr:`pending` for the caller (released, i.e. acknowledged, unless the partition was
        revoked: then the new owner re-reads them and continues the episodes, so nothing ends).

        Args:
            reason: one of :data:`DISCHARGE_REASONS`.
            t_ns: when (end of the technical episodes; default the clock).

        Returns:
            The MI ``end`` alert, if an episode was open and a window was scored.
        """
        if reason not in DISCHARGE_REASONS:
            raise PolicyError(f"unknown discharge reason {reason!r}; expected one of {DISCHARGE_REASONS}")
        o = self.owner
        o.windower.discharge(self.bed_id)
        if reason == REASON_REVOKED:
            o.policy.forget(self.bed_id)
            o.technical.forget(self.bed_id)
            o.sessions.pop(self.bed_id, None)
            return []
        t = o.clock() if t_ns is None else int(t_ns)
        o.technical.discharge(self.bed_id, t, reason)
        last, self.last_window = self.last_window, None
        events = o.policy.discharge(self.bed_id, last.seq if last else -1, last.end_ns if last else t)
        o.sessions.pop(self.bed_id, None)
        o.discharged.add(self.bed_id)  # its record is deleted at the next save
        return o.end_alerts(self.bed_id, events, last)

    def to_record(self) -> dict | None:
        """The persisted record (JSON-able), None when there is nothing to continue."""
        o = self.owner
        pol, tech = o.policy.export_state(self.bed_id), o.technical.export_bed(self.bed_id)
        return None if pol is None and tech is None else {"policy": pol, "technical": tech}

    def from_record(self, data: dict) -> None:
        """Continue from a record of :meth:`to_record` (a malformed one raises :class:`PolicyError`)."""
        o = self.owner
        try:
            if data.get("policy"):
                o.policy.import_state(self.bed_id, data["policy"])
            if data.get("technical"):
                o.technical.import_bed(self.bed_id, data["technical"])
        except AttributeError as exc:
            raise PolicyError(f"bad saved state for a bed: {exc!r}") from None

    def is_empty(self) -> bool:
        return (
            self.buffer is None and self.episode is None and self.technical is None and self.admission is None and not self.pending and self.last_window is None
        )


class _SessionField(MutableMapping[str, V], Generic[V]):
    """One attribute of every session, seen as the ``bed_id -> state`` dict a core expects."""

    def __init__(self, owner: BedSessions, name: str) -> None:
        self._owner, self._name = owner, name

    def __getitem__(self, bed_id: str) -> V:
        s = self._owner.sessions.get(bed_id)
        value = None if s is None else getattr(s, self._name)
        if value is None:
            raise KeyError(bed_id)
        return value

    def __setitem__(self, bed_id: str, value: V) -> None:
        setattr(self._owner.open(bed_id), self._name, value)

    def __delitem__(self, bed_id: str) -> None:
        self[bed_id]  # KeyError when absent, as a dict
        setattr(self._owner.sessions[bed_id], self._name, None)

    def __iter__(self) -> Iterator[str]:
        return iter([b for b, s in self._owner.sessions.items() if getattr(s, self._name) is not None])

    def __len__(self) -> int:
        return sum(1 for s in self._owner.sessions.values() if getattr(s, self._name) is not None)


class BedSessions:
    """The registry ``bed_id -> BedSession`` and the cores working on the sessions' state.

    Args:
        windower: builds the windower given its ``beds`` mapping (``lambda beds: Windower(..., beds=beds)``).
        policy_config: the MI alert policy.
        technical_config: the technical alarms (its ``idle_discharge_s`` is the one idle timer).
        end_alerts: ``(bed_id, policy events, last scored window or None) -> alerts`` of a discharge
            (the worker builds the MI ``end`` alerts; a stage with per-bed episodes of its own ends them here).
        clock: ``() -> ns`` wall clock.
    """

    def __init__(
        self,
        windower: Callable[[MutableMapping[str, BedBuffer]], Windower],
        policy_config: PolicyConfig,
        technical_config: TechnicalConfig,
        end_alerts: Callable[[str, list[PolicyEvent], EcgWindow | None], list[Alert]],
        clock: Callable[[], int],
    ) -> None:
        self.sessions: dict[str, BedSession] = {}
        self.discharged: set[str] = set()  # beds whose record must be deleted at the next save
        self.clock = clock
        self.end_alerts = end_alerts
        self.idle_discharge_s = technical_config.idle_discharge_s
        self.windower = windower(_SessionField(self, "buffer"))
        self.policy = AlertPolicy(policy_config, beds=_SessionField(self, "episode"))
        # Admissions without a timer of their own: expire() below is the one idle timer.
        self.technical = TechnicalMonitor(technical_config, Admissions(0.0, beds=_SessionField(self, "admission")), beds=_SessionField(self, "technical"))
        self._orphans: list[Any] = []  # tokens of beds discharged by the timer, released by the next take_releasable

    def open(self, bed_id: str) -> BedSession:
        """The bed's session, created when absent."""
        s = self.sessions.get(bed_id)
        if s is None:
            s = self.sessions[bed_id] = BedSession(bed_id, self)
        return s

    def get(self, bed_id: str) -> BedSession | None:
        return self.sessions.get(bed_id)

    def __len__(self) -> int:
        return len(self.sessions)

    def __contains__(self, bed_id: object) -> bool:
        return bed_id in self.sessions

    def bed_ids(self) -> list[str]:
        return list(self.sessions)

    def discharge(self, bed_id: str, reason: str, t_ns: int | None = None) -> tuple[list[Alert], list[Any]]:
        """Discharge a bed (see :meth:`BedSession.discharge`); returns its alerts and its pending tokens."""
        s = self.sessions.get(bed_id)
        if s is None:
            return [], []
        alerts = s.discharge(reason, t_ns)
        tokens = [t for _, t in s.pending]
        s.pending.clear()
        return alerts, tokens

    def expire(self, now_ns: int) -> list[Alert]:
        """The one idle timer: discharge beds silent for ``idle_discharge_s`` (their tokens are
        released by the next :meth:`take_releasable`). Sessions left empty are dropped."""
        alerts: list[Alert] = []
        limit = int(self.idle_discharge_s * 1e9)
        for bed_id, s in sorted(self.sessions.items()):
            if self.idle_discharge_s > 0 and s.admission is not None and now_ns - s.admission.last_chunk_ns >= limit:
                got, tokens = self.discharge(bed_id, REASON_IDLE, s.admission.last_chunk_ns + limit)
                alerts.extend(got)
                self._orphans.extend(tokens)
            elif s.is_empty():
                del self.sessions[bed_id]
        return alerts

    def take_releasable(self) -> list[Any]:
        """Tokens now safe to acknowledge: every window containing their samples has been scored,
        or their bed was discharged (its buffer is gone, they can never make a window again)."""
        out, self._orphans = self._orphans, []
        for bed_id, s in self.sessions.items():
            start = self.windower.next_window_start(bed_id)
            if start is None:
                out.extend(t for _, t in s.pending)
                s.pending.clear()
                continue
            while s.pending and s.pending[0][0] <= start:
                out.append(s.pending.popleft()[1])
        return out

    def restore(self, records: dict[str, dict]) -> None:
        """Continue beds from their persisted records (a malformed record is ignored, with a warning)."""
        for bed_id, data in records.items():
            try:
                self.open(bed_id).from_record(data)
            except PolicyError as exc:
                log.warning("ignoring saved state of a bed: %s", exc)

    def take_records(self) -> dict[str, dict | None]:
        """The records to write (None = delete) since the last call, by bed."""
        out: dict[str, dict | None] = {b: None for b in sorted(self.discharged)}
        self.discharged.clear()
        for bed_id in sorted(self.sessions):
            s = self.sessions[bed_id]
            if s.dirty:
                s.dirty = False
                out[bed_id] = s.to_record()
        return out
