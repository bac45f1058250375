"""The reference optimiser: BertAdam with warmup_linear (docs/methods.md §3.5), plus fix switches.

Per parameter tensor p with gradient g, at the tensor's step count s (before its increment):

    g ← g · min(1, max_grad_norm / ‖g‖₂)          per tensor (clip="per_tensor", the reference)
    m ← β₁ m + (1−β₁) g ;  v ← β₂ v + (1−β₂) g²
    u ← m / (√v + ε)                               no bias correction (bias_correction=False)
    u ← u + wd · p                                 decoupled weight decay, before the lr
    p ← p − lr · warmup_linear(s / t_total, w) · u

    warmup_linear(x, w) = x / w            for x < w
                          max((x−1)/(w−1), 0) otherwise

Switches (OptimConfig): ``bias_correction=True`` divides m by 1−β₁^(s+1) and v by 1−β₂^(s+1);
``clip="global"`` clips the norm of all gradients together instead of each tensor;
``max_grad_norm <= 0`` switches clipping off; ``weight_decay_source="config"`` uses
``optim.weight_decay`` where the reference hard-codes 0.01.

No-decay rule (:func:`parameter_groups`): a parameter gets weight decay 0 when its qualified
name contains "bias", "LayerNorm.bias" or "LayerNorm.weight" (the reference's name test), or it
belongs directly to a ``torch.nn.LayerNorm`` module whatever its name (our modules need not be
called LayerNorm; in the reference every LayerNorm is, so the two rules select the same set),
or its module lists it in a ``no_weight_decay_parameters`` class attribute
(:data:`NO_DECAY_ATTRIBUTE`): the names of that module's *own* parameters (not its children's)
that must not be decayed whatever they are called. That is how a parameter the reference has
no counterpart for says which group it belongs to (e.g. DTA's scalar gate logit
``gamma_logit``) without relying on its name.

Gate group (:func:`gate_names`): a module may list, in a ``gate_parameters`` class or instance
attribute (:data:`GATE_ATTRIBUTE`), the names of its own parameters that are gates or mixing
weights (a scalar or vector that opens one of the module's paths, such as HSA's residual gate
or DTA's γ logit). They get no weight decay and their own group, whose lr is the run's lr times
the model's ``gate_lr_multiplier`` attribute (:data:`GATE_LR_ATTRIBUTE`; 1 when the model has
none, so every method without gates trains exactly as before). Why: BertAdam moves a parameter
by about lr per step whatever its gradient's size, so a gate that starts closed (0) would
barely move in a run of a few hundred steps at lr ≈ 3e-4.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from benchmark.config import OptimConfig

#: ref: BertAdam weight_decay=0.01 in every codebase's train.py; --wd is never passed on.
REFERENCE_WEIGHT_DECAY = 0.01
NO_DECAY_NAME_PARTS = ("bias", "LayerNorm.bias", "LayerNorm.weight")
#: Class attribute of a module: names of its own parameters that get no weight decay.
NO_DECAY_ATTRIBUTE = "no_weight_decay_parameters"
#: Attribute of a module: names of its own gate/mixing parameters (no decay, gate-group lr).
GATE_ATTRIBUTE = "gate_parameters"
#: Attribute of the model: lr multiplier of the gate group (absent: 1).
GATE_LR_ATTRIBUTE = "gate_lr_multiplier"


def warmup_linear(x: float, warmup: float) -> float:
    """LR multiplier at training fraction ``x`` (docs/methods.md §3.5)."""
    if x < warmup:
        return x / warmup
    return max((x - 1.0) / (warmup - 1.0), 0.0)


def gate_names(model: nn.Module) -> set[str]:
    """Qualified names of the gate and mixing parameters (:data:`GATE_ATTRIBUTE`); a listed name
    the module did not build is ignored, as for the no-decay list."""
    names: set[str] = set()
    for mod_name, module in model.named_modules():
        listed = frozenset(getattr(module, GATE_ATTRIBUTE, ()))
        for p_name, _ in module.named_parameters(recurse=False):
            if p_name in listed:
                names.add(f"{mod_name}.{p_name}" if mod_name else p_name)
    return names


def no_decay_names(model: nn.Module) -> set[str]:
    """Qualified names of the parameters that get no weight decay (rule in the module docstring;
    gate parameters included)."""
    names = {n for n, _ in model.named_parameters() if any(part in n for part in NO_DECAY_NAME_PARTS)}
    names |= gate_names(model)
    for mod_name, module in model.named_modules():
        listed = frozenset(getattr(module, NO_DECAY_ATTRIBUTE, ()))
        for p_name, _ in module.named_parameters(recurse=False):
            if isinstance(module, nn.LayerNorm) or p_name in listed:
                names.add(f"{mod_name}.{p_name}" if mod_name else p_name)
    return names


def parameter_groups(model: nn.Module, weight_decay: float,
                     gate_lr_multiplier: float = 1.0) -> list[dict]:
    """Groups of trainable parameters, empty ones dropped: decayed (``weight_decay``), not
    decayed (0), and the gates (weight decay 0, ``lr_scale = gate_lr_multiplier``).

    A model without gate parameters gets exactly the two groups it got before the gate group
    existed, in the same order.
    """
    if not gate_lr_multiplier > 0:
        raise ValueError(f"gate_lr_multiplier must be > 0, got {gate_lr_multiplier}")
    skip, gates = no_decay_names(model), gate_names(model)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if n not in skip], "weight_decay": weight_decay},
        {"params": [p for n, p in params if n in skip and n not in gates], "weight_decay": 0.0},
        {"params": [p for n, p in params if n in gates], "weight_decay": 0.0,
         "lr_scale": float(gate_lr_multiplier)},
    ]
    return [g for g in groups if g["params"]]


class BertAdam(torch.optim.Optimizer):
    """Adam without bias correction, decoupled weight decay, per-tensor clipping, warmup_linear.

    ``t_total`` is the number of optimiser steps of the whole run (steps_per_epoch × epochs);
    ``t_total <= 0`` keeps the lr constant, as the reference does with t_total = -1. A group's
    ``lr_scale`` (default 1) multiplies its lr (the gate group of :func:`parameter_groups`).
    """

    def __init__(self, params: Iterable, *, lr: float, t_total: int, warmup: float = 0.01,
                 weight_decay: float = REFERENCE_WEIGHT_DECAY, max_grad_norm: float = 1.0,
                 clip: str = "per_tensor", bias_correction: bool = False,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if clip not in ("per_tensor", "global"):
            raise ValueError(f"clip must be 'per_tensor' or 'global', got {clip!r}")
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup must be in [0, 1), got {warmup}")
        defaults = dict(lr=lr, t_total=t_total, warmup=warmup, weight_decay=weight_decay,
                        max_grad_norm=max_grad_norm, betas=betas, eps=eps, lr_scale=1.0)
        super().__init__(params, defaults)
        self.clip = clip
        self.bias_correction = bias_correction

    def scheduled_lr(self, group: dict, step: int) -> float:
        """lr × lr_scale × warmup_linear(step / t_total) for a tensor that has taken ``step`` steps
        (lr_scale 1 multiplies exactly, so groups without one are unchanged bit for bit)."""
        lr = group["lr"] * group.get("lr_scale", 1.0)       # absent in pre-gate checkpoints
        if group["t_total"] <= 0:
            return lr
        return lr * warmup_linear(step / group["t_total"], group["warmup"])

    def current_lr(self) -> float:
        """The lr the most recent step used (0 steps: the lr the first step will use)."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if state:
                    return self.scheduled_lr(group, max(int(state["step"]) - 1, 0))
        group = self.param_groups[0]
        return self.scheduled_lr(group, 0)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.clip == "global":
            grads = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
            max_norm = self.param_groups[0]["max_grad_norm"] if self.param_groups else 0.0
            if grads and max_norm > 0:
                nn.utils.clip_grad_norm_(grads, max_norm)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("BertAdam does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["next_m"] = torch.zeros_like(p)
                    state["next_v"] = torch.zeros_like(p)
                if self.clip == "per_tensor" and group["max_grad_norm"] > 0:
                    # ref: clip_grad_norm_(p, max_grad_norm) on each tensor separately
                    nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                grad = p.grad
                m, v = state["next_m"], state["next_v"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                if self.bias_correction:
                    t = state["step"] + 1
                    update = (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + group["eps"])
                else:
                    update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"] > 0:
                    update = update + group["weight_decay"] * p      # decoupled, before the lr
                lr = self.scheduled_lr(group, state["step"])          # step count before increment
                p.add_(update, alpha=-lr)
                state["step"] += 1
        return loss


def build_optimizer(model: nn.Module, cfg: OptimConfig, t_total: int) -> BertAdam:
    """The reference optimiser for ``model`` with ``t_total = steps_per_epoch × epochs``; the
    gate group's lr multiplier is the model's ``gate_lr_multiplier`` attribute (1 if absent)."""
    wd = REFERENCE_WEIGHT_DECAY if cfg.weight_decay_source == "reference" else cfg.weight_decay
    multiplier = float(getattr(model, GATE_LR_ATTRIBUTE, 1.0))
    return BertAdam(parameter_groups(model, wd, multiplier), lr=cfg.lr, t_total=t_total,
                    warmup=cfg.warmup_proportion, max_grad_norm=cfg.max_grad_norm, clip=cfg.clip,
                    bias_correction=cfg.bias_correction, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
