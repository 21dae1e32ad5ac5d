"""Wire schemas: the one definition of every message on MIRAGE's topics.

Topics (names configurable in :mod:`stream.settings`):

* chunks (key = bed id): :class:`EcgChunk`, compact binary, described below.
* labs (key = patient id): :class:`LabResult`, UTF-8 JSON.
* alerts (key = bed id): :class:`Alert`, UTF-8 JSON.
* dead letters: the raw message value plus headers ``mirage-reason``, ``mirage-detail``,
  ``mirage-source-topic``.

ECG chunk, format version 1 (all integers little-endian)::

    offset size  field
    0      4     magic  b"MECG"
    4      1     version = 1
    5      1     flags  (bit 0: end of stream / discharge; other bits 0)
    6      1     n_leads L (1..16)
    7      1     reserved = 0
    8      4     fs          float32, sampling rate in Hz (> 0)
    12     4     gain_uv     float32, microvolts per count (> 0); mV = count * gain_uv / 1000
    16     8     seq         uint64, per-bed chunk sequence number, +1 per chunk
    24     8     start_ns    int64, Unix epoch nanoseconds of the first sample
    32     4     n_samples   uint32, samples per lead S
    36     2+n   bed_id      uint16 byte length + UTF-8
    ..     2+n   patient_id  uint16 byte length + UTF-8 (pseudonymous)
    ..     L*(1+n) lead names  uint8 byte length + ASCII, per lead ("I", "II", "V1", ...)
    ..     2*L*S samples     int16, lead-major (all of lead 0, then lead 1, ...)

Count -32768 marks a missing sample (gap / lead off); it decodes to NaN. A gateway in any
language can produce this with a byte buffer; :func:`encode_chunk` is the reference.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from stream.errors import WireError

CHUNK_MAGIC = b"MECG"
CHUNK_VERSION = 1
FLAG_END_OF_STREAM = 0x01
MISSING_COUNT = -32768
MAX_LEADS = 16
MAX_SAMPLES = 1_000_000
MAX_ID_BYTES = 256
_HEADER = struct.Struct("<4sBBBBffQqI")


@dataclass
class EcgChunk:
    """A run of consecutive samples from one bed's monitor.

    ``samples`` is ``(L, S)`` float32 in millivolts (NaN where missing).
    """

    bed_id: str
    patient_id: str
    seq: int
    start_ns: int
    fs: float
    leads: tuple[str, ...]
    samples: np.ndarray
    end_of_stream: bool = False
    gain_uv: float = 1.0

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[1])

    @property
    def end_ns(self) -> int:
        """Time of the sample after the last one."""
        return self.start_ns + int(round(self.n_samples * 1e9 / self.fs))


def encode_chunk(chunk: EcgChunk) -> bytes:
    """Encode a chunk (mV, NaN = missing) into wire format v1; values clip to the int16 range."""
    samples = np.asarray(chunk.samples, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[0] != len(chunk.leads):
        raise WireError("bad_shape", f"samples shape {samples.shape} does not match {len(chunk.leads)} leads")
    if not (0 < len(chunk.leads) <= MAX_LEADS):
        raise WireError("bad_lead_count", f"n_leads={len(chunk.leads)}")
    if not (chunk.fs > 0 and math.isfinite(chunk.fs)) or not (chunk.gain_uv > 0 and math.isfinite(chunk.gain_uv)):
        raise WireError("bad_rate", f"fs={chunk.fs}, gain_uv={chunk.gain_uv}")
    counts = samples * (1000.0 / chunk.gain_uv)
    missing = ~np.isfinite(counts)
    counts = np.clip(np.rint(np.where(missing, 0.0, counts)), -32767, 32767).astype("<i2")
    counts[missing] = MISSING_COUNT
    for what, value in (("bed_id", chunk.bed_id), ("patient_id", chunk.patient_id)):
        if not value or not value.isprintable() or len(value.encode("utf-8")) > MAX_ID_BYTES:
            raise WireError("bad_id", f"{what} {value!r} is empty, not printable or longer than {MAX_ID_BYTES} bytes")
    bed = chunk.bed_id.encode("utf-8")
    pat = chunk.patient_id.encode("utf-8")
    flags = FLAG_END_OF_STREAM if chunk.end_of_stream else 0
    parts = [
        _HEADER.pack(CHUNK_MAGIC, CHUNK_VERSION, flags, len(chunk.leads), 0, float(chunk.fs), float(chunk.gain_uv),
                     int(chunk.seq), int(chunk.start_ns), samples.shape[1]),
        struct.pack("<H", len(bed)), bed, struct.pack("<H", len(pat)), pat,
    ]
    for name in chunk.leads:
        b = name.encode("ascii")
        parts += [struct.pack("<B", len(b)), b]
    parts.append(counts.tobytes())
    return b"".join(parts)


def decode_chunk(data: bytes, *, max_bytes: int = 4 * 1024 * 1024) -> EcgChunk:
    """Decode and validate wire format v1, or raise :class:`WireError` with a reason code."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError("not_bytes", f"value of type {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise WireError("too_large", f"{len(data)} bytes > limit {max_bytes}")
    if len(data) < _HEADER.size:
        raise WireError("truncated", f"{len(data)} bytes < header {_HEADER.size}")
    magic, version, flags, n_leads, _res, fs, gain, seq, start_ns, n_samples = _HEADER.unpack_from(data, 0)
    if magic != CHUNK_MAGIC:
        raise WireError("bad_magic", f"magic {magic!r}")
    if version != CHUNK_VERSION:
        raise WireError("bad_version", f"version {version}, this build reads {CHUNK_VERSION}")
    if flags & ~FLAG_END_OF_STREAM:
        raise WireError("bad_flags", f"flags 0x{flags:02x}")
    if not (1 <= n_leads <= MAX_LEADS):
        raise WireError("bad_lead_count", f"n_leads={n_leads}")
    if not (math.isfinite(fs) and 1.0 <= fs <= 20000.0):
        raise WireError("bad_rate", f"fs={fs}")
    if not (math.isfinite(gain) and 0.0 < gain <= 1e4):
        raise WireError("bad_gain", f"gain_uv={gain}")
    if n_samples > MAX_SAMPLES:
        raise WireError("too_many_samples", f"n_samples={n_samples}")
    off = _HEADER.size
    ids: list[str] = []
    for what in ("bed_id", "patient_id"):
        if off + 2 > len(data):
            raise WireError("truncated", f"no room for {what} length")
        (n,) = struct.unpack_from("<H", data, off)
        off += 2
        if n > MAX_ID_BYTES or off + n > len(data):
            raise WireError("truncated" if off + n > len(data) else "bad_id", f"{what} length {n}")
        try:
            s = data[off:off + n].decode("utf-8")
        except UnicodeDecodeError:
            raise WireError("bad_id", f"{what} is not UTF-8") from None
        if not s or not s.isprintable():
            raise WireError("bad_id", f"{what} {s!r} is empty or not printable")
        ids.append(s)
        off += n
    leads: list[str] = []
    for i in range(n_leads):
        if off + 1 > len(data):
            raise WireError("truncated", f"no room for lead name {i}")
        n = data[off]
        off += 1
        if off + n > len(data):
            raise WireError("truncated", f"lead name {i} length {n}")
        try:
            name = data[off:off + n].decode("ascii")
        except UnicodeDecodeError:
            raise WireError("bad_lead_name", f"lead {i} name is not ASCII") from None
        if not name or not name.isprintable():
            raise WireError("bad_lead_name", f"lead {i} name {name!r}")
        leads.append(name)
        off += n
    if len(set(leads)) != len(leads):
        raise WireError("duplicate_lead", f"leads {leads}")
    need = 2 * n_leads * n_samples
    if len(data) - off != need:
        raise WireError("bad_length", f"sample block {len(data) - off} bytes, expected {need}")
    counts = np.frombuffer(data, dtype="<i2", count=n_leads * n_samples, offset=off).reshape(n_leads, n_samples)
    samples = counts.astype(np.float32) * np.float32(gain / 1000.0)
    samples[counts == MISSING_COUNT] = np.nan
    return EcgChunk(ids[0], ids[1], int(seq), int(start_ns), float(fs), tuple(leads), samples,
                    bool(flags & FLAG_END_OF_STREAM), float(gain))


@dataclass
class LabResult:
    """One lab result as published on the labs topic (JSON).

    ``observed_ns`` is when the specimen was taken (what staleness is measured from);
    ``reported_ns`` when the result became available.
    """

    patient_id: str
    loinc: str
    value: float
    unit: str
    observed_ns: int
    reported_ns: int | None = None
    bed_id: str | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, *, max_bytes: int = 64 * 1024) -> "LabResult":
        """Parse and validate (known LOINC, convertible unit, finite plausible value)."""
        from engine.errors import LabError
        from engine.labs import lab_feature

        if len(data) > max_bytes:
            raise WireError("too_large", f"{len(data)} bytes > limit {max_bytes}")
        try:
            obj = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WireError("bad_json", str(exc)[:200]) from None
        if not isinstance(obj, dict):
            raise WireError("bad_json", f"top level is {type(obj).__name__}, expected object")
        try:
            patient = obj["patient_id"]
            loinc = obj["loinc"]
            value = obj["value"]
            unit = obj["unit"]
            observed = obj["observed_ns"]
        except KeyError as exc:
            raise WireError("missing_field", f"lab result has no {exc.args[0]!r}") from None
        if not isinstance(patient, str) or not patient or not isinstance(loinc, str) or not isinstance(unit, str):
            raise WireError("bad_field", f"patient_id={patient!r} loinc={loinc!r} unit={unit!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or isinstance(observed, bool) or not isinstance(observed, int):
            raise WireError("bad_field", f"value={value!r} observed_ns={observed!r}")
        reported = obj.get("reported_ns")
        if reported is not None and (isinstance(reported, bool) or not isinstance(reported, int)):
            raise WireError("bad_field", f"reported_ns={reported!r}")
        try:
            feat = lab_feature(loinc)
            feat.to_canonical(float(value), unit)
        except LabError as exc:
            raise WireError("bad_lab", str(exc)) from None
        bed = obj.get("bed_id")
        return cls(patient, loinc, float(value), unit, int(observed), reported, bed if isinstance(bed, str) else None)

    def canonical_value(self) -> float:
        from engine.labs import lab_feature

        return lab_feature(self.loinc).to_canonical(self.value, self.unit)


ALERT_TYPES = ("mi", "st", "technical")
ALERT_PHASES = ("start", "update", "end")


@dataclass
class Alert:
    """An alert event on the alerts topic (JSON). One episode has a stable ``alert_id``.

    ``alert_type`` is ``mi`` or ``st`` (physiological) or ``technical`` (the system cannot
    evaluate); ``kind`` names the condition (``mi_suspected``, ``st_change``, ``no_data``,
    ``leads_off``, ``backend_failed``, ``falling_behind``). ``level`` is the escalation level
    (1 = medium, 2 = high).

    ``st`` (issue #19, optional, absent in older messages) is the ST vector of the window the
    decision was made on (:func:`stream.core.st.st_vector`): ``j60_uv`` and ``delta_uv`` (12
    values each in :data:`engine.config.LEADS` order, null where unmeasurable), ``baseline_uv``,
    ``hr_bpm``, ``qrs_ms``, ``quality``. For ``st_change`` alerts ``threshold_start`` /
    ``threshold_end`` are the start and end thresholds in uV and ``top_leads`` the deviating leads.
    """

    alert_id: str
    alert_type: str
    kind: str
    phase: str
    bed_id: str
    patient_id: str
    probability: float | None
    threshold_start: float | None
    threshold_end: float | None
    window_start_ns: int
    window_end_ns: int
    window_seq: int
    model_name: str
    model_version: str
    checkpoint_sha: str
    level: int = 1
    labs: list[dict[str, Any]] = field(default_factory=list)  # {loinc, name, value, unit, age_s}
    labs_available: bool = True
    quality_flags: list[str] = field(default_factory=list)
    top_leads: list[str] = field(default_factory=list)
    advisories: list[str] = field(default_factory=list)
    emitted_ns: int = 0
    event_id: str = ""  # alert_id + phase + window: identical on a replayed duplicate
    schema_version: int = 1
    st: dict[str, Any] | None = None  # issue #19: ST per lead and change from baseline (see above)

    def __post_init__(self) -> None:
        if self.alert_type not in ALERT_TYPES:
            raise WireError("bad_alert", f"alert_type {self.alert_type!r}")
        if self.phase not in ALERT_PHASES:
            raise WireError("bad_alert", f"phase {self.phase!r}")
        if not self.event_id:
            self.event_id = f"{self.alert_id}:{self.phase}:{self.window_seq}"

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), allow_nan=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, *, max_bytes: int = 1024 * 1024) -> "Alert":
        if len(data) > max_bytes:  # an alert is a few KB: anything this large is not one
            raise WireError("too_large", f"{len(data)} bytes > limit {max_bytes}")
        try:
            obj = json.loads(bytes(data).decode("utf-8"))
            if not isinstance(obj, dict):
                raise TypeError(f"top level is {type(obj).__name__}, expected object")
            # Fields a newer producer added are ignored, so consumers can be upgraded after workers.
            return cls(**{k: v for k, v in obj.items() if k in _ALERT_FIELDS})
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
            raise WireError("bad_alert", str(exc)[:200]) from None


_ALERT_FIELDS = frozenset(f.name for f in fields(Alert))


def make_alert_id(alert_type: str, kind: str, bed_id: str, patient_id: str, first_window_end_ns: int) -> str:
    """A deterministic id for an alert episode: same inputs (e.g. a replay) give the same id."""
    h = hashlib.sha256(f"{alert_type}|{kind}|{bed_id}|{patient_id}|{first_window_end_ns}".encode()).hexdigest()
    return f"{alert_type}-{h[:20]}"


def now_ns() -> int:
    return time.time_ns()
