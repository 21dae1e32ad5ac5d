"""Model-image renderer: calibration, numpy/torch agreement, determinism, layout validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.config import LEADS
from engine.errors import ConfigError, SignalError
from engine.render import RENDERER_VERSION, render_batch, render_batch_torch
from engine.render.layout import GRID_6X2, PAGE_3X4, Cell, Layout
from engine.render.validation import ink_centroid, measure_st_shift, synthetic_window

FS = 100.0
T = 1000


def _pulse_window(amplitude_mv: float = 1.0, start: int = 100, stop: int = 120, lead: str = "II") -> np.ndarray:
    x = np.zeros((1, 12, T), dtype=np.float32)
    x[0, LEADS.index(lead), start:stop + 1] = amplitude_mv
    return x


def _columns_of_samples(cell: Cell, a: int, b: int) -> np.ndarray:
    """Pixel columns whose whole span lies inside samples a..b of the cell's segment."""
    step = (cell.t1 - cell.t0) * T / cell.width
    c0 = int(np.ceil((a - cell.t0 * T) / step))
    c1 = int(np.floor((b - cell.t0 * T) / step))
    return cell.left + np.arange(c0, c1)


def test_one_millivolt_pulse_lands_on_the_predicted_rows() -> None:
    img = render_batch(_pulse_window(1.0), FS)[0, 0]
    cell = GRID_6X2.cells_of("II")[0]
    y0, y1 = GRID_6X2.y_of(cell, 0.0), GRID_6X2.y_of(cell, 1.0)
    assert y0 - y1 == pytest.approx(20.0)  # the documented 20 px/mV
    plateau = _columns_of_samples(cell, 100, 120)
    flat = _columns_of_samples(cell, 200, 400)
    assert len(plateau) >= 3 and len(flat) > 20
    # A 1 px line centred on y covers row floor(y) fully when y sits mid-row (baseline 21.5 px).
    assert np.all(img[int(np.floor(y1)), plateau] == 1.0)
    assert np.all(img[int(np.floor(y0)), flat] == 1.0)
    np.testing.assert_allclose(ink_centroid(img, cell.top, cell.height, plateau), y1, atol=1e-5)
    np.testing.assert_allclose(ink_centroid(img, cell.top, cell.height, flat), y0, atol=1e-5)
    # Only the line itself is inked in those columns.
    assert img[cell.top : cell.top + cell.height, plateau].sum(axis=0) == pytest.approx(np.ones(len(plateau)))
    # The rising edge is a continuous vertical stroke from baseline to the pulse top.
    edge = cell.left + int(100 / ((cell.t1 - cell.t0) * T / cell.width))
    assert np.all(img[int(np.floor(y1)) : int(np.floor(y0)) + 1, edge] > 0.99)


@pytest.mark.parametrize("mv", [0.37, -0.42, 0.05])
def test_sub_pixel_amplitudes_are_calibrated(mv: float) -> None:
    img = render_batch(_pulse_window(mv, 100, 300), FS)[0, 0]
    cell = GRID_6X2.cells_of("II")[0]
    cols = _columns_of_samples(cell, 100, 300)
    np.testing.assert_allclose(ink_centroid(img, cell.top, cell.height, cols), GRID_6X2.y_of(cell, mv), atol=1e-5)


def test_out_of_range_trace_is_clipped_to_its_own_cell() -> None:
    img = render_batch(_pulse_window(3.0, 100, 300), FS)[0, 0]
    cell = GRID_6X2.cells_of("II")[0]
    cols = _columns_of_samples(cell, 100, 300)
    assert np.all(img[cell.top, cols] == 1.0)  # drawn along the cell's top edge
    above = GRID_6X2.cells_of("I")[0]
    assert img[above.top : above.top + above.height, cols].max() == pytest.approx(1.0)  # lead I's own baseline
    np.testing.assert_allclose(ink_centroid(img, above.top, above.height, cols), GRID_6X2.y_of(above, 0.0), atol=1e-5)


def test_image_shape_range_and_black_background() -> None:
    x = np.random.default_rng(0).normal(0, 0.5, (5, 12, T)).astype(np.float32)
    img = render_batch(x, FS)
    assert img.shape == (5, 1, 224, 224) and img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0
    assert np.all(img[:, :, 0, :] == 0) and np.all(img[:, :, 223, :] == 0)  # margins
    assert render_batch(np.zeros((0, 12, T)), FS).shape == (0, 1, 224, 224)


def test_renderer_is_deterministic_and_batch_independent() -> None:
    x = np.random.default_rng(1).normal(0, 0.4, (40, 12, T)).astype(np.float32)
    a = render_batch(x, FS)
    np.testing.assert_array_equal(a, render_batch(x, FS))
    np.testing.assert_array_equal(a[37:38], render_batch(x[37:38], FS))  # crosses a chunk boundary
    assert isinstance(RENDERER_VERSION, str) and RENDERER_VERSION


@pytest.mark.parametrize("t_len", [1000, 250, 5000, 60])
@pytest.mark.parametrize("layout", [GRID_6X2, PAGE_3X4], ids=["6x2", "3x4"])
def test_numpy_and_torch_renderers_agree(t_len: int, layout: Layout) -> None:
    x = np.random.default_rng(2).normal(0, 0.6, (6, 12, t_len)).astype(np.float32)
    x[2, 4, t_len // 3 : t_len // 2] = np.nan
    a = render_batch(x, FS, layout=layout)
    b = render_batch_torch(torch.from_numpy(x), FS, layout=layout)
    assert isinstance(b, torch.Tensor) and b.dtype == torch.float32
    assert np.abs(a - b.numpy()).max() <= 1e-5


def test_torch_renderer_on_real_windows(ptbxl_dir) -> None:
    import wfdb

    from engine.config import get_preset
    from engine.pipeline import condition_windows, to_model_rate

    cfg = get_preset("tiny")
    heads = sorted((ptbxl_dir / "records500").rglob("*.hea"))[:4]
    windows = []
    for h in heads:
        rec = wfdb.rdrecord(str(h.with_suffix("")))
        windows.append(to_model_rate(rec.p_signal.T, rec.fs, rec.sig_name, cfg))
    x = condition_windows(np.stack(windows), cfg.fs)
    assert np.abs(render_batch(x, cfg.fs) - render_batch_torch(x, cfg.fs).numpy()).max() <= 1e-5


@pytest.mark.gpu
def test_torch_renderer_on_cuda_matches_numpy() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = np.random.default_rng(3).normal(0, 0.6, (8, 12, T)).astype(np.float32)
    b = render_batch_torch(x, FS, device="cuda").cpu().numpy()
    assert np.abs(render_batch(x, FS) - b).max() <= 1e-5


def test_gap_leaves_the_columns_empty() -> None:
    x = _pulse_window(0.0)
    cell = GRID_6X2.cells_of("V2")[0]
    lo, hi = int(cell.t0 * T) + 100, int(cell.t0 * T) + 200
    x[0, LEADS.index("V2"), lo:hi] = np.nan
    img = render_batch(x, FS)[0, 0]
    cols = _columns_of_samples(cell, lo, hi - 1)
    assert img[cell.top : cell.top + cell.height, cols].max() == 0.0
    assert img[cell.top : cell.top + cell.height, cell.left + 5].sum() == pytest.approx(1.0)


def test_bad_input_shapes_raise() -> None:
    with pytest.raises(SignalError, match="shape"):
        render_batch(np.zeros((2, 8, T)), FS)
    with pytest.raises(SignalError, match="T=1"):
        render_batch(np.zeros((2, 12, 1)), FS)


def test_layouts_reject_overlap_and_overflow() -> None:
    c = Cell(lead=0, top=0, left=0, height=10, width=10, t0=0.0, t1=1.0)
    with pytest.raises(ConfigError, match="overlap"):
        Layout(name="bad", image_size=32, cells=(c, Cell(1, 5, 5, 10, 10, 0.0, 1.0)), px_per_mv=10, baseline_px=5)
    with pytest.raises(ConfigError, match="fit"):
        Layout(name="bad", image_size=8, cells=(c,), px_per_mv=10, baseline_px=5)


def test_layout_scale_is_documented_numbers() -> None:
    d = GRID_6X2.describe(10.0)
    assert d["px_per_mv"] == 20.0 and d["px_per_s"] == pytest.approx(22.4) and d["mv_range_up"] >= 1.0
    assert PAGE_3X4.describe(10.0)["mv_per_px"] == pytest.approx(0.1)


def test_st_shift_moves_twice_as_far_in_the_6x2_layout() -> None:
    for shift in (0.05, 0.2):
        six = measure_st_shift(shift, GRID_6X2)
        page = measure_st_shift(shift, PAGE_3X4)
        assert six == pytest.approx(shift * 20.0, rel=0.15)
        assert six > 1.7 * page > 0
    # Without filtering the exact-coverage renderer moves by exactly shift * px_per_mv.
    assert measure_st_shift(0.1, GRID_6X2, condition=False) == pytest.approx(2.0, abs=1e-4)


def test_synthetic_window_is_clean_and_shifted() -> None:
    base = synthetic_window(FS)
    up = synthetic_window(FS, st_shift_mv=0.1, st_leads=("V2",))
    diff = up - base
    assert diff[LEADS.index("V2")].max() == pytest.approx(0.1) and np.abs(np.delete(diff, LEADS.index("V2"), 0)).max() == 0


def test_paper_png_is_a_png_and_is_written(tmp_path) -> None:
    from engine.render import render_paper_png

    x = synthetic_window(500.0, 10.0)
    data = render_paper_png(x, 500.0, tmp_path / "page.png", title="synthetic")
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "page.png").read_bytes() == data
    import matplotlib.image as mpimg

    page = mpimg.imread(tmp_path / "page.png")
    assert page.shape[1] > page.shape[0] > 600  # landscape page, ~6 px/mm
    # Pink grid: a good share of reddish pixels, and black trace pixels.
    rgb = page[..., :3]
    assert ((rgb[..., 0] > 0.85) & (rgb[..., 1] < 0.8)).mean() > 0.05
    assert (rgb.max(axis=-1) < 0.2).mean() > 0.002
    with pytest.raises(SignalError):
        render_paper_png(np.zeros((8, 100)), 500.0)


def test_render_cli_writes_paper_and_model_image(tmp_path, capsys) -> None:
    import json

    import wfdb

    from engine.render.cli import render_main

    x = synthetic_window(500.0, 10.0)
    names = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]  # the limb leads are derived
    rows = x[[LEADS.index(n) for n in names]].T
    wfdb.wrsamp("syn", fs=500, units=["mV"] * 8, sig_name=names, p_signal=rows, fmt=["16"] * 8, adc_gain=[1000.0] * 8, baseline=[0] * 8,
                write_dir=str(tmp_path))
    out = tmp_path / "o" / "syn.png"
    assert render_main([str(tmp_path / "syn"), "--out", str(out), "--preset", "tiny"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["quality_flags"] == [] and report["evaluable"]
    import matplotlib.image as mpimg

    model = mpimg.imread(tmp_path / "o" / "syn.model.png")
    assert model.shape[:2] == (224, 224)
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert render_main([]) == 2


def test_bench_render_prints_json_last(capsys) -> None:
    import json

    from engine.render.bench import bench_main

    assert bench_main(["--n", "8", "--batch", "4", "--mpl-n", "2", "--repeat", "1", "--data", "/nonexistent"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["data"] == "synthetic" and last["n"] == 8
    assert last["images_per_s"] > 0 and last["matplotlib_images_per_s"] > 0
    assert last["speedup"] == pytest.approx(last["images_per_s"] / last["matplotlib_images_per_s"], rel=0.01)
    assert last["numpy_torch_max_abs_diff"] <= 1e-5


@pytest.mark.slow
def test_linear_probe_runs_on_ptbxl(ptbxl_dir) -> None:
    from engine.render.probe import linear_probe

    res = linear_probe(ptbxl_dir, pool=8)
    assert res["positives"] > 10 and res["n"] > res["positives"]
    assert 0.0 <= res["auroc_6x2"] <= 1.0 and 0.0 <= res["auroc_3x4"] <= 1.0
