"""Read 12-lead ECG records (PhysioNet WFDB, or DICOM ECG) and cut model windows from them.

WFDB (PhysioNet, "WFDB Applications Guide"; header format in ``header(5)``) stores a record as a
``.hea`` text header (leads, units, gain, rate) plus ``.dat`` samples (any format ``wfdb`` reads,
FLAC format 516 included). We read it with the ``wfdb`` package, convert every lead to millivolts
using the unit the header names, and hand the samples to :func:`engine.pipeline.to_model_rate`
(lead mapping by name + polyphase resampling to ``cfg.fs``), the same step the stream uses. A
DICOM ECG (``.dcm``, or any file with the Part 10 ``DICM`` marker) is read by
:mod:`engine.data.dicom_io` and takes the same path from there.

Leads are matched by name (:func:`engine.signal.leads.map_leads`: case-insensitive, aliases).
Signals that are no standard lead (Frank leads, respiration, pacing) are dropped when the record is
read, logged once per record and kept by name in :attr:`EcgRecord.extra_signals`.

Window rule: a record longer than the model window contributes ONE window, starting at
``offset_s`` (0 = the first ``window_s`` seconds; manifests may name a later start, e.g. the MI
onset of a synthetic patient). The start is pulled back so the window fits inside the record. A
record shorter than the window is padded at the end by holding its last value only when at least
``MIN_FILL`` of the window is real signal; otherwise it is rejected.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.config import MirageConfig
from engine.data.dicom_io import is_dicom, read_dicom_waveform
from engine.errors import DatasetError, SignalError
from engine.pipeline import to_model_rate
from engine.signal.leads import ignored_flags, is_standard_lead, map_leads

log = logging.getLogger(__name__)

# Factor from a header's physical unit to millivolts.
_UNIT_TO_MV: dict[str, float] = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nu": 1.0, "": 1.0}
MIN_FILL = 0.8
# Records whose extra signals were already reported: a record read again (replay loops, a DICOM
# read for its length and its samples) is logged once per process. Bounded: it only grows with
# the number of distinct records, and is cleared past _REPORTED_MAX.
_REPORTED: set[tuple[str, tuple[str, ...]]] = set()
_REPORTED_MAX = 100_000


@dataclass(frozen=True)
class EcgRecord:
    """One multi-lead record in millivolts.

    Attributes:
        signal: (L, S) float64 samples in mV (NaN where the record has gaps).
        leads: the L lead names as the header spells them (standard leads only).
        fs: sampling rate in Hz.
        name: the record name (file stem), for messages only.
        extra_signals: the names of the signals that were dropped because they are no standard
            lead (e.g. ``("vx", "vy", "vz")``), in file order.
        source_format: ``"wfdb"`` or ``"dicom"``.
    """

    signal: np.ndarray
    leads: tuple[str, ...]
    fs: float
    name: str
    extra_signals: tuple[str, ...] = ()
    source_format: str = "wfdb"

    @property
    def duration_s(self) -> float:
        return self.signal.shape[1] / self.fs

    @property
    def flags(self) -> list[str]:
        """Record-level quality flags: ``ignored:NAME`` per extra signal."""
        return ignored_flags(self.extra_signals)


def record_base(path: str | Path) -> Path:
    """The WFDB record path without extension (accepts ``x``, ``x.hea`` or ``x.dat``); a DICOM path as is."""
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".hea", ".dat") else p


def record_file(path: str | Path) -> Path:
    """The file that must exist for ``path`` to be a record: the DICOM file, or the WFDB header."""
    base = record_base(path)
    return base if is_dicom(base) else base.with_suffix(".hea")


def standard_only(signal: np.ndarray, names: list[str] | tuple[str, ...], fs: float, name: str, source_format: str,
                  origin: str = "") -> EcgRecord:
    """An :class:`EcgRecord` of the rows of ``signal`` that are standard leads; extras logged once.

    ``origin`` (the file path) tells records apart for the once-per-record log line; default ``name``.

    Raises:
        DatasetError: a lead appears twice.
    """
    try:
        lead_map = map_leads(names, allow_missing=True)
    except SignalError as exc:
        raise DatasetError(f"{source_format.upper()} record {name}: {exc}") from exc
    if lead_map.extra:
        key = (origin or name, lead_map.extra)
        if key not in _REPORTED:
            if len(_REPORTED) >= _REPORTED_MAX:
                _REPORTED.clear()
            _REPORTED.add(key)
            log.warning("record %s: ignoring %d signal(s) that are no standard ECG lead: %s", name, len(lead_map.extra), ", ".join(lead_map.extra))
        keep = list(lead_map.kept)
        signal, names = signal[keep], [names[k] for k in keep]
    return EcgRecord(signal=signal, leads=tuple(names), fs=float(fs), name=name, extra_signals=lead_map.extra, source_format=source_format)


def read_record(path: str | Path) -> EcgRecord:
    """Read a WFDB record or a DICOM ECG and return its standard leads in millivolts.

    Args:
        path: the WFDB record path with or without the ``.hea`` extension, or a DICOM file.

    Raises:
        DatasetError: the file is missing or unreadable, a lead has a unit we cannot convert, or a
            lead appears twice.
    """
    if is_dicom(path):
        wave = read_dicom_waveform(path)
        return standard_only(wave.signal, list(wave.names), wave.fs, Path(path).name, "dicom", str(Path(path).resolve()))
    import wfdb  # imported here: the package is slow to import and only readers need it

    base = record_base(path)
    if not base.with_suffix(".hea").exists():
        raise DatasetError(f"WFDB header not found: {base.with_suffix('.hea')}")
    try:
        rec = wfdb.rdrecord(str(base))
    except Exception as exc:  # wfdb raises bare ValueError/OSError/IndexError on corrupt files
        raise DatasetError(f"cannot read WFDB record {base}: {exc}") from exc
    if rec.p_signal is None:
        raise DatasetError(f"WFDB record {base} has no physical signal")
    sig = np.asarray(rec.p_signal, dtype=np.float64).T  # (L, S)
    units = list(rec.units or [""] * sig.shape[0])
    for i, unit in enumerate(units):
        factor = _UNIT_TO_MV.get(str(unit or "").strip().lower())
        if factor is None and not is_standard_lead(rec.sig_name[i]):
            continue  # an extra signal (respiration in Ohm, SpO2 in %): dropped below, unit irrelevant
        if factor is None:
            raise DatasetError(f"WFDB record {base}: lead {rec.sig_name[i]!r} has unit {unit!r}; expected mV, uV or V")
        if factor != 1.0:
            sig[i] *= factor
    return standard_only(sig, list(rec.sig_name), float(rec.fs), base.name, "wfdb", str(base.resolve()))


def cut_window(x: np.ndarray, fs: float, cfg: MirageConfig, offset_s: float = 0.0) -> np.ndarray:
    """One (12, T) window of ``x`` (12, S) at ``cfg.fs``, starting at ``offset_s`` (see module doc).

    Raises:
        DatasetError: the record covers less than ``MIN_FILL`` of a window.
    """
    T = cfg.T
    S = x.shape[1]
    if S >= T:
        start = int(round(max(0.0, offset_s) * fs))
        start = min(start, S - T)  # pull back so the window fits
        return x[:, start : start + T]
    if S < MIN_FILL * T:
        raise DatasetError(f"record of {S / fs:.2f} s is shorter than {MIN_FILL:.0%} of the {cfg.window_s} s window")
    pad = np.repeat(x[:, -1:], T - S, axis=1)
    return np.concatenate([x, pad], axis=1)


def load_window(path: str | Path, cfg: MirageConfig, offset_s: float = 0.0) -> np.ndarray:
    """Read a record (WFDB or DICOM) and return one raw window (12, T) float32 in mV at ``cfg.fs``.

    Leads are mapped by name (missing limb leads derived from I and II) and resampled with
    :func:`engine.pipeline.to_model_rate`. No filtering here: :func:`engine.pipeline.model_inputs`
    conditions the window, exactly as in the stream.

    Raises:
        DatasetError: unreadable record, missing leads or too short.
    """
    rec = read_record(path)
    try:
        x = to_model_rate(rec.signal, rec.fs, rec.leads, cfg)
    except SignalError as exc:
        ignored = f" (extra signals ignored: {list(rec.extra_signals)})" if rec.extra_signals else ""
        raise DatasetError(f"{rec.source_format.upper()} record {record_base(path)}: {exc}{ignored}") from exc
    return cut_window(x, cfg.fs, cfg, offset_s).astype(np.float32)
