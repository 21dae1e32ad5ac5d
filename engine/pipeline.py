"""THE input pipeline of MIRAGE: raw windows in mV -> the tensors the model sees.

Training, evaluation, the stream worker and the compiled backends all call :func:`model_inputs`
on (B, 12, T) windows at the model rate ``cfg.fs``, so the model sees bit-identical inputs
whichever path the window came from. Steps, per window and lead:

1. gaps (non-finite samples) are bridged by linear interpolation (flag them first with
   :func:`quality_flags`);
2. zero-phase band-pass 0.5-40 Hz over the whole window (:mod:`engine.signal.filters`;
   removes baseline wander, keeps the ST segment undistorted);
3. clip to +-``CLIP_MV`` (a lead-off spike or a pacing artefact cannot dominate the projection);
4. ``ecg`` = the conditioned signal in mV, float32 (B, 12, T);
5. ``image`` = :func:`engine.render.render_batch` of the conditioned signal (B, 1, 224, 224);
6. ``labs``/``lab_mask`` = the encoded labs (zeros = all missing, FiLM is then identity).

Records at other rates or with other lead sets go through :func:`to_model_rate` first (lead
mapping by name, limb-lead derivation, polyphase resampling). ``PREPROCESSING_VERSION`` changes
whenever any step changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engine.config import LEADS, MirageConfig
from engine.errors import SignalError
from engine.render import RENDERER_VERSION, render_batch
from engine.signal.filters import DEFAULT_FILTER, FilterSpec, condition
from engine.signal.leads import to_standard_leads
from engine.signal.quality import quality_flags as _quality_flags
from engine.signal.quality import quality_flags_batch
from engine.signal.resample import resample

PREPROCESSING_VERSION = "bp0.5-40-zp2-clip5-v1"
CLIP_MV = 5.0

__all__ = ["CLIP_MV", "ModelInputs", "PREPROCESSING_VERSION", "RENDERER_VERSION", "condition_windows", "model_inputs",
           "quality_flags", "quality_flags_batch", "to_model_rate",
           "to_model_rate_batch"]


@dataclass(frozen=True)
class ModelInputs:
    """The four model inputs of a batch, numpy float32.

    Attributes:
        ecg: (B, 12, T) conditioned leads in mV.
        image: (B, 1, 224, 224) rendered windows in [0, 1].
        labs: (B, D_lab) encoded lab values (0 where missing).
        lab_mask: (B, D_lab) 1 where a lab value is present.
    """

    ecg: np.ndarray
    image: np.ndarray
    labs: np.ndarray
    lab_mask: np.ndarray

    def __len__(self) -> int:
        return int(self.ecg.shape[0])


def condition_windows(windows: np.ndarray, fs: float, spec: FilterSpec = DEFAULT_FILTER) -> np.ndarray:
    """Steps 1-3 of the pipeline: bridge gaps, zero-phase band-pass, clip. Returns float32."""
    x = condition(windows, fs, spec)
    np.clip(x, -CLIP_MV, CLIP_MV, out=x)
    return x.astype(np.float32)


def _labs(value: np.ndarray | None, name: str, batch: int, cfg: MirageConfig) -> np.ndarray:
    if value is None:
        return np.zeros((batch, cfg.lab_dim), dtype=np.float32)
    arr = np.asarray(value, dtype=np.float32)
    if arr.shape != (batch, cfg.lab_dim):
        raise SignalError(f"{name} must have shape ({batch}, {cfg.lab_dim}), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise SignalError(f"{name} contains non-finite values")
    return np.ascontiguousarray(arr)


def model_inputs(
    windows: np.ndarray,
    cfg: MirageConfig,
    labs: np.ndarray | None = None,
    lab_mask: np.ndarray | None = None,
) -> ModelInputs:
    """Turn raw windows into model inputs (see the module docstring for the steps).

    Args:
        windows: (B, 12, T) raw leads in mV at ``cfg.fs``, in :data:`LEADS` order, ``T == cfg.T``.
        cfg: the model configuration (rate, window length, lab width).
        labs: (B, D_lab) encoded labs, or None for "all missing".
        lab_mask: (B, D_lab) presence mask, or None (then zeros when ``labs`` is None, ones
            otherwise).

    Raises:
        SignalError: wrong shapes, or labs that are not finite.
    """
    x = np.asarray(windows)
    if x.ndim != 3 or x.shape[1] != len(LEADS) or x.shape[2] != cfg.T:
        raise SignalError(f"windows must have shape (B, 12, {cfg.T}) at {cfg.fs} Hz, got {x.shape}")
    batch = x.shape[0]
    ecg = condition_windows(x, cfg.fs)
    image = render_batch(ecg, cfg.fs)
    lab_values = _labs(labs, "labs", batch, cfg)
    if lab_mask is None:
        mask = np.zeros_like(lab_values) if labs is None else np.ones_like(lab_values)
    else:
        mask = _labs(lab_mask, "lab_mask", batch, cfg)
    return ModelInputs(ecg=ecg, image=image, labs=lab_values, lab_mask=mask)


def to_model_rate(signal: np.ndarray, fs: float, leads: Sequence[str], cfg: MirageConfig, *, allow_missing: bool = False,
                  ignore_extra: bool = False) -> np.ndarray:
    """Map a record's leads to the 12 standard leads and resample to ``cfg.fs``.

    Args:
        signal: (L, S) samples in mV, one row per name in ``leads``.
        fs: the record's sampling rate in Hz.
        leads: lead names as the source spells them (aliases such as "AVR", "MLII" accepted);
            with only I, II, V1-V6 the limb leads III, aVR, aVL, aVF are derived.
        cfg: the model configuration (its ``fs`` is the target rate).
        allow_missing: NaN-fill leads that cannot be found or derived instead of raising.
        ignore_extra: drop signals that are no standard lead (Frank leads, respiration) instead
            of raising (:func:`engine.signal.leads.map_leads` lists them).

    Returns:
        (12, S') float64 in mV at ``cfg.fs`` (NaN where the input had gaps).
    """
    std = to_standard_leads(signal, leads, allow_missing=allow_missing, ignore_extra=ignore_extra)
    return resample(std, fs, cfg.fs)


def to_model_rate_batch(signals: np.ndarray, fs: float, leads: Sequence[str], cfg: MirageConfig, *,
                        allow_missing: bool = False, ignore_extra: bool = False) -> np.ndarray:
    """:func:`to_model_rate` of each window of a (B, L, S) batch that shares one rate and lead set.

    Bit-identical to calling :func:`to_model_rate` per window (lead mapping and derivation are
    element-wise; the resampler filters each row on its own), with one set of numpy/scipy calls
    for the whole batch. Returns (B, 12, S') float64.
    """
    arr = np.asarray(signals, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1] != len(leads):
        raise SignalError(f"batch of shape {arr.shape} does not match {len(leads)} lead names {list(leads)}")
    # Lead first, (L, B, S): the lead mapping is element-wise over all windows at once, and the
    # resampler filters along the last axis of the (12, B, S) result; no copy but the output's.
    std = to_standard_leads(arr.transpose(1, 0, 2), leads, allow_missing=allow_missing, ignore_extra=ignore_extra)
    return resample(std, fs, cfg.fs).transpose(1, 0, 2)


def quality_flags(window: np.ndarray, fs: float) -> list[str]:
    """Quality flags of one raw window (12, T) mV, e.g. ``["flat:V3", "saturated:II"]``."""
    return _quality_flags(window, fs)
