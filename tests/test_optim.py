"""Reference BertAdam and warmup_linear (docs/methods.md §3.5): hand-computed and oracle checks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.config import OptimConfig
from benchmark.training.optim import (
    BertAdam,
    build_optimizer,
    gate_names,
    no_decay_names,
    parameter_groups,
    warmup_linear,
)


def test_warmup_linear_values():
    assert warmup_linear(0.0, 0.01) == 0.0
    assert warmup_linear(0.005, 0.01) == pytest.approx(0.5)
    assert warmup_linear(0.01, 0.01) == pytest.approx(1.0)
    assert warmup_linear(0.505, 0.01) == pytest.approx(0.5)
    assert warmup_linear(1.0, 0.01) == 0.0
    assert warmup_linear(1.3, 0.01) == 0.0          # clamped after t_total


def test_two_step_update_by_hand():
    # one scalar, lr 0.1, t_total 10, warmup 0.1: step 0 has multiplier 0 (x = 0 < w),
    # step 1 evaluates x = 1/10 = w, multiplier (0.1-1)/(0.1-1) = 1.
    p = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = BertAdam([p], lr=0.1, t_total=10, warmup=0.1, weight_decay=0.01)
    p.grad = torch.tensor([0.5], dtype=torch.float64)
    opt.step()
    assert p.item() == 1.0                           # lr multiplier 0 at the first step
    p.grad = torch.tensor([-0.2], dtype=torch.float64)
    opt.step()
    m2 = 0.9 * (0.1 * 0.5) + 0.1 * -0.2              # 0.025
    v2 = 0.999 * (0.001 * 0.25) + 0.001 * 0.04       # 0.00028975
    u2 = m2 / (math.sqrt(v2) + 1e-6) + 0.01 * 1.0    # no bias correction; wd added before lr
    assert p.item() == pytest.approx(1.0 - 0.1 * u2, abs=1e-12)
    assert p.item() == pytest.approx(0.852140, abs=1e-6)
    assert opt.current_lr() == pytest.approx(0.1)


def _clipped_grads(clip: str) -> list[torch.Tensor]:
    """The gradients BertAdam leaves on two tensors after one step with ``clip`` at max norm 1."""
    c = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    d = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = BertAdam([c, d], lr=1.0, t_total=0, weight_decay=0.0, max_grad_norm=1.0, clip=clip)
    c.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)     # norm 5
    d.grad = torch.tensor([0.0, 12.0], dtype=torch.float64)    # norm 12; both norms: 13
    opt.step()
    return [c.grad, d.grad]


def test_per_tensor_and_global_clipping():
    a = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    b = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = BertAdam([a, b], lr=1.0, t_total=0, weight_decay=0.0, max_grad_norm=1.0)
    a.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)    # norm 5 -> clipped to norm 1
    b.grad = torch.tensor([0.3, 0.4], dtype=torch.float64)    # norm 0.5 -> untouched
    opt.step()
    assert torch.allclose(a.grad, torch.tensor([0.6, 0.8], dtype=torch.float64))
    assert torch.allclose(b.grad, torch.tensor([0.3, 0.4], dtype=torch.float64))

    # per tensor: each gradient scaled by 1/(own norm + 1e-6) (torch's clip_grad_norm_ eps)
    c, d = _clipped_grads("per_tensor")
    torch.testing.assert_close(c, torch.tensor([3.0, 4.0], dtype=torch.float64) / (5 + 1e-6))
    torch.testing.assert_close(d, torch.tensor([0.0, 12.0], dtype=torch.float64) / (12 + 1e-6))
    # global: one total norm sqrt(5² + 12²) = 13 over both tensors, one common scale
    scale = 1.0 / (13.0 + 1e-6)
    c_global, d_global = _clipped_grads("global")
    torch.testing.assert_close(c_global, torch.tensor([3.0 * scale, 4.0 * scale], dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d_global, torch.tensor([0.0, 12.0 * scale], dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)
    assert torch.linalg.vector_norm(torch.cat([c_global, d_global])).item() == pytest.approx(1.0, abs=1e-6)
    # the two modes disagree here: per tensor leaves each norm at 1, globally c keeps 5/13
    assert c.norm().item() == pytest.approx(1.0, abs=1e-6)
    assert c_global.norm().item() == pytest.approx(5 / 13, abs=1e-6)
    assert not torch.allclose(c, c_global) and not torch.allclose(d, d_global)


def _oracle(params0, grads, *, lr, t_total, warmup, wd, max_norm, bias_correction=False,
            b1=0.9, b2=0.999, eps=1e-6):
    """Plain NumPy restatement of the reference update, one tensor and one step at a time."""
    params = [p.copy() for p in params0]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for s, step_grads in enumerate(grads):
        for i, g in enumerate(step_grads):
            g = g.copy()
            norm = np.sqrt((g ** 2).sum())
            if max_norm > 0 and norm > max_norm:
                g = g * (max_norm / (norm + 1e-6))
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            mh, vh = m[i], v[i]
            if bias_correction:
                mh, vh = mh / (1 - b1 ** (s + 1)), vh / (1 - b2 ** (s + 1))
            u = mh / (np.sqrt(vh) + eps) + wd[i] * params[i]
            x = s / t_total
            mult = x / warmup if x < warmup else max((x - 1) / (warmup - 1), 0.0)
            params[i] = params[i] - lr * mult * u
    return params


@pytest.mark.parametrize("bias_correction", [False, True])
def test_matches_loop_oracle(bias_correction):
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)).double()
    names = [n for n, _ in model.named_parameters()]
    skip = no_decay_names(model)
    wd = [0.0 if n in skip else 0.01 for n in names]
    params0 = [p.detach().numpy().copy() for p in model.parameters()]
    steps = 12
    grads = [[rng.normal(scale=2.0, size=p.shape) for p in params0] for _ in range(steps)]
    opt = BertAdam(parameter_groups(model, 0.01), lr=0.01, t_total=steps, warmup=0.2,
                   max_grad_norm=1.0, bias_correction=bias_correction)
    for step_grads in grads:
        for p, g in zip(model.parameters(), step_grads):
            p.grad = torch.tensor(g)
        opt.step()
    want = _oracle(params0, grads, lr=0.01, t_total=steps, warmup=0.2, wd=wd, max_norm=1.0,
                   bias_correction=bias_correction)
    for name, p, w in zip(names, model.parameters(), want):
        np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-9, atol=1e-12, err_msg=name)


def test_bias_corrected_constant_lr_equals_adamw():
    torch.manual_seed(0)
    a = nn.Linear(5, 3).double()
    b = nn.Linear(5, 3).double()
    b.load_state_dict(a.state_dict())
    ours = BertAdam(a.parameters(), lr=1e-2, t_total=0, weight_decay=0.05, max_grad_norm=0.0,
                    bias_correction=True)
    ref = torch.optim.AdamW(b.parameters(), lr=1e-2, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.05)
    for _ in range(5):
        x = torch.randn(7, 5, dtype=torch.float64)
        for model, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 3)
        self.norm = nn.LayerNorm(3)           # not named LayerNorm: still no decay
        self.LayerNorm = nn.LayerNorm(3)      # reference naming
        self.scale = nn.Parameter(torch.ones(3))


def test_no_decay_rule_and_weight_decay_source():
    block = _Block()
    assert no_decay_names(block) == {"proj.bias", "norm.weight", "norm.bias",
                                     "LayerNorm.weight", "LayerNorm.bias"}
    ref = build_optimizer(block, OptimConfig(weight_decay=0.3), t_total=10)
    assert sorted(g["weight_decay"] for g in ref.param_groups) == [0.0, 0.01]   # --wd ignored
    cfg = build_optimizer(block, OptimConfig(weight_decay=0.3, weight_decay_source="config"), 10)
    assert sorted(g["weight_decay"] for g in cfg.param_groups) == [0.0, 0.3]
    decayed = [g for g in cfg.param_groups if g["weight_decay"] > 0][0]["params"]
    assert {id(p) for p in decayed} == {id(block.proj.weight), id(block.scale)}


class _Gated(nn.Module):
    no_weight_decay_parameters = frozenset({"gate", "absent"})   # a name not built is ignored

    def __init__(self):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(2))
        self.weight = nn.Parameter(torch.ones(2))
        self.inner = _Block()
        self.inner.gate = nn.Parameter(torch.zeros(1))   # a child's "gate": not listed by the child


def test_modules_list_their_own_no_decay_parameters():
    model = _Gated()
    skip = no_decay_names(model)
    assert "gate" in skip and "weight" not in skip
    assert "inner.gate" not in skip and "inner.proj.bias" in skip
    groups = parameter_groups(model, 0.01)
    plain = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert id(model.gate) in plain and id(model.weight) not in plain


def test_lr_schedule_over_a_run():
    p = nn.Parameter(torch.zeros(1))
    opt = BertAdam([p], lr=1.0, t_total=100, warmup=0.1)
    seen = []
    for _ in range(100):
        p.grad = torch.ones(1)
        opt.step()
        seen.append(opt.current_lr())
    assert seen[0] == 0.0 and seen[5] == pytest.approx(0.5) and seen[10] == pytest.approx(1.0)
    assert seen[55] == pytest.approx(0.5) and seen[-1] == pytest.approx(1 / 90)


class _WithGates(nn.Module):
    gate_parameters = frozenset({"mix", "absent"})    # a name not built is ignored

    def __init__(self, multiplier=None):
        super().__init__()
        self.block = _Block()
        self.mix = nn.Parameter(torch.zeros(2))
        if multiplier is not None:
            self.gate_lr_multiplier = multiplier


def test_gate_parameters_get_no_decay_and_their_own_lr_multiplier():
    model = _WithGates(multiplier=10.0)
    assert gate_names(model) == {"mix"} and "mix" in no_decay_names(model)
    opt = build_optimizer(model, OptimConfig(lr=0.01, max_grad_norm=0.0), t_total=0)
    (gates,) = [g for g in opt.param_groups if g["lr_scale"] != 1.0]
    assert [id(p) for p in gates["params"]] == [id(model.mix)] and gates["weight_decay"] == 0.0
    assert opt.scheduled_lr(gates, 0) == pytest.approx(0.1)
    assert all(id(model.mix) not in {id(p) for p in g["params"]} for g in opt.param_groups
               if g is not gates)
    # one step from zero state: update m/(√v+ε) = 0.1/(√0.001+1e-6) per entry, times the group lr
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = model.block.scale.detach().clone()
    opt.step()
    step = 0.1 / (0.001 ** 0.5 + 1e-6)
    assert torch.allclose(model.mix, torch.full((2,), -0.1 * step))
    assert torch.allclose(model.block.scale, before - 0.01 * (step + 0.01 * before))   # decayed
    with pytest.raises(ValueError, match="gate_lr_multiplier"):
        parameter_groups(model, 0.01, gate_lr_multiplier=0.0)


def test_models_without_gates_keep_exactly_the_two_reference_groups():
    # every method without gate parameters (ms-sl, dl-dkd, dl-dkd++) trains bit for bit as before
    block = _Block()
    groups = parameter_groups(block, 0.01, gate_lr_multiplier=7.0)
    assert [len(g["params"]) for g in groups] == [2, 5] and all("lr_scale" not in g for g in groups)
    torch.manual_seed(0)
    a, b = _WithGates(), _WithGates(multiplier=1.0)
    b.load_state_dict(a.state_dict())
    two = BertAdam(  # the pre-gate grouping: the gate in the plain no-decay group
        [{"params": [p for n, p in a.named_parameters() if n not in no_decay_names(a)],
          "weight_decay": 0.01},
         {"params": [p for n, p in a.named_parameters() if n in no_decay_names(a)],
          "weight_decay": 0.0}], lr=0.01, t_total=20, warmup=OptimConfig().warmup_proportion)
    three = build_optimizer(b, OptimConfig(lr=0.01), t_total=20)
    assert len(three.param_groups) == 3
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        for pa, pb in zip(a.parameters(), b.parameters()):
            pa.grad = torch.randn(pa.shape, generator=g)
            pb.grad = pa.grad.clone()
        two.step(), three.step()
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))
