"""Technical alarms: "the system cannot evaluate this bed" (pure core, times injected).

IEC 60601-1-8 separates *physiological* alarms (the patient: here MI suspected) from
*technical* alarms (the equipment: leads off, no signal, a failed analysis); IEC 60601-2-27
requires an ECG monitor to raise technical alarms for lead-off and for conditions that make the
analysis unreliable. :class:`TechnicalMonitor` keeps one state machine per monitored bed and
turns plain method calls into :class:`stream.core.schema.Alert` events with ``alert_type="technical"``:

=================  ============================================================  =====
kind               starts when                                                   ends
=================  ============================================================  =====
``no_data``        no chunk from an admitted bed for more than ``no_data_s``     next chunk
                   (level 2 after ``3 x no_data_s``)                             or discharge
``leads_off``      windows not evaluable for ``poor_quality_s`` or longer, the   first evaluable
                   bad leads mostly ``missing:``/``flat:``                       window
``leads_off``      level 0 (low): one or more leads ``missing:``/``flat:`` for    no lead off
(per lead)         ``poor_quality_s`` while windows stay evaluable and scored
``poor_signal``    same, bad leads mostly ``noisy:``/``saturated:``              first evaluable window
``backend_failed`` the inference backend raised (advisory when a fallback        :meth:`on_backend_ok`
                   backend took over)
``falling_behind`` worker lag behind real time above ``behind_s``                lag <= half of it
=================  ============================================================  =====

IEC 60601-2-27 asks for a lead-off indication per electrode: a bed with V3 off is still evaluable
(and scored), yet the nurse must hear of it. That is the low-priority (level 0, HL7 ``PL``)
``leads_off`` naming the lead(s) in its advisories and flags; it ends when no lead is off, changes
(``update``) when the set of leads does, escalates to level 1 in place (same id) when the windows
stop being evaluable, and drops back to level 0 when they are evaluable again with a lead still off.
Quality flags of extra signals the windower ignored (``ignored:RESP``) name no bad lead.

``backend_failed`` and ``falling_behind`` concern every monitored bed (none of them is being
evaluated on time), so each monitored bed gets its own episode and nurses see it at the bed.

Episodes have deterministic ids, :func:`stream.core.schema.make_alert_id` of ``("technical", kind,
bed, patient, first_ns)`` where ``first_ns`` is when the condition began (the data time of the
last chunk, end of the first bad window, first backend error), so a replay, or a restarted worker
re-reading the same chunks, yields the same ids and
consumers deduplicate on ``Alert.event_id``. Phases: ``start``, ``update`` (level or advisory
change), ``end``. A technical alert carries ``probability``/thresholds None, the condition's
period as its window span, and the flags of the last bad window for quality kinds.

Every input only records state; :meth:`TechnicalMonitor.tick` returns the events (queued ones
and timer-driven ones) in order. Time bases: chunk arrivals, :meth:`tick` and the backend/lag
calls use the wall clock; :meth:`on_window` uses window (data) time, so quality episodes
replay identically.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import MutableMapping, Sequence

from engine.signal.leads import IGNORED_PREFIX
from stream.core.admission import DISCHARGED, REASON_END_OF_STREAM, AdmissionEvent, Admissions, BedAdmission
from stream.core.schema import Alert, make_alert_id
from stream.errors import PolicyError, SettingsError
from stream.settings import Settings

log = logging.getLogger(__name__)

KIND_NO_DATA = "no_data"
KIND_LEADS_OFF = "leads_off"
KIND_POOR_SIGNAL = "poor_signal"
KIND_BACKEND_FAILED = "backend_failed"
KIND_FALLING_BEHIND = "falling_behind"
TECHNICAL_KINDS = (KIND_NO_DATA, KIND_LEADS_OFF, KIND_POOR_SIGNAL, KIND_BACKEND_FAILED, KIND_FALLING_BEHIND)
QUALITY_KINDS = (KIND_LEADS_OFF, KIND_POOR_SIGNAL)
LEAD_OFF_PREFIXES = ("missing:", "flat:")
LEVEL_LOW = 0  # the per-lead leads_off notice: HL7 priority PL
STATE_VERSION = 1
MAX_PENDING_DISCHARGES = 4096


@dataclass(frozen=True)
class TechnicalConfig:
    """Limits of the technical alarms and the model named in their alerts.

    Attributes:
        no_data_s: silence of an admitted bed before ``no_data`` starts.
        poor_quality_s: how long windows must stay not evaluable before ``leads_off``/``poor_signal``.
        behind_s: worker lag before ``falling_behind``; it ends at half this lag (hysteresis).
        idle_discharge_s: silence after which a bed is discharged (0 = never).
        escalate_factor: ``no_data`` goes to level 2 after ``escalate_factor * no_data_s``.
        max_bad_leads: a window with more flagged leads is not evaluable (when the caller does not say).
        model_name: model named in the alerts (audit trail).
        model_version: its version.
        checkpoint_sha: its checkpoint hash.
    """

    no_data_s: float = 10.0
    poor_quality_s: float = 20.0
    behind_s: float = 10.0
    idle_discharge_s: float = 300.0
    escalate_factor: float = 3.0
    max_bad_leads: int = 2
    model_name: str = ""
    model_version: str = ""
    checkpoint_sha: str = ""

    def __post_init__(self) -> None:
        for name in ("no_data_s", "poor_quality_s", "behind_s"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name}={getattr(self, name)} must be > 0")
        if not self.idle_discharge_s >= 0 or not self.escalate_factor >= 1 or self.max_bad_leads < 0:
            raise SettingsError(f"idle_discharge_s={self.idle_discharge_s} must be >= 0, escalate_factor="
                                f"{self.escalate_factor} >= 1, max_bad_leads={self.max_bad_leads} >= 0")

    @classmethod
    def from_settings(cls, settings: Settings, *, model_name: str = "", model_version: str = "",
                      checkpoint_sha: str = "") -> "TechnicalConfig":
        """Limits from :class:`stream.settings.Settings`; the model fields from the loaded checkpoint."""
        return cls(no_data_s=settings.no_data_s, poor_quality_s=settings.poor_quality_s, behind_s=settings.behind_s,
                   idle_discharge_s=settings.idle_discharge_s, model_name=model_name, model_version=model_version,
                   checkpoint_sha=checkpoint_sha)


def bad_leads(flags: Sequence[str]) -> set[str]:
    """Leads named by per-lead flags (``"flat:V3"`` -> ``V3``); window flags such as ``gap`` and
    ignored extra signals (``ignored:RESP``: no lead of the model) name none."""
    return {f.split(":", 1)[1] for f in flags if ":" in f and not f.startswith(IGNORED_PREFIX)}


def leads_off(flags: Sequence[str]) -> list[str]:
    """The leads flagged ``missing:``/``flat:`` (an electrode off), sorted: ``["V3"]``."""
    return sorted({f.split(":", 1)[1] for f in flags if f.startswith(LEAD_OFF_PREFIXES)})


def lead_off_advisory(leads: Sequence[str]) -> str:
    """The advisory of the per-lead ``leads_off`` notice: ``"lead off: V3, V5"``."""
    return "lead off: " + ", ".join(leads)


def evaluable_from_flags(flags: Sequence[str], max_bad_leads: int = 2) -> bool:
    """The verdict of :mod:`engine.signal.quality`: at most ``max_bad_leads`` leads flagged."""
    return len(bad_leads(flags)) <= max_bad_leads


def quality_kind(flags: Sequence[str]) -> str:
    """``leads_off`` when most flagged leads are missing or flat (an electrode to fix), else ``poor_signal``."""
    off = {f.split(":", 1)[1] for f in flags if f.startswith(LEAD_OFF_PREFIXES)}
    other = bad_leads(flags) - off
    return KIND_LEADS_OFF if len(off) >= len(other) else KIND_POOR_SIGNAL


@dataclass
class _Episode:
    alert_id: str
    kind: str
    bed_id: str
    patient_id: str
    since_ns: int
    level: int = 1
    flags: list[str] = field(default_factory=list)
    advisories: list[str] = field(default_factory=list)
    events: int = 0  # event counter: window_seq of time-driven events (unique event ids)


def _is_notice(ep: _Episode) -> bool:
    """The low-priority per-lead ``leads_off`` (the bed stays evaluable and scored)."""
    return ep.kind == KIND_LEADS_OFF and ep.level == LEVEL_LOW


@dataclass
class TechnicalBedState:
    """The technical-alarm state of one monitored bed (held by its :class:`stream.core.session.BedSession`)."""

    patient_id: str
    bad_since_ns: int | None = None  # end of the first not-evaluable window of the current run
    bad_flags: list[str] = field(default_factory=list)
    episodes: dict[str, _Episode] = field(default_factory=dict)  # kind -> open episode
    off_since_ns: int | None = None  # end of the first window of the current run with a lead off
    last_data_ns: int | None = None  # data time (chunk end) of the last chunk: the no_data episode's id


@dataclass
class _SystemCondition:
    """A condition of the whole worker (backend failed, falling behind)."""

    since_ns: int | None = None  # None until the next tick fixes it
    active: bool = False
    advisories: list[str] = field(default_factory=list)
    cleared_ns: int | None = None


class TechnicalMonitor:
    """Per-bed technical-alarm state machines; see the module docstring.

    Args:
        config: limits and model fields.
        admissions: the admission core to use (a new one with ``config.idle_discharge_s`` if None).
        beds: where the per-bed states live (a dict by default; the stream worker passes its
            :class:`stream.core.session.BedSessions` view).
    """

    def __init__(self, config: TechnicalConfig, admissions: Admissions | None = None,
                 beds: MutableMapping[str, TechnicalBedState] | None = None) -> None:
        self.config = config
        self.admissions = admissions if admissions is not None else Admissions(config.idle_discharge_s)  # an empty one is falsy
        self._beds: MutableMapping[str, TechnicalBedState] = {} if beds is None else beds
        self._queue: list[tuple[_Episode, str, int, int | None]] = []  # (episode, phase, end_ns, window_seq)
        # Bounded: a caller that never pops must not grow memory forever.
        self._discharges: deque[AdmissionEvent] = deque(maxlen=MAX_PENDING_DISCHARGES)
        self._backend = _SystemCondition()
        self._behind = _SystemCondition()
        self.lag_s = 0.0

    # -- inputs ---------------------------------------------------------------------------------
    def on_chunk(self, bed_id: str, patient_id: str, t_ns: int, end_of_stream: bool = False, *,
                 data_ns: int | None = None) -> None:
        """A chunk of the bed arrived at wall-clock ``t_ns`` (end of stream = discharge).

        ``data_ns`` is the chunk's own time (its ``end_ns``): a ``no_data`` episode's id derives from
        it, not from the arrival, so a restarted worker re-reading the same chunks opens the same
        episode id. None = ``t_ns``.
        """
        for ev in self.admissions.on_chunk(bed_id, patient_id, t_ns, end_of_stream):
            if ev.change == DISCHARGED:
                self._discharged(ev)
            else:
                self._beds[bed_id] = TechnicalBedState(patient_id)
        st = self._beds.get(bed_id)
        if st is not None:
            st.last_data_ns = int(t_ns if data_ns is None else data_ns)
            ep = st.episodes.pop(KIND_NO_DATA, None)
            if ep is not None:
                self._queue.append((ep, "end", t_ns, None))

    def on_window(self, bed_id: str, patient_id: str, window_end_ns: int, flags: Sequence[str],
                  evaluable: bool | None = None, *, window_seq: int = -1) -> None:
        """A window of the bed was cut; ``evaluable`` None = judge from ``flags``.

        Windows of beds that are not monitored (or of another patient) are ignored.
        """
        st = self._beds.get(bed_id)
        if st is None or st.patient_id != patient_id:
            log.debug("window of a bed that is not monitored ignored")
            return
        ok = evaluable_from_flags(flags, self.config.max_bad_leads) if evaluable is None else bool(evaluable)
        open_kind = next((k for k in QUALITY_KINDS if k in st.episodes and not _is_notice(st.episodes[k])), None)
        seq = window_seq if window_seq >= 0 else None
        off = leads_off(flags)
        if not off:
            st.off_since_ns = None
        elif st.off_since_ns is None:
            st.off_since_ns = window_end_ns
        if ok:
            st.bad_since_ns = None
            st.bad_flags = []
            if open_kind is not None:
                ep = st.episodes.pop(open_kind)
                if open_kind == KIND_LEADS_OFF and off:  # evaluable again, a lead still off: back to the notice
                    st.episodes[open_kind] = ep
                    self._notice(ep, flags, window_end_ns, seq)
                else:
                    self._queue.append((ep, "end", window_end_ns, seq))
            self._lead_notice(st, bed_id, flags, window_end_ns, seq)
            return
        if st.bad_since_ns is None:
            st.bad_since_ns = window_end_ns
        st.bad_flags = sorted(flags)
        if open_kind is None and window_end_ns - st.bad_since_ns >= int(self.config.poor_quality_s * 1e9):
            kind = quality_kind(flags)
            notice = st.episodes.get(kind)
            if notice is not None:  # the lead-off notice escalates in place (same episode, same id)
                notice.level, notice.flags = 1, list(st.bad_flags)
                self._queue.append((notice, "update", window_end_ns, seq))
                return
            ep = self._open(st, bed_id, kind, st.bad_since_ns)
            ep.flags = list(st.bad_flags)
            self._queue.append((ep, "start", window_end_ns, seq))

    def _lead_notice(self, st: TechnicalBedState, bed_id: str, flags: Sequence[str], window_end_ns: int,
                     seq: int | None) -> None:
        """Start, change or end the per-lead ``leads_off`` notice on an evaluable window."""
        off = leads_off(flags)
        ep = st.episodes.get(KIND_LEADS_OFF)
        if not off:
            if ep is not None:
                self._queue.append((st.episodes.pop(KIND_LEADS_OFF), "end", window_end_ns, seq))
            return
        if ep is None and st.off_since_ns is not None and \
                window_end_ns - st.off_since_ns >= int(self.config.poor_quality_s * 1e9):
            ep = self._open(st, bed_id, KIND_LEADS_OFF, st.off_since_ns)
            self._notice(ep, flags, window_end_ns, seq, phase="start")
        elif ep is not None and ep.advisories != [lead_off_advisory(off)]:
            self._notice(ep, flags, window_end_ns, seq)

    def _notice(self, ep: _Episode, flags: Sequence[str], window_end_ns: int, seq: int | None,
                phase: str = "update") -> None:
        """Make ``ep`` the low-priority notice naming the leads off in ``flags`` and queue ``phase``."""
        ep.level = LEVEL_LOW
        ep.advisories = [lead_off_advisory(leads_off(flags))]
        ep.flags = sorted(f for f in flags if f.startswith(LEAD_OFF_PREFIXES))
        self._queue.append((ep, phase, window_end_ns, seq))

    def on_backend_error(self, exc: BaseException | None, fallback_used: bool | str = False, *,
                         t_ns: int | None = None) -> None:
        """The inference backend raised ``exc``; ``fallback_used`` is the fallback backend's name (or True).

        ``t_ns`` None = the time of the next :meth:`tick`.
        """
        c = self._backend
        if fallback_used:
            name = fallback_used if isinstance(fallback_used, str) else ""
            advisories = [f"fallback backend {name} in use" if name else "fallback backend in use"]
        else:
            advisories = ["no fallback backend: windows are not being evaluated"]
        if not c.active or advisories != c.advisories:  # log changes only: a dead backend fails every batch
            log.warning("inference backend failed (%s): %s", type(exc).__name__ if exc is not None else "unknown",
                        advisories[0])
        if not c.active:
            c.active, c.since_ns, c.cleared_ns = True, t_ns, None
        c.advisories = advisories

    def on_backend_ok(self, t_ns: int | None = None) -> None:
        """A batch was scored by the primary backend again: ``backend_failed`` ends."""
        if self._backend.active:
            self._backend.active, self._backend.cleared_ns = False, t_ns

    def on_lag(self, lag_s: float, t_ns: int | None = None) -> None:
        """The worker is ``lag_s`` seconds behind real time (e.g. now - newest chunk's timestamp)."""
        self.lag_s = float(lag_s)
        c = self._behind
        if not c.active and lag_s > self.config.behind_s:
            c.active, c.since_ns, c.cleared_ns = True, t_ns, None
            c.advisories = [f"worker more than {self.config.behind_s:g} s behind real time"]
        elif c.active and lag_s <= self.config.behind_s / 2:
            c.active, c.cleared_ns = False, t_ns

    def discharge(self, bed_id: str, t_ns: int, reason: str = REASON_END_OF_STREAM) -> None:
        """Discharge a bed explicitly (its open technical alerts end at the next tick)."""
        for ev in self.admissions.discharge(bed_id, t_ns, reason):
            self._discharged(ev)

    def forget(self, bed_id: str) -> None:
        """Drop a bed without events (its partition moved to another worker, which now owns it)."""
        self.admissions.forget(bed_id)
        self._beds.pop(bed_id, None)

    # -- persistence (a restarted worker continues the bed's episodes with the same ids) ---------
    def export_bed(self, bed_id: str) -> dict | None:
        """The bed's admission and open episodes as JSON-able data, or None when it is not monitored.

        Call after :meth:`tick` (events still queued are not part of the state).
        """
        adm, st = self.admissions.get(bed_id), self._beds.get(bed_id)
        if adm is None or st is None:
            return None
        return {"version": STATE_VERSION, "patient_id": st.patient_id, "admitted_ns": adm.admitted_ns,
                "last_chunk_ns": adm.last_chunk_ns, "bad_since_ns": st.bad_since_ns, "bad_flags": list(st.bad_flags),
                "off_since_ns": st.off_since_ns, "last_data_ns": st.last_data_ns,
                "episodes": [asdict(ep) for ep in st.episodes.values()]}

    def import_bed(self, bed_id: str, data: dict) -> None:
        """Restore a bed from :meth:`export_bed`; a malformed state raises :class:`PolicyError`.

        Episodes of worker conditions (backend, lag) that no longer hold end at the next tick.
        """
        try:
            if data["version"] != STATE_VERSION:
                raise ValueError(f"state version {data['version']!r}, this build reads {STATE_VERSION}")
            patient = str(data["patient_id"])
            episodes = {}
            for e in data["episodes"]:
                ep = _Episode(alert_id=str(e["alert_id"]), kind=str(e["kind"]), bed_id=bed_id, patient_id=patient,
                              since_ns=int(e["since_ns"]), level=int(e["level"]), flags=[str(f) for f in e["flags"]],
                              advisories=[str(a) for a in e["advisories"]], events=int(e["events"]))
                if ep.kind not in TECHNICAL_KINDS:
                    raise ValueError(f"unknown technical kind {ep.kind!r}")
                episodes[ep.kind] = ep
            bad_since = data["bad_since_ns"]
            st = TechnicalBedState(patient, None if bad_since is None else int(bad_since), [str(f) for f in data["bad_flags"]], episodes)
            # Absent in states saved before these fields existed.
            st.off_since_ns = None if data.get("off_since_ns") is None else int(data["off_since_ns"])
            st.last_data_ns = None if data.get("last_data_ns") is None else int(data["last_data_ns"])
            adm = BedAdmission(patient, int(data["admitted_ns"]), int(data["last_chunk_ns"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(f"bad saved technical-alarm state for a bed: {exc!r}") from None
        self.admissions.restore(bed_id, adm)
        self._beds[bed_id] = st

    # -- outputs --------------------------------------------------------------------------------
    def tick(self, now_ns: int) -> list[Alert]:
        """Evaluate the timers at wall-clock ``now_ns``; return every event since the last tick, in order."""
        for ev in self.admissions.expire(now_ns):
            self._discharged(ev)
        self._check_no_data(now_ns)
        self._check_system(self._backend, KIND_BACKEND_FAILED, now_ns)
        self._check_system(self._behind, KIND_FALLING_BEHIND, now_ns)
        queue, self._queue = self._queue, []
        return [self._alert(ep, phase, end_ns, seq, now_ns) for ep, phase, end_ns, seq in queue]

    def pop_discharges(self) -> list[AdmissionEvent]:
        """Beds discharged since the last call (the worker ends their MI episodes too)."""
        out = list(self._discharges)
        self._discharges.clear()
        return out

    def open_alerts(self, bed_id: str) -> list[str]:
        """Kinds of the bed's open technical episodes, sorted."""
        st = self._beds.get(bed_id)
        return sorted(st.episodes) if st else []

    def evaluable(self, bed_id: str) -> bool:
        """False while the bed has an open technical episode of its own (no data, leads off, poor signal)."""
        st = self._beds.get(bed_id)
        return st is None or not any(k in st.episodes and not _is_notice(st.episodes[k])
                                     for k in (KIND_NO_DATA, *QUALITY_KINDS))

    # -- internals ------------------------------------------------------------------------------
    def _open(self, st: TechnicalBedState, bed_id: str, kind: str, first_ns: int, *, id_ns: int | None = None) -> _Episode:
        """Open an episode that began at ``first_ns``; its id derives from ``id_ns`` (default ``first_ns``)."""
        id_ns = first_ns if id_ns is None else id_ns
        ep = _Episode(make_alert_id("technical", kind, bed_id, st.patient_id, id_ns), kind, bed_id, st.patient_id, first_ns)
        st.episodes[kind] = ep
        return ep

    def _discharged(self, ev: AdmissionEvent) -> None:
        self._discharges.append(ev)
        st = self._beds.pop(ev.bed_id, None)
        if st is None:
            return
        for kind in sorted(st.episodes):
            self._queue.append((st.episodes[kind], "end", ev.t_ns, None))

    def _check_no_data(self, now_ns: int) -> None:
        limit = int(self.config.no_data_s * 1e9)
        for bed_id in self.admissions.beds():
            adm = self.admissions.get(bed_id)
            st = self._beds.get(bed_id)
            if adm is None or st is None:
                continue
            silent = now_ns - adm.last_chunk_ns
            ep = st.episodes.get(KIND_NO_DATA)
            level = 2 if silent > self.config.escalate_factor * limit else 1
            if ep is None and silent > limit:
                # A worker that finds a bed long silent (e.g. after a restart) starts at level 2 at once.
                ep = self._open(st, bed_id, KIND_NO_DATA, adm.last_chunk_ns,
                                id_ns=adm.last_chunk_ns if st.last_data_ns is None else st.last_data_ns)
                ep.level = level
                self._queue.append((ep, "start", now_ns, None))
            elif ep is not None and ep.level < level:
                ep.level = level
                self._queue.append((ep, "update", now_ns, None))

    def _check_system(self, c: _SystemCondition, kind: str, now_ns: int) -> None:
        if c.active and c.since_ns is None:
            c.since_ns = now_ns
        for bed_id in self.admissions.beds():
            st = self._beds.get(bed_id)
            if st is None:
                continue
            ep = st.episodes.get(kind)
            if c.active and ep is None:
                ep = self._open(st, bed_id, kind, int(c.since_ns))  # type: ignore[arg-type]
                ep.advisories = list(c.advisories)
                self._queue.append((ep, "start", now_ns, None))
            elif c.active and ep is not None and ep.advisories != c.advisories:
                ep.advisories = list(c.advisories)
                self._queue.append((ep, "update", now_ns, None))
            elif not c.active and ep is not None:
                del st.episodes[kind]
                self._queue.append((ep, "end", c.cleared_ns if c.cleared_ns is not None else now_ns, None))
        if not c.active:
            c.since_ns = None

    def _alert(self, ep: _Episode, phase: str, end_ns: int, window_seq: int | None, now_ns: int) -> Alert:
        seq = ep.events if window_seq is None else window_seq
        ep.events += 1
        c = self.config
        return Alert(
            alert_id=ep.alert_id, alert_type="technical", kind=ep.kind, phase=phase, bed_id=ep.bed_id,
            patient_id=ep.patient_id, probability=None, threshold_start=None, threshold_end=None,
            window_start_ns=ep.since_ns, window_end_ns=max(end_ns, ep.since_ns), window_seq=seq,
            model_name=c.model_name, model_version=c.model_version, checkpoint_sha=c.checkpoint_sha, level=ep.level,
            quality_flags=list(ep.flags), advisories=list(ep.advisories), emitted_ns=now_ns,
        )
