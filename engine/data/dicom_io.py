"""Read 12-lead ECG waveforms from DICOM files (how hospital ECG archives export them).

Follows DICOM PS3.3: the 12-Lead ECG IOD (A.34.3, SOP Class 1.2.840.10008.5.1.4.1.1.9.1.1) and
the General ECG IOD (A.34.4) carry a Waveform module (C.10.9) whose Waveform Sequence
(5400,0100) holds one or more *multiplex groups*: channels sampled together at one Sampling
Frequency (003A,001A), interleaved in Waveform Data (5400,1010). Per channel, the Channel
Definition Sequence (003A,0200) gives

* the source: Channel Source Sequence (003A,0208) code, e.g. SCPECG ``5.6.3-9-1`` / MDC ``2:1``
  with Code Meaning "Lead I (Einthoven)" (PS3.16 CID 3001 "ECG Leads"), or a Channel Label;
* the physical value of a sample: ``value = raw * Channel Sensitivity * Correction Factor +
  Channel Baseline`` in the unit of Channel Sensitivity Units Sequence (003A,0211, UCUM, e.g.
  ``uV``); we convert to millivolts.

Which group: the first one labelled ``RHYTHM`` (Multiplex Group Label), else the longest group
that maps to the 12 leads; ``MEDIAN BEAT`` groups (one averaged beat) are never the rhythm.
Lead names go through :func:`engine.signal.leads.map_leads` like any WFDB record, so channels
that are no standard lead are set aside as extra signals.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import DatasetError, SignalError
from engine.signal.leads import is_standard_lead, map_leads

log = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom")
_PREAMBLE = 128  # PS3.10 7.1: 128-byte preamble, then "DICM"
# UCUM units of Channel Sensitivity -> factor to millivolts.
_UNIT_TO_MV: dict[str, float] = {"uv": 1e-3, "µv": 1e-3, "mv": 1.0, "v": 1e3, "nv": 1e-6}
# Lead number of the SCP-ECG (5.6.3-9-N) and MDC (2:N) lead codes (ISO 11073-10101 / EN 1064).
_LEAD_CODE = {1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6",
              61: "III", 62: "aVR", 63: "aVL", 64: "aVF"}
_CODE = re.compile(r"^(?:5\.6\.3-9-|2:)(\d+)$")


@dataclass(frozen=True)
class DicomWaveform:
    """One multiplex group in millivolts.

    Attributes:
        signal: (L, S) float64 samples in mV.
        names: one name per channel: the standard lead when the channel maps to one, else its
            label or code meaning as written.
        fs: sampling frequency in Hz.
        group_label: the Multiplex Group Label ("RHYTHM", ...), "" when absent.
    """

    signal: np.ndarray
    names: tuple[str, ...]
    fs: float
    group_label: str


def is_dicom(path: str | Path) -> bool:
    """True for a ``.dcm`` / ``.dicom`` file or any file with the DICOM Part 10 ``DICM`` marker."""
    p = Path(path)
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    if not p.is_file():
        return False
    try:
        with open(p, "rb") as fh:
            head = fh.read(_PREAMBLE + 4)
    except OSError:
        return False
    return head[_PREAMBLE:] == b"DICM"


def channel_name(channel: Any) -> str:
    """The lead a Channel Definition item records: by code, code meaning, then label."""
    src = channel.ChannelSourceSequence[0] if "ChannelSourceSequence" in channel and channel.ChannelSourceSequence else None
    candidates = []
    if src is not None:
        m = _CODE.match(str(src.get("CodeValue", "")).strip())
        if m and int(m.group(1)) in _LEAD_CODE:
            return _LEAD_CODE[int(m.group(1))]
        candidates.append(str(src.get("CodeMeaning", "")))
    candidates.append(str(channel.get("ChannelLabel", "")))
    for text in candidates:
        if text.strip() and is_standard_lead(text):
            return text.strip()
    return next((t.strip() for t in candidates if t.strip()), "unlabelled")


def _unit_factor(channel: Any, where: str) -> float:
    seq = channel.get("ChannelSensitivityUnitsSequence")
    if not seq:
        raise DatasetError(f"{where}: a channel has no Channel Sensitivity Units Sequence; its unit is unknown")
    unit = str(seq[0].get("CodeValue", "")).strip()
    factor = _UNIT_TO_MV.get(unit.lower())
    if factor is None:
        raise DatasetError(f"{where}: channel unit {unit!r} is not a voltage (expected uV, mV or V)")
    return factor


def group_to_mv(group: Any, where: str) -> DicomWaveform:
    """Decode one multiplex group (a Waveform Sequence item) into millivolts.

    Raises:
        DatasetError: a required attribute is missing, or a channel's unit is not a voltage.
    """
    from pydicom.waveforms.numpy_handler import WAVEFORM_DTYPES

    try:
        n_ch, n_s = int(group.NumberOfWaveformChannels), int(group.NumberOfWaveformSamples)
        key = (int(group.WaveformBitsAllocated), str(group.WaveformSampleInterpretation))
        fs = float(group.SamplingFrequency)
        channels = list(group.ChannelDefinitionSequence)
        data = bytes(group.WaveformData)
    except AttributeError as exc:
        raise DatasetError(f"{where}: waveform group lacks a required attribute ({exc})") from None
    if key not in WAVEFORM_DTYPES:
        raise DatasetError(f"{where}: waveform samples of {key[0]} bits, interpretation {key[1]!r} are not supported")
    dtype = np.dtype(WAVEFORM_DTYPES[key])
    if len(channels) != n_ch or len(data) < n_ch * n_s * dtype.itemsize or fs <= 0:
        raise DatasetError(f"{where}: waveform group is inconsistent ({n_ch} channels, {len(channels)} defined, "
                           f"{n_s} samples, {len(data)} bytes, {fs} Hz)")
    raw = np.frombuffer(data[: n_ch * n_s * dtype.itemsize], dtype=dtype).reshape(n_s, n_ch)  # (S, L), interleaved
    sig = raw.T.astype(np.float64)  # (L, S)
    for k, ch in enumerate(channels):
        scale = float(ch.get("ChannelSensitivity", 1.0) or 1.0) * float(ch.get("ChannelSensitivityCorrectionFactor", 1.0) or 1.0)
        sig[k] = (sig[k] * scale + float(ch.get("ChannelBaseline", 0.0) or 0.0)) * _unit_factor(ch, where)
    names = tuple(channel_name(ch) for ch in channels)
    return DicomWaveform(sig, names, fs, str(group.get("MultiplexGroupLabel", "") or "").strip())


def _pick_group(groups: list[Any], where: str) -> Any:
    """The rhythm group: labelled RHYTHM, else the longest group whose channels give 12 leads."""
    labelled = [g for g in groups if str(g.get("MultiplexGroupLabel", "")).strip().upper() == "RHYTHM"]
    if labelled:
        return labelled[0]
    usable = []
    for g in groups:
        if str(g.get("MultiplexGroupLabel", "")).strip().upper() == "MEDIAN BEAT":
            continue
        try:
            map_leads([channel_name(ch) for ch in g.get("ChannelDefinitionSequence", [])])
        except SignalError:
            continue
        usable.append(g)
    if not usable:
        found = [str(g.get("MultiplexGroupLabel", "")) or f"group {i}" for i, g in enumerate(groups)]
        raise DatasetError(f"{where}: no waveform group holds a 12-lead rhythm ECG (groups: {found})")
    return max(usable, key=lambda g: int(g.get("NumberOfWaveformSamples", 0)))


def read_dicom_waveform(path: str | Path) -> DicomWaveform:
    """Read the 12-lead rhythm waveform of a DICOM ECG file, in millivolts.

    Raises:
        DatasetError: not a readable DICOM file, no waveform, or no group that is a 12-lead ECG.
    """
    import pydicom  # imported here: only DICOM readers need it
    from pydicom.errors import InvalidDicomError

    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"DICOM file not found: {p}")
    try:
        ds = pydicom.dcmread(p)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"cannot read DICOM file {p}: {exc}") from exc
    groups = list(ds.get("WaveformSequence") or [])
    if not groups:
        raise DatasetError(f"DICOM file {p} has no Waveform Sequence (SOP class {ds.get('SOPClassUID', '?')}): not an ECG waveform")
    return group_to_mv(_pick_group(groups, str(p)), str(p))
