"""Export-time rewrites of a MIRAGE module: the same function, a graph ONNX Runtime runs faster.

Profiled on the project's 2-core AMD EPYC (AVX2, 1 intra-op thread, shipped ``small`` checkpoint,
batch 32): the ECG branch's convolutional stem (``engine.model.graphormer.ConvStem``: three
``Conv1d`` with kernel 9 over 16 channels and two GELUs, run on every lead's 1000 samples) took
77 % of PyTorch eager's time and ~60 % of ONNX Runtime's, although it is ~40 % of the
multiply-adds. ONNX Runtime's NCHWc layout optimiser (MLAS blocked direct convolutions) takes 2-D
convolutions only, so the 1-D stem ran through im2col + SGEMM per lead. Two rewrites, both exact in
real arithmetic (float32 results move by rounding only, ~1e-7):

* every ``Conv1d(k)`` over ``(B*L, C, T)`` becomes a ``Conv2d((1, k))`` over ``(B, C, L, T)``
  (leads as the image height), so ONNX Runtime runs it as an NCHWc convolution;
* the last convolution (``C -> 1`` channel; NCHWc blocks output channels by 8, so one output
  channel wastes 7/8 of the kernel) becomes a depthwise ``C -> C`` convolution followed by a sum
  over the channels, the same sum in another order.

The rewrite works on a deep copy; the caller's module is never touched. The torch module is not
faster eager (measured: slower), it only exports to a faster ONNX graph.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from trt.errors import ExportError

log = logging.getLogger(__name__)

REWRITE_VERSION = 1  # part of the cached file name: a changed rewrite never reuses an old graph


def _conv2d_from(conv: nn.Conv1d, *, depthwise: bool = False) -> nn.Conv2d:
    """The ``(1, k)`` 2-D twin of a stride-1, zero-padded ``Conv1d`` (weights copied)."""
    k = conv.kernel_size[0]
    if depthwise:
        out = nn.Conv2d(conv.in_channels, conv.in_channels, (1, k), padding=(0, conv.padding[0]),
                        groups=conv.in_channels, bias=False)
        out.weight.data = conv.weight.data.reshape(conv.in_channels, 1, 1, k).clone()  # (C, 1, 1, k)
        return out
    out = nn.Conv2d(conv.in_channels, conv.out_channels, (1, k), padding=(0, conv.padding[0]), bias=conv.bias is not None)
    out.weight.data = conv.weight.data[:, :, None, :].clone()  # (O, C, 1, k)
    if conv.bias is not None:
        out.bias.data = conv.bias.data.clone()
    return out


def _check_conv(conv: nn.Conv1d) -> None:
    k = conv.kernel_size[0]
    if (conv.stride[0], conv.dilation[0], conv.groups) != (1, 1, 1) or conv.padding_mode != "zeros" \
            or not isinstance(conv.padding, tuple) or 2 * conv.padding[0] != k - 1:
        raise ExportError(f"cannot rewrite {conv}: only stride-1, 'same' zero-padded, ungrouped Conv1d is supported")


class ConvStem2d(nn.Module):
    """``ConvStem`` on ``(B, C, L, T)`` with 2-D ``(1, k)`` convolutions; same output ``(B, L, T)``.

    Args:
        stem: an ``engine.model.graphormer.ConvStem`` whose ``net`` is a ``Sequential`` of
            ``Conv1d`` (first with 1 input channel) and elementwise activations.

    Raises:
        ExportError: the stem has a layer this rewrite does not know (the message names it).
    """

    def __init__(self, stem: nn.Module) -> None:
        super().__init__()
        layers = list(getattr(stem, "net", []))
        convs = [m for m in layers if isinstance(m, nn.Conv1d)]
        if not convs or convs[0].in_channels != 1:
            raise ExportError(f"cannot rewrite {type(stem).__name__}: expected a 'net' of Conv1d layers from 1 channel")
        out: list[nn.Module] = []
        self.channel_sum_bias: nn.Parameter | None = None
        for i, m in enumerate(layers):
            if isinstance(m, nn.Conv1d):
                _check_conv(m)
                last = i == len(layers) - 1
                if last and m.out_channels == 1 and m.in_channels > 1:
                    out.append(_conv2d_from(m, depthwise=True))
                    bias = m.bias.data.clone() if m.bias is not None else torch.zeros(1)
                    self.channel_sum_bias = nn.Parameter(bias.reshape(1, 1, 1), requires_grad=False)
                else:
                    out.append(_conv2d_from(m))
            elif isinstance(m, (nn.GELU, nn.ReLU, nn.SiLU, nn.Tanh, nn.Identity, nn.Dropout)):
                out.append(copy.deepcopy(m))
            else:
                raise ExportError(f"cannot rewrite {type(stem).__name__}: layer {i} is {type(m).__name__}")
        if convs[-1].out_channels != 1 or layers[-1] is not convs[-1]:
            raise ExportError(f"cannot rewrite {type(stem).__name__}: it must end with a Conv1d to 1 channel")
        self.net = nn.Sequential(*out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, T) -> (B, L, T)``: each lead plus its convolved residual."""
        B, L, T = x.shape
        y = self.net(x.reshape(B, 1, L, T))  # (B, C, L, T), or (B, 1, L, T) without the channel sum
        if self.channel_sum_bias is not None:
            y = y.sum(dim=1) + self.channel_sum_bias  # (B, L, T)
        return x + y.reshape(B, L, T)


def fast_export_module(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A deep copy of ``model`` with every rewrite applied, in eval mode, and their names.

    A model without a conv stem (``conv_stem=False``) comes back unchanged (an empty list).
    """
    from engine.model.graphormer import ConvStem

    fast = copy.deepcopy(model).eval()
    done: list[str] = []
    for name, module in list(fast.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, ConvStem):
                setattr(module, child_name, ConvStem2d(child).eval())
                done.append(f"{name + '.' if name else ''}{child_name}: Conv1d stem -> 2-D NCHWc convolutions")
    log.debug("export rewrites: %s", done or "none")
    return fast, done
