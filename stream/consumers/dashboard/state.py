"""Bed-state core of the nursing dashboard (pure: no sockets, no Kafka, no clock).

Each bed shows one of four MI states, with colour *and* text on the page (IEC 60601-1-8 asks
that alarm conditions be told apart by more than colour):

* ``quiet``: no MI episode open (and none ended recently).
* ``mi_suspected``: an MI episode is open and nobody has acknowledged it.
* ``acknowledged``: an open MI episode was acknowledged by a nurse. An escalation to a higher
  level after the acknowledgement re-arms it (back to ``mi_suspected``): a worse condition must
  be seen again.
* ``ended``: the last episode ended (the worker sent phase ``end``) less than
  ``ended_retention_s`` ago.

Technical alerts (``alert_type == "technical"``: leads off, no data, backend failed, ...) are
kept apart from MI episodes: they never change the MI state, and the page lists them in their
own box. ST-change alerts (``alert_type == "st"``, issue #19) are physiological but are not MI:
they are listed in a box of their own and make the bed need attention until acknowledged. An
alert's ST vector (``Alert.st``) is kept on its episode; the view names the leads with the
largest ST change from the bed's baseline (``st_leads``). Alerts are deduplicated by ``event_id`` (a replayed duplicate carries the same id) and
acknowledgements by ``ack_id``; an acknowledgement that arrives before its alert (the acks and
alerts topics are not ordered with each other) is held and applied when the alert shows up.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from stream.core.schema import Alert
from stream.core.st import largest_change
from stream.errors import WireError

QUIET = "quiet"
MI_SUSPECTED = "mi_suspected"
ACKNOWLEDGED = "acknowledged"
ENDED = "ended"
STATES = (QUIET, MI_SUSPECTED, ACKNOWLEDGED, ENDED)

_MAX_SEEN = 200_000  # event/ack ids remembered for deduplication (oldest forgotten first)


@dataclass(frozen=True)
class Ack:
    """An acknowledgement as published on the acks topic (JSON)."""

    ack_id: str
    alert_id: str
    bed_id: str
    acked_ns: int
    by: str = ""

    @classmethod
    def from_mapping(cls, obj: Mapping[str, Any]) -> "Ack":
        """Validate a decoded acks-topic message; raise :class:`WireError` naming the bad field."""
        try:
            ack_id, alert_id, bed_id, acked_ns = obj["ack_id"], obj["alert_id"], obj["bed_id"], obj["acked_ns"]
        except (KeyError, TypeError) as exc:
            raise WireError("bad_ack", f"acknowledgement lacks field {exc}") from None
        for name, value in (("ack_id", ack_id), ("alert_id", alert_id), ("bed_id", bed_id)):
            if not isinstance(value, str) or not value or len(value) > 256:
                raise WireError("bad_ack", f"{name}={value!r}")
        if isinstance(acked_ns, bool) or not isinstance(acked_ns, int):
            raise WireError("bad_ack", f"acked_ns={acked_ns!r}")
        by = obj.get("by", "")
        return cls(ack_id, alert_id, bed_id, acked_ns, str(by)[:64] if by else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Episode:
    """One alert episode (a stable ``alert_id``) as the dashboard knows it."""

    alert_id: str
    alert_type: str
    kind: str
    bed_id: str
    patient_id: str
    started_ns: int
    updated_ns: int
    phase: str
    level: int
    probability: float | None
    labs: list[dict[str, Any]] = field(default_factory=list)
    labs_available: bool = True
    quality_flags: list[str] = field(default_factory=list)
    top_leads: list[str] = field(default_factory=list)
    advisories: list[str] = field(default_factory=list)
    ended_ns: int | None = None
    acked_ns: int | None = None
    acked_by: str = ""
    acked_level: int = 0
    st: dict[str, Any] | None = None  # issue #19: ST per lead and change from baseline at the last event

    @property
    def open(self) -> bool:
        return self.ended_ns is None

    @property
    def acknowledged(self) -> bool:
        # Escalation past the acknowledged level re-arms the alarm.
        return self.acked_ns is not None and self.level <= self.acked_level

    def view(self) -> dict[str, Any]:
        d = asdict(self)
        d["acknowledged"] = self.acknowledged
        d["st_leads"] = largest_change(self.st)
        return d


def _event_time(alert: Alert) -> int:
    return alert.emitted_ns or alert.window_end_ns


class WardState:
    """All beds of the ward, rebuilt by applying every alert and acknowledgement in order.

    Args:
        ended_retention_s: how long an ended MI episode keeps its bed in ``ended`` before the
            bed shows ``quiet`` again.
    """

    def __init__(self, ended_retention_s: float = 3600.0) -> None:
        self.ended_retention_ns = int(ended_retention_s * 1e9)
        self._episodes: dict[str, Episode] = {}
        self._beds: dict[str, list[str]] = {}  # bed -> alert ids, oldest first
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._pending_acks: dict[str, list[Ack]] = {}
        self.duplicates = 0

    # -- input -----------------------------------------------------------------------------------
    def _remember(self, key: str) -> bool:
        """True if ``key`` is new (and remember it), False on a duplicate."""
        if key in self._seen:
            self.duplicates += 1
            return False
        self._seen[key] = None
        if len(self._seen) > _MAX_SEEN:
            self._seen.popitem(last=False)
        return True

    def apply_alert(self, alert: Alert) -> str | None:
        """Apply one alert event; return the bed whose view changed, or None for a duplicate."""
        if not self._remember("event:" + alert.event_id):
            return None
        t = _event_time(alert)
        ep = self._episodes.get(alert.alert_id)
        if ep is None:
            ep = Episode(alert.alert_id, alert.alert_type, alert.kind, alert.bed_id, alert.patient_id,
                         started_ns=t, updated_ns=t, phase=alert.phase, level=alert.level,
                         probability=alert.probability)
            self._episodes[alert.alert_id] = ep
            self._beds.setdefault(alert.bed_id, []).append(alert.alert_id)
        elif not ep.open:
            return alert.bed_id if alert.phase == "end" else None  # an ended episode never reopens
        ep.phase = alert.phase
        ep.updated_ns = max(ep.updated_ns, t)
        ep.level = alert.level
        if alert.probability is not None:
            ep.probability = alert.probability
        if alert.phase != "end" or alert.labs:
            ep.labs = list(alert.labs)
            ep.labs_available = alert.labs_available
        if alert.quality_flags or alert.phase != "end":
            ep.quality_flags = list(alert.quality_flags)
        if alert.top_leads:
            ep.top_leads = list(alert.top_leads)
        if alert.st:
            ep.st = dict(alert.st)
        ep.advisories = list(alert.advisories)
        if alert.phase == "end":
            ep.ended_ns = t
        for ack in self._pending_acks.pop(alert.alert_id, []):
            self._ack_episode(ep, ack)
        return alert.bed_id

    def apply_ack(self, ack: Ack) -> str | None:
        """Apply one acknowledgement; return the bed whose view changed, or None (duplicate/held)."""
        if not self._remember("ack:" + ack.ack_id):
            return None
        ep = self._episodes.get(ack.alert_id)
        if ep is None:
            self._pending_acks.setdefault(ack.alert_id, []).append(ack)
            return None
        self._ack_episode(ep, ack)
        return ep.bed_id

    @staticmethod
    def _ack_episode(ep: Episode, ack: Ack) -> None:
        if ep.acked_ns is None or ep.level > ep.acked_level:
            ep.acked_ns = ack.acked_ns
            ep.acked_by = ack.by
            ep.acked_level = ep.level

    # -- views -----------------------------------------------------------------------------------
    def episode(self, alert_id: str) -> Episode | None:
        return self._episodes.get(alert_id)

    def bed_view(self, bed_id: str, now_ns: int) -> dict[str, Any]:
        """What the page shows for one bed at time ``now_ns``."""
        eps = [self._episodes[a] for a in self._beds.get(bed_id, [])]
        mi = [e for e in eps if e.alert_type == "mi"]
        open_mi = [e for e in mi if e.open]
        current: Episode | None = None
        if open_mi:
            current = max(open_mi, key=lambda e: (e.level, e.started_ns))
            state = ACKNOWLEDGED if current.acknowledged else MI_SUSPECTED
        else:
            recent = [e for e in mi if e.ended_ns is not None and now_ns - e.ended_ns <= self.ended_retention_ns]
            if recent:
                current = max(recent, key=lambda e: e.ended_ns or 0)
                state = ENDED
            else:
                state = QUIET
        technical = sorted((e for e in eps if e.alert_type == "technical" and e.open), key=lambda e: e.started_ns)
        st_open = sorted((e for e in eps if e.alert_type == "st" and e.open), key=lambda e: e.started_ns)
        patient = current.patient_id if current else (eps[-1].patient_id if eps else "")
        return {
            "bed_id": bed_id,
            "patient_id": patient,
            "state": state,
            "mi": current.view() if current else None,
            "technical": [e.view() for e in technical],
            "st_change": [e.view() for e in st_open],
            "needs_attention": state == MI_SUSPECTED or any(not e.acknowledged for e in technical + st_open),
        }

    def beds(self) -> list[str]:
        return sorted(self._beds)

    def snapshot(self, now_ns: int) -> dict[str, Any]:
        """Every bed's view, sorted by bed id (what a page loads on (re)connect)."""
        return {"beds": [self.bed_view(b, now_ns) for b in self.beds()], "now_ns": now_ns}

    def open_alert_ids(self) -> list[str]:
        return [a for a, e in self._episodes.items() if e.open]
