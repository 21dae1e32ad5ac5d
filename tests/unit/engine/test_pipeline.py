"""The shared input pipeline: shapes, conditioning, identity of offline and stream inputs."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import LEADS, get_preset
from engine.errors import SignalError
from engine.pipeline import CLIP_MV, PREPROCESSING_VERSION, ModelInputs, condition_windows, model_inputs, quality_flags, to_model_rate
from engine.render.validation import synthetic_window

CFG = get_preset("tiny")


def _windows(n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = synthetic_window(CFG.fs, CFG.window_s)
    drift = 0.4 * np.sin(2 * np.pi * 0.2 * np.arange(CFG.T) / CFG.fs)
    return np.stack([base * (1 + 0.1 * k) + drift + rng.normal(0, 0.01, base.shape) for k in range(n)])


def test_model_inputs_shapes_dtypes_and_default_labs() -> None:
    out = model_inputs(_windows(3), CFG)
    assert isinstance(out, ModelInputs) and len(out) == 3
    assert out.ecg.shape == (3, 12, CFG.T) and out.ecg.dtype == np.float32
    assert out.image.shape == (3, 1, CFG.image_size, CFG.image_size) and out.image.dtype == np.float32
    assert out.labs.shape == (3, CFG.lab_dim) and not out.labs.any()
    assert out.lab_mask.shape == (3, CFG.lab_dim) and not out.lab_mask.any()
    assert isinstance(PREPROCESSING_VERSION, str) and PREPROCESSING_VERSION


def test_image_draws_each_lead_in_its_documented_cell() -> None:
    """6x2 layout (engine/render/layout.py): 37-px cells below a 1-px margin, limb leads over the
    first half on the left, V1-V6 over the second half on the right, 0 mV 21.5 px below a cell top."""
    t = np.arange(CFG.T) / CFG.fs
    wave = (0.5 * np.sin(2 * np.pi * 5 * t)).astype(np.float32)
    x = np.zeros((2, 12, CFG.T), np.float32)
    x[1, LEADS.index("II"), : CFG.T // 2] = wave[: CFG.T // 2]  # drawn: row 1, left
    x[1, LEADS.index("V1"), CFG.T // 2 :] = wave[CFG.T // 2 :]  # drawn: row 0, right
    img = model_inputs(x, CFG).image[:, 0]  # (2, 224, 224)
    changed = np.abs(img[1] - img[0]) > 1e-6
    allowed = np.zeros_like(changed)
    allowed[1 + 37 : 1 + 2 * 37, :112] = True  # lead II
    allowed[1 : 1 + 37, 112:] = True  # V1
    assert changed[1 + 37 : 1 + 2 * 37, :112].any() and changed[1 : 1 + 37, 112:].any()
    assert not (changed & ~allowed).any()
    # A flat lead is a line on its cell's baseline row (top + 21).
    ink_rows = img[0, 1 : 1 + 37, :112].sum(axis=1)
    assert int(np.argmax(ink_rows)) == 21


def test_conditioning_removes_wander_and_clips() -> None:
    x = _windows(1)
    x[0, LEADS.index("V4"), 500] = 40.0  # a pacing spike / lead-off transient
    out = model_inputs(x, CFG)
    assert np.abs(out.ecg).max() <= CLIP_MV
    lead = LEADS.index("I")
    # The 0.2 Hz drift is gone: the lead's median (mostly TP/PR baseline) is near 0 everywhere.
    halves = out.ecg[0, lead].reshape(4, -1)
    assert np.abs(np.median(halves, axis=1)).max() < 0.05


def test_stream_windows_give_the_offline_model_inputs_bit_identically() -> None:
    """The live path (chunks -> Windower -> convert_windows -> model_inputs) gives the same model
    inputs, bit for bit, as cutting the same record offline (what ``mirage validate`` checks live)."""
    from stream.core.schema import EcgChunk
    from stream.core.windower import Windower, convert_windows

    rng = np.random.default_rng(1)
    seconds, t0 = 24, 1_700_000_000 * 10**9
    rec = np.concatenate([_windows(3)[k] for k in range(3)], axis=1)[:, : seconds * int(CFG.fs)]
    rec = (rec + rng.normal(0, 0.02, rec.shape)).astype(np.float32)  # (12, T_total) at the model rate
    per = int(CFG.fs)  # 1 s chunks
    windower = Windower(CFG, convert=False)
    live = []
    for k in range(seconds):
        live += windower.push(EcgChunk("bed-1", "pat-1", k, t0 + k * 10**9, CFG.fs, LEADS, rec[:, k * per:(k + 1) * per])).windows
    convert_windows(live, CFG)
    assert len(live) >= 5
    starts = [round((w.start_ns - t0) * CFG.fs / 1e9) for w in live]
    offline = model_inputs(np.stack([rec[:, s : s + CFG.T] for s in starts]), CFG)
    stream = model_inputs(np.stack([w.signal for w in live]), CFG)
    np.testing.assert_array_equal(stream.ecg, offline.ecg)
    np.testing.assert_array_equal(stream.image, offline.image)


def test_a_window_scored_alone_or_in_a_batch_gets_bit_identical_inputs() -> None:
    x = _windows(4)
    batch = model_inputs(x, CFG)
    for k in range(4):
        single = model_inputs(x[k : k + 1], CFG)
        np.testing.assert_array_equal(single.ecg[0], batch.ecg[k])
        np.testing.assert_array_equal(single.image[0], batch.image[k])


def test_labs_and_mask_are_passed_and_validated() -> None:
    labs = np.arange(2 * CFG.lab_dim, dtype=np.float32).reshape(2, CFG.lab_dim)
    out = model_inputs(_windows(2), CFG, labs=labs)
    np.testing.assert_array_equal(out.labs, labs)
    assert out.lab_mask.all()
    mask = np.zeros_like(labs)
    mask[0, 0] = 1
    np.testing.assert_array_equal(model_inputs(_windows(2), CFG, labs=labs, lab_mask=mask).lab_mask, mask)
    with pytest.raises(SignalError, match="labs"):
        model_inputs(_windows(2), CFG, labs=labs[:1])
    bad = labs.copy()
    bad[0, 0] = np.nan
    with pytest.raises(SignalError, match="non-finite"):
        model_inputs(_windows(2), CFG, labs=bad)


def test_wrong_window_shape_is_named() -> None:
    with pytest.raises(SignalError, match=r"\(B, 12, 1000\)"):
        model_inputs(np.zeros((2, 12, 999)), CFG)


def test_gaps_are_bridged_not_propagated() -> None:
    x = _windows(1)
    x[0, 3, 200:230] = np.nan
    assert "missing:aVR" in quality_flags(x[0], CFG.fs)
    out = model_inputs(x, CFG)
    assert np.isfinite(out.ecg).all() and np.isfinite(out.image).all()


def test_to_model_rate_maps_names_derives_and_resamples() -> None:
    fs = 500.0
    hi = synthetic_window(fs, CFG.window_s)
    eight = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    rows = hi[[LEADS.index(n) for n in eight]]
    # The synthetic limb leads are not Einthoven-consistent, so build the reference from I and II.
    i, ii = hi[0], hi[1]
    ref12 = hi.copy()
    ref12[2], ref12[3], ref12[4], ref12[5] = ii - i, -(i + ii) / 2, i - ii / 2, ii - i / 2
    got = to_model_rate(rows, fs, [n.lower() if n.startswith("V") else n for n in eight], CFG)
    want = to_model_rate(ref12, fs, list(LEADS), CFG)
    assert got.shape == (12, CFG.T)
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_ptbxl_record_through_the_pipeline(ptbxl_dir) -> None:
    import wfdb

    head = sorted((ptbxl_dir / "records500").rglob("*.hea"))[0]
    rec = wfdb.rdrecord(str(head.with_suffix("")))
    x = to_model_rate(rec.p_signal.T, rec.fs, rec.sig_name, CFG)
    assert x.shape == (12, CFG.T)
    assert quality_flags(x, CFG.fs) == []
    out = model_inputs(x[None], CFG)
    ink = out.image[0, 0].sum(axis=0)
    assert (ink > 0).mean() > 0.99  # every column carries trace
    assert np.abs(condition_windows(x[None], CFG.fs) - out.ecg).max() == 0


def test_pipeline_feeds_the_model_when_present() -> None:
    model_mod = pytest.importorskip("engine.model", reason="engine.model (engineer A) not in this tree yet")
    import torch

    out = model_inputs(_windows(2), CFG)
    model = model_mod.Mirage(CFG).eval()
    with torch.no_grad():
        res = model(*(torch.from_numpy(a) for a in (out.ecg, out.image, out.labs, out.lab_mask)))
    assert tuple(res.probs.shape) == (2,)
