"""Test doubles for record readers: write PTB-shaped WFDB records and DICOM 12-lead ECGs.

Shipped in the package (not under ``tests/``) so any room's tests, and users checking their own
exports, can build the files the readers must accept:

* :func:`write_ptb_like_record` - a WFDB record shaped like PhysioNet's PTB Diagnostic ECG
  Database (``ptbdb``): 1000 Hz, the 12 standard leads named in lower case (``i``, ``avr``,
  ``v1``) followed by the Frank leads ``vx``, ``vy``, ``vz``.
* :func:`write_dicom_ecg` - a DICOM 12-Lead ECG object (PS3.3 A.34.3) with one RHYTHM multiplex
  group, SCP-ECG lead codes and Code Meanings as an ECG cart writes them ("Lead I (Einthoven)"),
  16-bit signed samples in microvolts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from engine.config import LEADS
from engine.errors import SignalError

PTB_LEADS: tuple[str, ...] = tuple(name.lower() for name in LEADS)
FRANK_LEADS: tuple[str, ...] = ("vx", "vy", "vz")
ECG_12LEAD_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.9.1.1"
# SCP-ECG lead codes (5.6.3-9-N) and the Code Meanings ECG carts export (PS3.16 CID 3001).
SCPECG_CODES: dict[str, tuple[str, str]] = {
    "I": ("5.6.3-9-1", "Lead I (Einthoven)"), "II": ("5.6.3-9-2", "Lead II"), "III": ("5.6.3-9-61", "Lead III"),
    "aVR": ("5.6.3-9-62", "Lead aVR"), "aVL": ("5.6.3-9-63", "Lead aVL"), "aVF": ("5.6.3-9-64", "Lead aVF"),
    **{f"V{i}": (f"5.6.3-9-{i + 2}", f"Lead V{i}") for i in range(1, 7)},
}


def frank_like(x12: np.ndarray) -> np.ndarray:
    """Three extra channels (3, S) in mV that look like Frank leads: combinations of the 12 leads."""
    x = np.asarray(x12, dtype=np.float64)
    i, avf, v2 = x[LEADS.index("I")], x[LEADS.index("aVF")], x[LEADS.index("V2")]
    return np.stack([0.8 * i + 0.1 * x[LEADS.index("V6")], 0.9 * avf, -0.5 * v2])


def write_ptb_like_record(folder: str | Path, name: str, x12: np.ndarray, fs: float = 1000.0,
                          extra: np.ndarray | None = None, extra_names: Sequence[str] = FRANK_LEADS) -> Path:
    """Write a PTB-shaped WFDB record: 12 lower-case leads plus extra signals, in mV.

    Args:
        folder: where the ``.hea``/``.dat`` pair goes (created).
        name: the record name.
        x12: (12, S) leads in mV in :data:`engine.config.LEADS` order.
        fs: the sampling rate written to the header (PTB: 1000 Hz).
        extra: (E, S) extra signals in mV; default :func:`frank_like` of ``x12``.
        extra_names: their names (default ``vx``, ``vy``, ``vz``).

    Returns:
        The record path without extension.
    """
    import wfdb

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    x = np.asarray(x12, dtype=np.float64)
    more = frank_like(x) if extra is None else np.asarray(extra, dtype=np.float64)
    sig = np.concatenate([x, more], axis=0)  # (15, S)
    names = list(PTB_LEADS) + list(extra_names)
    gain = 2000.0  # counts per mV, as ptbdb's headers (0.5 uV resolution)
    digital = np.clip(np.round(sig * gain), -32767, 32767).astype(np.int16)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(names), sig_name=names, d_signal=digital.T.astype(np.int64),
                fmt=["16"] * len(names), adc_gain=[gain] * len(names), baseline=[0] * len(names), write_dir=str(out))
    return out / name


def write_dicom_ecg(path: str | Path, x: np.ndarray, fs: float = 500.0, names: Sequence[str] = LEADS, *,
                    sensitivity_uv: float = 2.5, baseline_uv: float = 0.0, unit: str = "uV") -> Path:
    """Write a DICOM 12-Lead ECG Waveform object with one RHYTHM group.

    Args:
        path: the ``.dcm`` file to write.
        x: (L, S) signals in mV, one row per name.
        fs: sampling frequency in Hz.
        names: a standard lead name (coded with its SCP-ECG code) or any other label (written as
            a Code Meaning with a private code, as carts do for extra channels).
        sensitivity_uv: Channel Sensitivity (``unit`` per count).
        baseline_uv: Channel Baseline (in ``unit``).
        unit: UCUM code of Channel Sensitivity Units (``uV`` or ``mV``).

    Returns:
        ``path``.

    Raises:
        SignalError: ``x`` does not have one row per name.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != len(names):
        raise SignalError(f"signal of shape {arr.shape} does not match {len(names)} channel names {list(names)}")
    to_unit = 1000.0 if unit == "uV" else 1.0
    counts = np.clip(np.round((arr * to_unit - baseline_uv) / sensitivity_uv), -32767, 32767).astype("<i2")  # (L, S)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ECG_12LEAD_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = ECG_12LEAD_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientName = "ECG", "TEST-0001", "Test^Pseudonym"
    group = Dataset()
    group.MultiplexGroupLabel = "RHYTHM"
    group.SamplingFrequency = f"{fs:g}"
    group.NumberOfWaveformChannels, group.NumberOfWaveformSamples = arr.shape
    group.WaveformBitsAllocated, group.WaveformSampleInterpretation = 16, "SS"
    channels = []
    for k, name in enumerate(names):
        ch, src, units = Dataset(), Dataset(), Dataset()
        code, meaning = SCPECG_CODES.get(str(name), (f"99MIRAGE-{k}", str(name)))
        src.CodeValue, src.CodingSchemeDesignator, src.CodeMeaning = code, "SCPECG" if name in SCPECG_CODES else "99MIRAGE", meaning
        units.CodeValue, units.CodingSchemeDesignator, units.CodeMeaning = unit, "UCUM", unit
        ch.ChannelSourceSequence = [src]
        ch.ChannelSensitivity, ch.ChannelSensitivityCorrectionFactor = f"{sensitivity_uv:g}", "1"
        ch.ChannelSensitivityUnitsSequence = [units]
        ch.ChannelBaseline, ch.ChannelSampleSkew, ch.WaveformBitsStored = f"{baseline_uv:g}", "0", 16
        channels.append(ch)
    group.ChannelDefinitionSequence = channels
    group.WaveformData = np.ascontiguousarray(counts.T).tobytes()  # interleaved: C1S1, C2S1, ..., CnS1, C1S2, ...
    ds.WaveformSequence = [group]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out
