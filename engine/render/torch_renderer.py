"""The same renderer in torch, for any device (CPU, CUDA): images equal the numpy renderer's.

It performs the numpy renderer's float32 operations in the same order, so on CPU the two agree to
rounding (tested: max abs difference <= 1e-5; in practice identical on CPU). Use it where the
windows already live on a GPU, e.g. rendering inside a batched inference step.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.render.geometry import CellGroup, check_batch, plan
from engine.render.layout import DEFAULT_LAYOUT, Layout

_DEVICE_PLANS: dict[tuple[Layout, int, str], list[dict[str, torch.Tensor | None]]] = {}


def _tensors(layout: Layout, T: int, device: torch.device) -> list[tuple[CellGroup, dict[str, torch.Tensor | None]]]:  # noqa: N803
    groups = plan(layout, T)
    key = (layout, T, str(device))
    if key not in _DEVICE_PLANS:
        _DEVICE_PLANS[key] = [
            {
                "leads": torch.as_tensor(g.leads, device=device),
                "b_lo": torch.as_tensor(g.b_lo, device=device),
                "b_frac": torch.as_tensor(g.b_frac, device=device),
                "inner": torch.as_tensor(g.inner, device=device),
                "inner_ok": None if g.inner_ok is None else torch.as_tensor(g.inner_ok, device=device),
                "rows": torch.arange(g.height, dtype=torch.float32, device=device)[:, None],
            }
            for g in groups
        ]
    return list(zip(groups, _DEVICE_PLANS[key]))


@torch.no_grad()
def render_batch_torch(
    x: torch.Tensor | np.ndarray,
    fs: float | None = None,
    *,
    layout: Layout = DEFAULT_LAYOUT,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Render a batch of windows as model images with torch.

    Args:
        x: (B, 12, T) leads in millivolts (tensor or array).
        fs: sampling rate in Hz (the image does not depend on it; see ``render_batch``).
        layout: the image layout.
        device: where to render; default the tensor's device (CPU for arrays).

    Returns:
        (B, 1, S, S) float32 tensor in [0, 1] on ``device``.
    """
    xt = torch.as_tensor(x)
    dev = torch.device(device) if device is not None else xt.device
    xt = xt.to(device=dev, dtype=torch.float32).contiguous()
    B, T = check_batch(tuple(xt.shape))  # noqa: N806
    S = layout.image_size  # noqa: N806
    out = torch.zeros((B, 1, S, S), dtype=torch.float32, device=dev)
    if B == 0:
        return out
    has_gaps = not bool(torch.isfinite(xt).all())
    half = layout.line_width_px / 2.0
    lw = half + half
    ppm = torch.tensor(layout.px_per_mv, dtype=torch.float32, device=dev)
    base = torch.tensor(layout.baseline_px, dtype=torch.float32, device=dev)
    for g, t in _tensors(layout, T, dev):
        lead_x = xt[:, t["leads"], :]  # (B, K, T)
        k_idx = torch.arange(len(g.leads), device=dev)[:, None]
        left = lead_x[:, k_idx, t["b_lo"]]  # (B, K, W+1)
        right = lead_x[:, k_idx, t["b_lo"] + 1]
        bound = left + (right - left) * t["b_frac"]
        vals = lead_x[:, k_idx, t["inner"]]  # (B, M, K, W)
        if t["inner_ok"] is not None:
            vals = torch.where(t["inner_ok"], vals, bound[:, None, :, :-1])
        lo = torch.minimum(torch.minimum(vals.amin(dim=1), bound[..., :-1]), bound[..., 1:])  # (B, K, W)
        hi = torch.maximum(torch.maximum(vals.amax(dim=1), bound[..., :-1]), bound[..., 1:])
        y_top = torch.clamp(base - hi * ppm - half, 0.0, g.height - lw)[:, :, None, :]  # (B, K, 1, W)
        y_bot = torch.clamp(base - lo * ppm + half, lw, float(g.height))[:, :, None, :]
        rows = t["rows"]
        cov = torch.minimum(rows + 1, y_bot) - torch.maximum(rows, y_top)  # (B, K, H, W)
        cov = cov.clamp_(min=0.0)  # <= 1 by construction
        if has_gaps:
            cov = torch.nan_to_num(cov, nan=0.0)
        for k in range(len(g.leads)):
            top, left_px = int(g.tops[k]), int(g.lefts[k])
            region = out[:, 0, top : top + g.height, left_px : left_px + g.width]
            torch.maximum(region, cov[:, k], out=region)
    return out
