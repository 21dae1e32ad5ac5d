"""Per-bed sliding windows over live ECG chunks (pure core: no Kafka, no sockets).

A monitor gateway sends each bed's 12-lead (or 8-lead) ECG as consecutive :class:`EcgChunk`
messages (wire format in :mod:`stream.core.schema`). :class:`Windower` keeps one buffer per bed and
emits :class:`EcgWindow` objects of ``window_s`` seconds every ``hop_s`` seconds, at the model
rate, in the 12 standard leads.

Design choices (see docs/STREAMING.md):

* **Buffer at the source rate, resample each emitted window.** The buffer keeps the raw samples
  as they arrived (any rate, any lead set); each window is cut at the source rate and converted
  with :func:`engine.pipeline.to_model_rate` (lead mapping by name, limb-lead derivation,
  polyphase resampling). The resampler therefore has no state across chunks, and a window is
  bit-identical to the offline window cut from the same record at the same offset
  (``to_model_rate(record[:, k*hop : k*hop + T])``): for a 10 s PTB-XL record streamed from its
  first sample, window 0 *is* the record.
* **A deterministic window grid.** Sample indices are anchored at ``seq * n_samples`` of the
  first chunk a worker sees for a bed (gateways send fixed-size chunks), and window ``k`` covers
  source samples ``[k*hop, k*hop + T)``. A worker that starts mid-stream (restart, rebalance)
  cuts the same windows with the same ``seq`` and timestamps, so alert ids derived from them
  (``stream.core.schema.make_alert_id``) are identical on a replay.
* **Gaps** (missing seq numbers or a time jump) up to ``max_gap_s`` are filled with NaN and the
  windows touching them carry the flag ``gap``; a longer gap resets the bed (a new grid).
  **Duplicates** (same seq) and **out-of-order** chunks (older seq) are dropped and counted,
  except an older seq whose samples start after the buffer's end: the source restarted its
  counter (a monitor reboot), which resets the bed (``seq_restart``) instead of silencing it
  until the new counter passes the old one.
  A change of rate or lead set resets the bed. Lead names map as in :func:`engine.signal.leads.map_leads`
  (case-insensitive, aliases); extra signals (respiration, pleth) are ignored, logged once per bed
  and named on every window as ``ignored:NAME``; a bed with no standard lead at all gets no windows. NaN samples (lead off) flow into the window and
  :func:`engine.pipeline.quality_flags` names them. ``end_of_stream`` discharges the bed.
* **Bounded memory**: a bed holds at most one window plus one chunk of samples; beds silent for
  ``idle_s`` are evicted by :meth:`Windower.evict_idle`.
* **Cutting and converting are two steps.** :meth:`Windower.push` with ``convert=False`` cuts
  windows at the source rate only (cheap bookkeeping); :func:`convert_windows` then maps,
  resamples and quality-checks a whole batch of them at once (bit-identical to converting each
  one alone). The stream worker converts each micro-batch on its event loop while the model
  thread scores the previous one (:mod:`stream.worker.processor`). The default (``convert=True``)
  converts before returning.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, MutableMapping, Sequence

import numpy as np

from engine.config import MirageConfig
from engine.errors import SignalError
from engine.pipeline import quality_flags_batch, to_model_rate_batch
from engine.signal.leads import ignored_flags, map_leads, to_standard_leads
from engine.signal.resample import rate_ratio
from stream.core.schema import EcgChunk
from stream.errors import WindowError

log = logging.getLogger(__name__)

GAP_FLAG = "gap"


@dataclass
class EcgWindow:
    """One window of one bed, ready for the model.

    Attributes:
        bed_id: the bed.
        patient_id: pseudonymous patient id from the chunks.
        seq: window index on the bed's grid (deterministic, see the module docstring).
        start_ns: time of the first sample (Unix ns).
        end_ns: time just after the last sample (Unix ns).
        signal: (12, T) float32 mV at the model rate in :data:`engine.config.LEADS` order; NaN where
            missing. None until the window is converted (:func:`convert_windows`).
        flags: quality flags (``missing:V3``, ``flat:II``, ``gap``, ...); before conversion only ``gap``.
        last_arrival_ns: arrival time (injected clock) of the chunk that completed the window;
            end-to-end latency is measured from it.
        raw: (L, S) float32 mV at the source rate in ``source_leads`` order while unconverted, else None.
        source_fs: the source rate of ``raw``.
        source_leads: the source lead names of ``raw``.
        st: the ST vector once measured (:mod:`stream.worker.st_stage`), else None.
    """

    bed_id: str
    patient_id: str
    seq: int
    start_ns: int
    end_ns: int
    signal: np.ndarray | None
    flags: list[str] = field(default_factory=list)
    last_arrival_ns: int = 0
    raw: np.ndarray | None = None
    source_fs: float = 0.0
    source_leads: tuple[str, ...] = ()
    st: dict | None = None  # issue #19: the window's ST vector (stream.core.st.st_vector), set by the worker's ST stage


def convert_windows(windows: Sequence[EcgWindow], cfg: MirageConfig) -> list[EcgWindow]:
    """Convert cut windows to the model rate and 12 leads and add their quality flags, in place.

    Windows sharing a source rate and lead set are converted together (one
    :func:`engine.pipeline.to_model_rate_batch` and one :func:`engine.pipeline.quality_flags_batch`
    call): the same signals and flags as converting each alone. Already converted windows are
    left as they are. Returns ``windows``.

    Raises:
        WindowError: a converted window does not have ``cfg.T`` samples.
    """
    groups: dict[tuple[float, tuple[str, ...], int], list[EcgWindow]] = {}
    for w in windows:
        if w.signal is None:
            if w.raw is None:
                raise WindowError(f"window {w.bed_id}/{w.seq} has neither a signal nor raw samples")
            groups.setdefault((w.source_fs, w.source_leads, int(w.raw.shape[1])), []).append(w)
    for (fs, leads, _), group in groups.items():
        raw = np.stack([w.raw for w in group])  # type: ignore[misc]  # raw checked above
        sig = to_model_rate_batch(raw, fs, leads, cfg, allow_missing=True, ignore_extra=True).astype(np.float32, order="C")
        if sig.shape[2] != cfg.T:
            raise WindowError(f"resampled window has {sig.shape[2]} samples, expected T={cfg.T}")
        for w, x, q in zip(group, sig, quality_flags_batch(sig, cfg.fs)):
            w.signal = x
            w.flags = q + w.flags  # quality flags first, then "gap"
            w.raw = None
    return list(windows)


def extra_signal_flags(bed_id: str, leads: Sequence[str]) -> tuple[str, ...]:
    """``ignored:NAME`` flags of a bed's signals that are no standard lead, logged once (per new lead set).

    Raises:
        SignalError: not one of the signals is a standard lead (nothing to score).
    """
    lead_map = map_leads(leads, allow_missing=True)
    if not lead_map.rows:
        raise SignalError(f"none of the signals {list(leads)} is one of the 12 standard leads")
    if lead_map.extra:
        log.info("bed %s: extra signals %s ignored (not standard ECG leads)", bed_id, list(lead_map.extra))
    return tuple(ignored_flags(lead_map.extra))


@dataclass
class PushResult:
    """What one chunk did: windows it completed, whether it was dropped, whether the bed left."""

    windows: list[EcgWindow] = field(default_factory=list)
    dropped: str = ""  # "" | "duplicate" | "out_of_order" | "invalid"
    reset: str = ""  # "" | "gap" | "rate_change" | "leads_change" | "patient_change"
    discharged: bool = False


@dataclass
class BedBuffer:
    """Window buffer of one bed (source rate); held by its :class:`stream.core.session.BedSession`."""

    patient_id: str
    fs: float
    leads: tuple[str, ...]
    base_index: int  # absolute sample index of buffer column 0
    buffer: np.ndarray  # (L, n) float32 mV
    gap_mask: np.ndarray  # (n,) bool, True where filled because of a gap
    next_window: int  # k of the next window to emit
    last_seq: int
    end_ns: int  # time just after the last buffered sample
    last_arrival_ns: int
    last_seen_ns: int  # local clock when the last chunk was pushed (idle eviction)
    anchor_ns: int  # time of absolute sample index 0
    mappable: bool = True  # the lead set maps to the 12 standard leads (checked once per bed)
    ignored: tuple[str, ...] = ()  # ``ignored:NAME`` flags of its extra signals (every window carries them)

    @property
    def end_index(self) -> int:
        return self.base_index + self.buffer.shape[1]


class Windower:
    """Cut per-bed windows of ``cfg.T`` samples every hop from a stream of chunks.

    Args:
        cfg: the model configuration (``fs``, ``window_s``, ``hop_s``).
        hop_s: hop override in seconds (0 = ``cfg.hop_s``).
        max_gap_s: longest gap bridged with NaN; longer gaps reset the bed.
        idle_s: beds with no chunk for this long are evicted by :meth:`evict_idle`.
        clock: ``() -> ns`` for arrival times (injected for tests).
        convert: convert windows (model rate, 12 leads, quality flags) before :meth:`push` returns;
            False returns them cut at the source rate for :func:`convert_windows`.
        beds: where the per-bed buffers live (a dict by default; the stream worker passes its
            :class:`stream.core.session.BedSessions` view, so each bed's buffer is in its session).
    """

    def __init__(self, cfg: MirageConfig, *, hop_s: float = 0.0, max_gap_s: float = 5.0, idle_s: float = 300.0,
                 clock: Callable[[], int] | None = None, convert: bool = True,
                 beds: MutableMapping[str, BedBuffer] | None = None) -> None:
        if hop_s < 0 or max_gap_s < 0 or idle_s <= 0:
            raise WindowError(f"hop_s={hop_s}, max_gap_s={max_gap_s}, idle_s={idle_s} must be >= 0 (idle_s > 0)")
        self.cfg = cfg
        self.window_s = float(cfg.window_s)
        self.hop_s = float(hop_s or cfg.hop_s)
        self.max_gap_s = float(max_gap_s)
        self.idle_ns = int(idle_s * 1e9)
        self._clock = clock or time.time_ns
        self.convert = convert
        self.beds: MutableMapping[str, BedBuffer] = {} if beds is None else beds
        self.counts: Counter[str] = Counter()

    # -- grid helpers -------------------------------------------------------------------------
    def _samples(self, seconds: float, fs: float) -> int:
        n = seconds * fs
        if abs(n - round(n)) > 1e-6:
            raise WindowError(f"{seconds} s at {fs} Hz is not a whole number of samples")
        return int(round(n))

    def window_samples(self, fs: float) -> tuple[int, int]:
        """(window length, hop) in source samples at rate ``fs``."""
        return self._samples(self.window_s, fs), self._samples(self.hop_s, fs)

    def next_window_start(self, bed_id: str) -> int | None:
        """Absolute source sample index where the bed's next window starts (None = unknown bed).

        Every sample before it has been consumed by emitted windows; the worker uses it to
        decide which chunks may be acknowledged (at-least-once).
        """
        bed = self.beds.get(bed_id)
        if bed is None:
            return None
        _, hop = self.window_samples(bed.fs)
        return bed.next_window * hop

    def end_index(self, bed_id: str) -> int | None:
        """Absolute source sample index just after the bed's last buffered sample (None = unknown bed)."""
        bed = self.beds.get(bed_id)
        return None if bed is None else bed.end_index

    # -- main entry ---------------------------------------------------------------------------
    def push(self, chunk: EcgChunk, arrival_ns: int | None = None) -> PushResult:
        """Add one chunk; return the windows it completes (oldest first).

        ``arrival_ns`` is when the chunk entered the system (e.g. its Kafka timestamp); windows
        carry it as ``last_arrival_ns`` for latency measurement. Defaults to the clock.
        """
        seen = self._clock()
        now = seen if arrival_ns is None else int(arrival_ns)
        res = PushResult()
        samples = np.asarray(chunk.samples, dtype=np.float32)
        if samples.ndim != 2 or samples.shape[0] != len(chunk.leads):
            self.counts["invalid"] += 1
            res.dropped = "invalid"
            return res
        try:
            self.window_samples(chunk.fs)
        except WindowError:
            self.counts["invalid"] += 1
            res.dropped = "invalid"
            return res
        bed = self.beds.get(chunk.bed_id)
        if bed is not None:
            if chunk.seq == bed.last_seq:
                self.counts["duplicate"] += 1
                res.dropped = "duplicate"
                return res
            restarted = chunk.seq < bed.last_seq and self._is_seq_restart(bed, chunk)
            if chunk.seq < bed.last_seq and not restarted:
                self.counts["out_of_order"] += 1
                res.dropped = "out_of_order"
                return res
            reason = "seq_restart" if restarted else self._change_reason(bed, chunk)
            if reason:
                res.reset = reason
                self.counts[f"reset_{reason}"] += 1
                bed = None
            else:
                gap = self._gap_samples(bed, chunk)
                if gap > math.floor(self.max_gap_s * chunk.fs):
                    res.reset = "gap"
                    self.counts["reset_gap"] += 1
                    bed = None
                else:
                    if gap > 0:
                        self.counts["gap"] += 1
                        self._append(bed, np.full((len(bed.leads), gap), np.nan, np.float32), gap_fill=True)
                    self._append(bed, samples, gap_fill=False)
        if bed is None:
            bed = self._new_bed(chunk, samples)
            self.beds[chunk.bed_id] = bed
        bed.last_seq = chunk.seq
        bed.last_arrival_ns = now
        bed.last_seen_ns = seen
        bed.end_ns = chunk.end_ns
        res.windows = self._emit(chunk.bed_id, bed)
        if self.convert and res.windows:
            convert_windows(res.windows, self.cfg)
        if chunk.end_of_stream:
            del self.beds[chunk.bed_id]
            self.counts["discharged"] += 1
            res.discharged = True
        return res

    @staticmethod
    def _is_seq_restart(bed: BedBuffer, chunk: EcgChunk) -> bool:
        """An older seq whose samples are *newer* than the buffer: the source restarted its counter
        (monitor or gateway reboot), not a re-delivered old chunk (whose start lies at least a chunk
        before the buffer's end). Half a chunk of clock tolerance."""
        half_chunk_ns = int(0.5e9 * chunk.n_samples / chunk.fs) if chunk.fs > 0 else 0
        return chunk.start_ns >= bed.end_ns - half_chunk_ns

    @staticmethod
    def _change_reason(bed: BedBuffer, chunk: EcgChunk) -> str:
        if abs(chunk.fs - bed.fs) > 1e-6:
            return "rate_change"
        if tuple(chunk.leads) != bed.leads:
            return "leads_change"
        if chunk.patient_id != bed.patient_id:
            return "patient_change"
        return ""

    @staticmethod
    def _gap_samples(bed: BedBuffer, chunk: EcgChunk) -> int:
        """Samples missing between the buffer and ``chunk`` (0 = contiguous)."""
        if chunk.seq == bed.last_seq + 1:
            # Consecutive chunk: trust the sequence number; clock jitter is not a gap.
            return 0
        gap = int(round((chunk.start_ns - bed.end_ns) * bed.fs / 1e9))
        if gap <= 0:
            # Seq jumped but time did not (gateway restarted its clock?): size the gap by seq.
            gap = (chunk.seq - bed.last_seq - 1) * chunk.n_samples
        return gap

    def _new_bed(self, chunk: EcgChunk, samples: np.ndarray) -> BedBuffer:
        base = int(chunk.seq) * chunk.n_samples
        _, hop = self.window_samples(chunk.fs)
        anchor_ns = chunk.start_ns - int(round(base * 1e9 / chunk.fs))
        bed = BedBuffer(patient_id=chunk.patient_id, fs=float(chunk.fs), leads=tuple(chunk.leads), base_index=base,
                   buffer=samples.copy(), gap_mask=np.zeros(samples.shape[1], bool),
                   next_window=-(-base // hop), last_seq=chunk.seq, end_ns=chunk.end_ns,
                   last_arrival_ns=0, last_seen_ns=0, anchor_ns=anchor_ns)
        try:
            # Lead mapping depends on the names only: check it once, not on every window.
            to_standard_leads(np.zeros((len(bed.leads), 1)), bed.leads, allow_missing=True, ignore_extra=True)
            rate_ratio(bed.fs, float(self.cfg.fs))
            bed.ignored = extra_signal_flags(chunk.bed_id, bed.leads)
        except SignalError as exc:
            log.warning("bed %s: its leads or rate cannot be converted for the model, no windows: %s", chunk.bed_id, exc)
            bed.mappable = False
        return bed

    @staticmethod
    def _append(bed: BedBuffer, samples: np.ndarray, *, gap_fill: bool) -> None:
        bed.buffer = np.concatenate([bed.buffer, samples], axis=1)
        bed.gap_mask = np.concatenate([bed.gap_mask, np.full(samples.shape[1], gap_fill, bool)])

    def _emit(self, bed_id: str, bed: BedBuffer) -> list[EcgWindow]:
        win, hop = self.window_samples(bed.fs)
        out: list[EcgWindow] = []
        while bed.next_window * hop + win <= bed.end_index:
            start = bed.next_window * hop
            lo = start - bed.base_index
            if not bed.mappable:
                self.counts["unmappable"] += 1
                bed.next_window += 1
                continue
            # A view: the buffer is only ever replaced (concatenate, slice), never written in place.
            raw = bed.buffer[:, lo:lo + win]
            flags = ([GAP_FLAG] if bed.gap_mask[lo:lo + win].any() else []) + list(bed.ignored)
            t0 = bed.anchor_ns + int(round(start * 1e9 / bed.fs))
            t1 = bed.anchor_ns + int(round((start + win) * 1e9 / bed.fs))
            out.append(EcgWindow(bed_id, bed.patient_id, bed.next_window, t0, t1, None, flags, bed.last_arrival_ns,
                                 raw=raw, source_fs=bed.fs, source_leads=bed.leads))
            self.counts["windows"] += 1
            bed.next_window += 1
        # Keep only what future windows need: from the next window's start on.
        keep_from = bed.next_window * hop - bed.base_index
        if keep_from > 0:
            keep_from = min(keep_from, bed.buffer.shape[1])
            bed.buffer = bed.buffer[:, keep_from:]
            bed.gap_mask = bed.gap_mask[keep_from:]
            bed.base_index += keep_from
        return out

    # -- housekeeping -------------------------------------------------------------------------
    def discharge(self, bed_id: str) -> bool:
        """Forget a bed (discharge, partition revoked). Returns whether it was known."""
        return self.beds.pop(bed_id, None) is not None

    def evict_idle(self, now_ns: int | None = None) -> list[str]:
        """Forget beds with no chunk for ``idle_s``; return their ids."""
        now = self._clock() if now_ns is None else now_ns
        # By the local clock, not the chunks' broker timestamps: a worker catching up on hours-old
        # data must not evict the beds it is rebuilding.
        gone = [b for b, s in self.beds.items() if now - s.last_seen_ns > self.idle_ns]
        for b in gone:
            del self.beds[b]
        self.counts["evicted"] += len(gone)
        return gone

    def buffered_samples(self) -> int:
        """Total samples held over all beds (for the memory gauge)."""
        return sum(int(s.buffer.size) for s in self.beds.values())

    def bed_ids(self) -> Sequence[str]:
        return list(self.beds)
