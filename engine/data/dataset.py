"""Model-ready datasets: raw windows read once, inputs made by THE shared pipeline, cached.

Every sample goes through :func:`engine.pipeline.model_inputs` - the function the stream worker
and the compiled backends call - so training sees exactly the inputs the live system will see.
Reading WFDB and conditioning happen once per record: the raw windows and the conditioned ECG are
kept in memory and, when a cache folder is given, in an ``.npz`` file whose name is a hash of the
records, their window starts, the model rate/length, ``RENDERER_VERSION`` and
``PREPROCESSING_VERSION``. Images are either rendered once and kept (``images=True``, small sets)
or rendered from the kept conditioned ECG in each batch (``images=False``, for large sets: the image
is a function of the conditioned ECG alone, so the pixels are the same; costs in docs/MODEL.md). The
cache never holds images.

Training-time augmentation (:func:`augment_windows`) works on the raw windows and re-runs the
pipeline on the augmented batch (rendering costs ~1 ms per window).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from engine.config import MirageConfig
from engine.data.items import Item
from engine.data.wfdb_io import load_window
from engine.labs import encode_labs
from engine.pipeline import PREPROCESSING_VERSION, RENDERER_VERSION, ModelInputs, condition_windows, model_inputs
from engine.render import render_batch

log = logging.getLogger(__name__)

_CHUNK = 64  # windows per model_inputs call while precomputing


@dataclass
class WindowSet:
    """Raw windows plus labels and encoded labs, aligned by index.

    Attributes:
        windows: (N, 12, T) float32 raw mV at ``cfg.fs``.
        labels: (N,) int64, 1 = MI.
        labs: (N, D_lab) float32 encoded labs.
        lab_mask: (N, D_lab) float32 presence mask.
        items: the N items, in order.
    """

    windows: np.ndarray
    labels: np.ndarray
    labs: np.ndarray
    lab_mask: np.ndarray
    items: list[Item]

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, idx: Sequence[int]) -> "WindowSet":
        ix = np.asarray(idx, dtype=np.int64)
        return WindowSet(self.windows[ix], self.labels[ix], self.labs[ix], self.lab_mask[ix], [self.items[i] for i in ix])

    @staticmethod
    def concat(parts: Sequence["WindowSet"]) -> "WindowSet":
        return WindowSet(
            np.concatenate([p.windows for p in parts]),
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.labs for p in parts]),
            np.concatenate([p.lab_mask for p in parts]),
            [it for p in parts for it in p.items],
        )


def cache_key(items: Sequence[Item], cfg: MirageConfig) -> str:
    """A hash naming everything the cached arrays depend on."""
    h = hashlib.sha256()
    h.update(f"{cfg.fs}|{cfg.T}|{cfg.lab_dim}|{RENDERER_VERSION}|{PREPROCESSING_VERSION}|no-images".encode())
    for it in items:
        h.update(f"|{it.path.resolve()}@{it.offset_s:.3f}#{sorted(it.labs.items())}".encode())
    return h.hexdigest()[:24]


def load_windows(items: Sequence[Item], cfg: MirageConfig, *, progress: bool = True) -> WindowSet:
    """Read one raw window per item (see :mod:`engine.data.wfdb_io` for the window rule)."""
    n = len(items)
    windows = np.empty((n, 12, cfg.T), dtype=np.float32)
    labs = np.zeros((n, cfg.lab_dim), dtype=np.float32)
    mask = np.zeros((n, cfg.lab_dim), dtype=np.float32)
    for i, it in enumerate(tqdm(items, desc="reading records", unit="rec", disable=not progress, leave=False)):
        windows[i] = load_window(it.path, cfg, it.offset_s)
        labs[i], mask[i] = encode_labs(it.labs)
    labels = np.asarray([it.label for it in items], dtype=np.int64)
    return WindowSet(windows, labels, labs, mask, list(items))


NO_IMAGES = np.zeros((0, 0), dtype=np.float32)  # ModelInputs.image of a dataset that renders per batch


def compute_inputs(ws: WindowSet, cfg: MirageConfig, *, progress: bool = True, images: bool = True) -> ModelInputs:
    """Run the shared pipeline over every window, in chunks (``images=False``: condition only)."""
    parts: list[ModelInputs] = []
    for s in tqdm(range(0, len(ws), _CHUNK), desc="conditioning" if not images else "rendering", unit="chunk", disable=not progress, leave=False):
        sl = slice(s, s + _CHUNK)
        if images:
            parts.append(model_inputs(ws.windows[sl], cfg, ws.labs[sl], ws.lab_mask[sl]))
        else:
            parts.append(ModelInputs(condition_windows(ws.windows[sl], cfg.fs), NO_IMAGES, ws.labs[sl], ws.lab_mask[sl]))
    return ModelInputs(
        ecg=np.concatenate([p.ecg for p in parts]),
        image=np.concatenate([p.image for p in parts]) if images else NO_IMAGES,
        labs=np.concatenate([p.labs for p in parts]),
        lab_mask=np.concatenate([p.lab_mask for p in parts]),
    )


class MirageDataset(torch.utils.data.Dataset):
    """A torch Dataset yielding ``(ecg, image, labs, lab_mask, label)`` float32/int64 tensors.

    Inputs are precomputed once with the shared pipeline (and cached on disk when ``cache_dir``
    is given). ``windows`` keeps the raw windows for augmentation.
    """

    def __init__(self, windows: WindowSet, cfg: MirageConfig, inputs: ModelInputs | None = None, *, progress: bool = True, images: bool = True) -> None:
        self.cfg = cfg
        self.windows = windows
        self.items = windows.items
        self.inputs = compute_inputs(windows, cfg, progress=progress, images=images) if inputs is None else inputs
        # Images rendered per batch from the conditioned ECG when they were not precomputed.
        self.lazy_images = self.inputs.image.ndim != 4
        self.labels = windows.labels
        # (N, 5) superclass targets for the auxiliary heads, NaN where a record's flags are unknown
        self.aux = np.asarray([it.classes if it.classes is not None else (np.nan,) * 5 for it in self.items], dtype=np.float32).reshape(len(self.items), 5)

    @classmethod
    def from_items(cls, items: Sequence[Item], cfg: MirageConfig, *, cache_dir: str | Path | None = None, progress: bool = True,
                   images: bool = True) -> "MirageDataset":
        """Read and condition ``items`` (or load them from the cache); render them now when ``images``."""
        f = _cache_file(items, cfg, cache_dir)
        cached = _load_cache(f, items)
        if cached is not None:
            ws, inputs = cached
            if images:
                inputs = ModelInputs(inputs.ecg, _render_all(inputs.ecg, cfg), inputs.labs, inputs.lab_mask)
            return cls(ws, cfg, inputs)
        ds = cls(load_windows(items, cfg, progress=progress), cfg, progress=progress, images=False)
        if f is not None:
            _save_cache(f, ds.windows, ds.inputs)
        if images:
            ds = cls(ds.windows, cfg, ModelInputs(ds.inputs.ecg, _render_all(ds.inputs.ecg, cfg), ds.inputs.labs, ds.inputs.lab_mask))
        return ds

    @staticmethod
    def concat(parts: Sequence["MirageDataset"]) -> "MirageDataset":
        """One dataset holding ``parts`` in order (inputs are not recomputed)."""
        cfg = parts[0].cfg
        lazy = any(p.lazy_images for p in parts)
        inputs = ModelInputs(*(NO_IMAGES if (k == "image" and lazy) else np.concatenate([getattr(p.inputs, k) for p in parts])
                               for k in ("ecg", "image", "labs", "lab_mask")))
        return MirageDataset(WindowSet.concat([p.windows for p in parts]), cfg, inputs)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        x = self.inputs
        return (
            torch.from_numpy(x.ecg[i]),
            torch.from_numpy(render_batch(x.ecg[i : i + 1], self.cfg.fs)[0] if self.lazy_images else x.image[i]),
            torch.from_numpy(x.labs[i]),
            torch.from_numpy(x.lab_mask[i]),
            torch.tensor(int(self.labels[i]), dtype=torch.int64),
        )

    def batch(self, idx: Sequence[int], *, render: bool = True) -> tuple[torch.Tensor, ...]:
        """Batch ``idx`` as stacked tensors (faster than collating items).

        Args:
            idx: sample indices.
            render: False for models without an image branch: the image is then a (B, 1, 1, 1)
                zero placeholder instead of a rendered (B, 1, 224, 224) batch.
        """
        ix = np.asarray(idx, dtype=np.int64)
        x = self.inputs
        ecg = x.ecg[ix]
        if not render:
            image = np.zeros((len(ix), 1, 1, 1), dtype=np.float32)
        else:
            image = render_batch(ecg, self.cfg.fs) if self.lazy_images else x.image[ix]
        return _tensors(ecg, image, x.labs[ix], x.lab_mask[ix], self.labels[ix])

    def augmented_batch(self, idx: Sequence[int], rng: np.random.Generator, *, render: bool = True) -> tuple[torch.Tensor, ...]:
        """Batch ``idx`` with :func:`augment_windows` applied to the raw windows, then the pipeline."""
        ix = np.asarray(idx, dtype=np.int64)
        raw = augment_windows(self.windows.windows[ix], self.cfg.fs, rng)
        if not render:
            ecg = condition_windows(raw, self.cfg.fs)
            return _tensors(ecg, np.zeros((len(ix), 1, 1, 1), dtype=np.float32), self.windows.labs[ix], self.windows.lab_mask[ix], self.labels[ix])
        x = model_inputs(raw, self.cfg, self.windows.labs[ix], self.windows.lab_mask[ix])
        return _tensors(x.ecg, x.image, x.labs, x.lab_mask, self.labels[ix])


def _tensors(*arrays: np.ndarray) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


def _render_all(ecg: np.ndarray, cfg: MirageConfig) -> np.ndarray:
    if not len(ecg):
        return np.zeros((0, 1, cfg.image_size, cfg.image_size), np.float32)
    return np.concatenate([render_batch(ecg[s : s + _CHUNK], cfg.fs) for s in range(0, len(ecg), _CHUNK)])


def _cache_file(items: Sequence[Item], cfg: MirageConfig, cache_dir: str | Path | None) -> Path | None:
    return None if cache_dir is None else Path(cache_dir) / f"inputs-{cache_key(items, cfg)}.npz"


def _load_cache(f: Path | None, items: Sequence[Item]) -> tuple[WindowSet, ModelInputs] | None:
    if f is None or not f.is_file():
        return None
    try:
        z = np.load(f)
        ws = WindowSet(z["windows"], z["labels"], z["labs"], z["lab_mask"], list(items))
        inputs = ModelInputs(ecg=z["ecg"], image=NO_IMAGES, labs=z["labs"], lab_mask=z["lab_mask"])
    except (OSError, KeyError, ValueError) as exc:
        log.warning("ignoring unreadable cache %s: %s", f, exc)
        return None
    if len(ws.labels) != len(items):
        return None
    log.info("loaded %d cached inputs from %s", len(items), f)
    return ws, inputs


def _save_cache(f: Path, ws: WindowSet, inputs: ModelInputs) -> None:
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f.stem + ".tmp.npz")
    np.savez(tmp, windows=ws.windows, labels=ws.labels, labs=inputs.labs, lab_mask=inputs.lab_mask, ecg=inputs.ecg)
    tmp.replace(f)


def augment_windows(x: np.ndarray, fs: float, rng: np.random.Generator) -> np.ndarray:
    """Label-preserving perturbations of raw windows (B, 12, T) mV.

    Per window: amplitude scale 0.8-1.25 (electrode and body habitus differences), a circular
    time shift of up to 2 s (the stream sees every phase of the cardiac cycle), slow baseline
    wander (0.05-0.4 Hz, up to 0.3 mV; removed again by the pipeline's high-pass) and white noise
    of 0-0.03 mV. ST-segment morphology is untouched.
    """
    B, L, T = x.shape
    out = x.astype(np.float32, copy=True)
    t = np.arange(T, dtype=np.float32) / float(fs)
    for b in range(B):
        out[b] *= rng.uniform(0.8, 1.25)
        out[b] = np.roll(out[b], int(rng.integers(-2 * fs, 2 * fs + 1)), axis=-1)
        f = rng.uniform(0.05, 0.4)
        out[b] += (rng.uniform(0, 0.3) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))).astype(np.float32)
        out[b] += rng.normal(0, rng.uniform(0, 0.03), size=(L, T)).astype(np.float32)
    return out
