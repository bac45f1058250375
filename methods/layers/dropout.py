"""Dropout that keeps a 1-byte mask for backward instead of a float32 noise tensor.

On the CPU, ``torch.nn.functional.dropout`` draws ``noise = bernoulli(1 - p) / (1 - p)`` as a
tensor of the input's dtype and returns ``input * noise``; autograd then keeps ``noise`` (4 bytes
per element in float32) until backward. In KDC-Net's training step those noise tensors were
about 485 MB of the 2.9 GB that autograd saved on one 128-video TVR batch (counted with
autograd's saved-tensor hooks; docs/architecture.md §5.4).

:func:`dropout` makes the same calls in the same order (so the same random numbers, on any CPU,
and the same output bits) but keeps only ``noise != 0`` (1 byte per element) and rebuilds the
noise in backward with the same division, so gradients are bit-identical as well
(tests/test_layers.py). Elsewhere it is ``F.dropout`` itself: on CUDA the fused kernel already
keeps a boolean mask, and when nothing needs a gradient nothing is kept.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class _MaskedDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:  # pyright: ignore[reportIncompatibleMethodOverride]
        noise = torch.empty_like(x).bernoulli_(1 - p)      # as ATen's _dropout_impl, in order
        noise.div_(1 - p)
        ctx.save_for_backward(noise != 0)
        ctx.p = p
        return x * noise

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # pyright: ignore[reportIncompatibleMethodOverride]
        (kept,) = ctx.saved_tensors
        noise = kept.to(grad.dtype).div_(1 - ctx.p)        # the same bits as the forward's noise
        return grad * noise, None


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``F.dropout(x, p, training)`` with the same random numbers and result bits, keeping a
    boolean mask for backward on the CPU (see the module docstring)."""
    if (training and 0.0 < p < 1.0 and x.device.type == "cpu" and x.requires_grad
            and torch.is_grad_enabled() and x.numel() > 0):
        return _MaskedDropout.apply(x, p)  # pyright: ignore[reportReturnType]
    return F.dropout(x, p, training)


class Dropout(nn.Module):
    """Drop-in for ``nn.Dropout`` (no parameters, the same ``p`` attribute) using :func:`dropout`."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
