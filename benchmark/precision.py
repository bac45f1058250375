"""Numeric precision of training: ``train.precision`` (docs/architecture.md §5.3).

* ``"fp32"`` (default): every op in float32, exactly as before the setting existed (the golden
  tests pin it). On CUDA, matmuls and cuDNN convolutions are IEEE float32, not TF32
  (:func:`ieee_float32`), so CUDA scores agree with CPU scores.
* ``"bf16"``: the loop runs each ``compute_loss`` under ``torch.autocast(<device type>,
  bfloat16)`` (:func:`forward_autocast`); the backward pass, the optimiser, the weights and the
  evaluator stay float32. Methods keep their losses in float32 by decorating the loss
  functions with :func:`float32_loss`: under autocast it casts the floating tensor arguments
  (logits, similarities, teacher features) to float32 and switches autocast off inside; with
  autocast off it calls the function untouched.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, ContextManager, Literal, TypeVar

import torch

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")
AUTOCAST_DEVICE_TYPES = ("cpu", "cuda")

F = TypeVar("F", bound=Callable[..., Any])


def forward_autocast(precision: Precision, device_type: str) -> Callable[[], ContextManager[Any]]:
    """A factory of the context that ``compute_loss`` runs in: nothing for fp32, bfloat16
    autocast on ``device_type`` ("cpu" or "cuda") for bf16."""
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "bf16":
        return functools.partial(torch.autocast, device_type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def _to_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64:
        return value.float()
    if isinstance(value, tuple):
        return tuple(_to_float32(v) for v in value)
    return value


def float32_loss(fn: F) -> F:
    """Decorator: run ``fn`` in float32 when autocast is on (inputs cast, autocast off inside);
    call it untouched when autocast is off, so fp32 runs are bit for bit what they were."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        active = [t for t in AUTOCAST_DEVICE_TYPES if torch.is_autocast_enabled(t)]
        if not active:
            return fn(*args, **kwargs)
        with contextlib.ExitStack() as stack:
            for device_type in active:
                stack.enter_context(torch.autocast(device_type, enabled=False))
            return fn(*(_to_float32(a) for a in args), **{k: _to_float32(v) for k, v in kwargs.items()})
    return wrapper  # type: ignore[return-value]


def ieee_float32() -> None:
    """Make float32 matmuls and cuDNN convolutions on CUDA IEEE float32 (no TF32) for this
    process; called when a run resolves a CUDA device. Nothing changes on the CPU."""
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    # torch's new TF32 switches (the legacy allow_tf32 flags must not be mixed with them);
    # cudnn.conv is made at run time, so the type stubs do not know it
    torch.backends.cudnn.conv.fp32_precision = "ieee"  # pyright: ignore[reportAttributeAccessIssue]


__all__ = ["Precision", "PRECISIONS", "forward_autocast", "float32_loss", "ieee_float32"]
