"""Which beds are monitored right now (pure core: no Kafka, no clock of its own).

A bed becomes *monitored* (admitted) on its first ECG chunk and stops being monitored
(discharged) when

* its gateway sends an explicit end-of-stream chunk (:attr:`stream.core.schema.EcgChunk.end_of_stream`,
  the discharge / "monitoring off" of IEC 60601-2-27 201.12.1.101: a monitor that is switched
  off on purpose must not alarm), or
* no chunk has arrived for ``idle_discharge_s`` (the patient left without a goodbye), or
* a chunk names a different patient for the bed (the old patient is discharged, the new one
  admitted in the same call).

Only monitored beds may raise the ``no_data`` technical alarm: a discharged bed is silent
until it sends data again. Every change is returned as an :class:`AdmissionEvent` so the worker
can end the bed's open technical and MI alerts (see :class:`stream.core.technical.TechnicalMonitor`
and :meth:`stream.core.session.BedSession.discharge`).

Times are injected (Unix epoch ns of the chunk's *arrival*, i.e. wall clock), so the core is
deterministic under test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import MutableMapping

from stream.errors import SettingsError

log = logging.getLogger(__name__)

ADMITTED = "admitted"
DISCHARGED = "discharged"
REASON_FIRST_CHUNK = "first_chunk"
REASON_END_OF_STREAM = "end_of_stream"
REASON_IDLE = "idle"
REASON_PATIENT_CHANGE = "patient_change"


@dataclass(frozen=True)
class AdmissionEvent:
    """A bed started or stopped being monitored.

    Attributes:
        change: :data:`ADMITTED` or :data:`DISCHARGED`.
        bed_id: the bed.
        patient_id: the patient admitted or discharged (pseudonymous).
        reason: :data:`REASON_FIRST_CHUNK`, :data:`REASON_END_OF_STREAM`, :data:`REASON_IDLE`
            or :data:`REASON_PATIENT_CHANGE`.
        t_ns: when it happened (arrival time of the chunk, or the idle deadline).
    """

    change: str
    bed_id: str
    patient_id: str
    reason: str
    t_ns: int


@dataclass
class BedAdmission:
    """A monitored bed: who is in it, since when, and when its last chunk arrived."""

    patient_id: str
    admitted_ns: int
    last_chunk_ns: int


class Admissions:
    """Track monitored beds from chunk arrivals.

    Args:
        idle_discharge_s: a bed with no chunk for this long is discharged by :meth:`expire`
            (``Settings.idle_discharge_s``); 0 disables idle discharge (the stream worker's
            :class:`stream.core.session.BedSessions` runs the one idle timer itself).
        beds: where the admissions live (a dict by default, or a BedSessions view).
    """

    def __init__(self, idle_discharge_s: float, beds: MutableMapping[str, BedAdmission] | None = None) -> None:
        if not idle_discharge_s >= 0:
            raise SettingsError(f"idle_discharge_s={idle_discharge_s} must be >= 0")
        self.idle_discharge_s = float(idle_discharge_s)
        self._beds: MutableMapping[str, BedAdmission] = {} if beds is None else beds

    def on_chunk(self, bed_id: str, patient_id: str, t_ns: int, end_of_stream: bool = False) -> list[AdmissionEvent]:
        """Record a chunk that arrived at ``t_ns``; return the admissions/discharges it causes.

        An end-of-stream chunk of a bed that is not monitored causes nothing (a repeated
        discharge is idempotent).
        """
        events: list[AdmissionEvent] = []
        bed = self._beds.get(bed_id)
        if bed is not None and bed.patient_id != patient_id:
            events.append(self._discharge(bed_id, REASON_PATIENT_CHANGE, t_ns))
            bed = None
        if end_of_stream:
            if bed is not None:
                events.append(self._discharge(bed_id, REASON_END_OF_STREAM, t_ns))
            return events
        if bed is None:
            self._beds[bed_id] = BedAdmission(patient_id, t_ns, t_ns)
            events.append(AdmissionEvent(ADMITTED, bed_id, patient_id, REASON_FIRST_CHUNK, t_ns))
            log.info("bed %s admitted (monitoring on)", bed_id)
        else:
            # Chunks may be re-read after a restart: the newest arrival wins.
            bed.last_chunk_ns = max(bed.last_chunk_ns, t_ns)
        return events

    def expire(self, now_ns: int) -> list[AdmissionEvent]:
        """Discharge every bed silent for ``idle_discharge_s`` or longer at ``now_ns``."""
        if self.idle_discharge_s <= 0:
            return []
        limit = int(self.idle_discharge_s * 1e9)
        idle = sorted(b for b, st in self._beds.items() if now_ns - st.last_chunk_ns >= limit)
        return [self._discharge(b, REASON_IDLE, self._beds[b].last_chunk_ns + limit) for b in idle]

    def discharge(self, bed_id: str, t_ns: int, reason: str = REASON_END_OF_STREAM) -> list[AdmissionEvent]:
        """Discharge a bed explicitly (e.g. its partition moved to another worker)."""
        return [self._discharge(bed_id, reason, t_ns)] if bed_id in self._beds else []

    def restore(self, bed_id: str, admission: BedAdmission) -> None:
        """Put back a bed saved by a previous worker (no event: it never stopped being monitored)."""
        self._beds[bed_id] = admission

    def forget(self, bed_id: str) -> None:
        """Stop tracking a bed without a discharge event (another worker owns it now)."""
        self._beds.pop(bed_id, None)

    def _discharge(self, bed_id: str, reason: str, t_ns: int) -> AdmissionEvent:
        bed = self._beds.pop(bed_id)
        log.info("bed %s discharged (%s)", bed_id, reason)
        return AdmissionEvent(DISCHARGED, bed_id, bed.patient_id, reason, t_ns)

    def monitored(self, bed_id: str) -> bool:
        """True while the bed is admitted."""
        return bed_id in self._beds

    def get(self, bed_id: str) -> BedAdmission | None:
        """The bed's admission record, or None when it is not monitored."""
        return self._beds.get(bed_id)

    def beds(self) -> list[str]:
        """Monitored beds, sorted."""
        return sorted(self._beds)

    def __len__(self) -> int:
        return len(self._beds)
