"""DTA (docs/methods.md §9.3.4): reduction to §2 attention, masking, window geometry, mixing."""
from __future__ import annotations

import math

import pytest
import torch

from benchmark.training.optim import no_decay_names, parameter_groups
from methods.layers.attention import SelfAttentionLayer
from methods.layers.dta import DTAConfigError, DynamicTemporalAttention
from methods.layers.init import reference_init_

HIDDEN, HEADS = 16, 4


def _frames(seed=0, batch=3, length=7):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, HIDDEN, generator=g)
    lengths = torch.tensor([length, 1, 4])[:batch]
    mask = (torch.arange(length)[None] < lengths[:, None]).float()
    return x, mask


def _dta(**kw):
    torch.manual_seed(0)
    return reference_init_(DynamicTemporalAttention(HIDDEN, HEADS, 0.0, **kw)).eval()


def _qk(layer, x):
    return layer._split_heads(layer.query(x)), layer._split_heads(layer.key(x))


def _perturb(layer, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("rel_bias", "centre_weight", "centre_bias", "width_weight", "width_bias",
                     "gamma_logit"):
            if hasattr(layer, name):
                p = getattr(layer, name)
                p.add_(torch.randn(p.shape, generator=g) * 0.5)


def test_parameter_count_matches_methods_md():
    base = sum(p.numel() for p in SelfAttentionLayer(384, 4, 0.1).parameters())
    full = sum(p.numel() for p in DynamicTemporalAttention(384, 4, 0.1).parameters())
    assert full - base == 1_040
    assert sum(p.numel() for p in DynamicTemporalAttention(
        384, 4, 0.1, rel_pos=False, window=False).parameters()) == base
    assert sum(p.numel() for p in DynamicTemporalAttention(
        384, 4, 0.1, adaptive=False, learn_gamma=False).parameters()) - base == 4 * 65


@pytest.mark.parametrize("rel_pos", [False, True])
def test_without_window_and_bias_equals_self_attention_exactly(rel_pos):
    x, mask = _frames()
    torch.manual_seed(0)
    plain = reference_init_(SelfAttentionLayer(HIDDEN, HEADS, 0.0)).eval()
    dta = _dta(rel_pos=rel_pos, window=False)
    missing, unexpected = dta.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and missing == (["rel_bias"] if rel_pos else [])
    # a zero relative-bias table adds exact zeros
    assert torch.equal(dta(x, mask), plain(x, mask))
    assert torch.equal(dta(x, None), plain(x, None))


def test_padded_keys_get_exactly_zero_weight_and_rows_sum_to_one():
    x, mask = _frames()
    dta = _dta()
    _perturb(dta)
    probs = dta.attention_probs(*_qk(dta, x), mask)                       # (B, h, T, T)
    assert probs.shape == (3, HEADS, 7, 7)
    assert probs.masked_select((mask == 0)[:, None, None, :].expand_as(probs)).eq(0).all()
    assert torch.allclose(probs.sum(-1), torch.ones(3, HEADS, 7), atol=1e-6)


def test_padding_does_not_change_valid_outputs():
    x, mask = _frames()
    dta = _dta()
    _perturb(dta)
    out = dta(x, mask)
    longer = dta(torch.cat([x, torch.randn(3, 2, HIDDEN) * 5], 1), torch.cat([mask, torch.zeros(3, 2)], 1))
    valid = mask.bool()
    assert torch.allclose(out[valid], longer[:, :7][valid], atol=1e-5)


def test_window_at_init_is_centred_on_each_frame_with_width_sigma0():
    x, mask = _frames()
    dta = _dta(sigma0=0.2)
    centre, width, tau = dta.window(_qk(dta, x)[0], mask)
    # τ_j = j / max(n - 1, 1): n = 7, 1, 4
    assert torch.allclose(tau[0], torch.arange(7) / 6)
    assert torch.allclose(tau[1], torch.arange(7).float())
    assert torch.allclose(tau[2], torch.arange(7) / 3)
    assert torch.allclose(centre, tau[:, None, :].clamp(0, 1).expand_as(centre))
    assert torch.equal(width, torch.full_like(width, 0.2))
    assert torch.equal(dta.gamma(), torch.zeros(HEADS))                  # tanh form, γ0 = 0
    assert torch.allclose(_dta(gamma_form="sigmoid", gamma0=0.5).gamma(), torch.full((HEADS,), 0.5))


def test_window_centre_and_width_follow_the_attention_query():
    x, mask = _frames()
    dta = _dta(sigma0=0.1, max_shift=0.25, sigma_min=0.01, sigma_max=1.0)
    q = _qk(dta, x)[0]                                                     # (B, h, T, dh)
    a, b = 3.0, -0.4
    with torch.no_grad():
        dta.centre_weight.zero_()
        dta.centre_weight[1, 0] = a        # head 1's centre follows query coordinate 0
        dta.centre_bias[2] = 1.0           # head 2 shifts every centre later by 0.25·tanh(1)
        dta.width_weight[3, 2] = a         # head 3 width follows query coordinate 2
        dta.width_bias[3] = b
    centre, width, tau = dta.window(q, mask)
    want1 = (tau + 0.25 * torch.tanh(a * q[:, 1, :, 0])).clamp(0, 1)
    assert torch.allclose(centre[:, 1], want1, atol=1e-6)
    assert torch.allclose(centre[:, 2], (tau + 0.25 * math.tanh(1.0)).clamp(0, 1), atol=1e-6)
    assert torch.allclose(centre[:, 0], tau.clamp(0, 1))
    # the centre moves towards later frames exactly where the query pushes it positively
    moved = centre[:, 1] - tau.clamp(0, 1)
    inside = (tau > 0) & (tau < 1)
    assert torch.equal(torch.sign(moved[inside]), torch.sign(q[:, 1, :, 0][inside]))
    want3 = (0.1 * torch.exp(a * q[:, 3, :, 2] + b)).clamp(0.01, 1.0)
    assert torch.allclose(width[:, 3], want3, atol=1e-6)
    assert torch.equal(width[:, 0], torch.full_like(width[:, 0], 0.1))
    # extreme widths are clipped to [σ_min, σ_max]
    with torch.no_grad():
        dta.width_bias[0] = 20.0
        dta.width_bias[1] = -20.0
    _, width, _ = dta.window(q, mask)
    assert torch.equal(width[:, 0], torch.ones_like(width[:, 0]))
    assert torch.allclose(width[:, 1], torch.full_like(width[:, 1], 0.01))


def test_gaussian_window_peaks_at_the_predicted_centre():
    x, mask = _frames(length=9, batch=1)
    dta = _dta(rel_pos=False, learn_gamma=False, gamma0=1.0, sigma0=0.05)
    with torch.no_grad():
        dta.query.weight.zero_()
        dta.key.weight.zero_()            # flat content logits: the window alone shapes A
        dta.query.bias.fill_(1.0)         # every query coordinate is 1
        dta.centre_bias.fill_(10.0)       # tanh saturates: each centre shifts by +0.25
    probs = dta.attention_probs(*_qk(dta, x), mask)[0]                    # (h, T, T)
    tau = torch.arange(9) / 8
    centre = (tau + 0.25).clamp(0, 1)
    nearest = (tau[None, :] - centre[:, None]).abs().argmin(dim=1)        # (T,)
    assert torch.equal(probs.argmax(-1), nearest[None].expand(HEADS, 9))


def _loop_oracle(dta, q, k, mask):
    bsz, heads, length, dh = q.shape
    gamma = dta.gamma()
    out = torch.zeros(bsz, heads, length, length)
    for b in range(bsz):
        n = int(mask[b].sum())
        valid = [j for j in range(length) if mask[b, j] > 0]
        for h in range(heads):
            for i in range(length):
                tau_i = i / max(n - 1, 1)
                c = min(max(tau_i + dta.max_shift * math.tanh(
                    float(dta.centre_weight[h] @ q[b, h, i]) + float(dta.centre_bias[h])), 0.0), 1.0)
                s = min(max(dta.sigma0 * math.exp(
                    float(dta.width_weight[h] @ q[b, h, i]) + float(dta.width_bias[h])),
                    dta.sigma_min), dta.sigma_max)
                logits = {j: float(q[b, h, i] @ k[b, h, j]) / math.sqrt(dh)
                          + float(dta.rel_bias[h, max(-dta.rel_pos_max, min(dta.rel_pos_max, j - i))
                                               + dta.rel_pos_max]) for j in valid}
                g = {j: -(j / max(n - 1, 1) - c) ** 2 / (2 * s * s) for j in valid}
                z1 = sum(math.exp(v) for v in logits.values())
                z2 = sum(math.exp(logits[j] + g[j]) for j in valid)
                for j in valid:
                    out[b, h, i, j] = ((1 - float(gamma[h])) * math.exp(logits[j]) / z1
                                       + float(gamma[h]) * math.exp(logits[j] + g[j]) / z2)
    return out


@pytest.mark.parametrize("gamma_form", ["tanh", "sigmoid"])
def test_matches_loop_oracle_with_clipped_relative_bias(gamma_form):
    x, mask = _frames(length=7)
    dta = _dta(rel_pos_max=2, sigma0=0.3, gamma_form=gamma_form, gamma0=0.3)
    _perturb(dta)
    q, k = _qk(dta, x)
    with torch.no_grad():
        got = dta.attention_probs(q, k, mask)
        want = _loop_oracle(dta, q, k, mask)
    assert torch.allclose(got, want, atol=1e-5)


def test_fixed_gamma_endpoints():
    x, mask = _frames()
    zero = _dta(learn_gamma=False, gamma0=0.0)
    assert not hasattr(zero, "gamma_logit")
    _perturb(zero)
    q, k = _qk(zero, x)
    no_window = _dta(window=False)
    no_window.load_state_dict(zero.state_dict(), strict=False)
    assert torch.allclose(zero.attention_probs(q, k, mask), no_window.attention_probs(q, k, mask))


def test_gradients_reach_the_new_parameters():
    x, mask = _frames()
    dta = _dta()
    _perturb(dta)
    dta(x, mask).square().sum().backward()
    for name in ("rel_bias", "centre_weight", "centre_bias", "width_weight", "width_bias", "gamma_logit"):
        grad = getattr(dta, name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_default_is_self_attention_exactly_at_init_and_its_gate_learns():
    # tanh form, γ0 = 0, b = 0: the §2 layer, whatever the other DTA parameters hold
    x, mask = _frames()
    torch.manual_seed(0)
    plain = reference_init_(SelfAttentionLayer(HIDDEN, HEADS, 0.0)).eval()
    dta = _dta()
    assert dta.gamma_form == "tanh" and torch.equal(dta.gamma(), torch.zeros(HEADS))
    missing, unexpected = dta.load_state_dict(plain.state_dict(), strict=False)
    assert set(missing) == {"rel_bias", "centre_weight", "centre_bias", "width_weight",
                            "width_bias", "gamma_logit"} and not unexpected
    with torch.no_grad():                       # a window that would change A if it were mixed in
        dta.centre_weight.normal_(0, 1.0)
        dta.width_bias.fill_(-1.0)
    out = dta(x, mask)
    assert torch.allclose(out, plain(x, mask), rtol=0, atol=1e-6)
    out.square().sum().backward()
    assert dta.gamma_logit.grad.abs().min() > 0                   # ρ learns from the first step
    assert not dta.centre_weight.grad.any()                        # the window waits for γ ≠ 0
    # the first reconstruction's form mixes half a window in from the start
    old = _dta(gamma_form="sigmoid", gamma0=0.5)
    old.load_state_dict(dta.state_dict())
    assert torch.allclose(old.gamma(), torch.full((HEADS,), 0.5))
    assert not torch.allclose(old(x, mask), plain(x, mask), atol=1e-3)


def test_tanh_gate_starts_at_gamma0_and_stays_inside_minus_one_one():
    dta = _dta(gamma0=0.02)
    assert torch.allclose(dta.gamma(), torch.full((HEADS,), 0.02))
    with torch.no_grad():
        dta.gamma_logit.copy_(torch.tensor([-30.0, -0.5, 0.5, 30.0]))
    gamma = dta.gamma()
    assert (gamma.abs() <= 1).all() and gamma[1] < 0 < gamma[2]


@pytest.mark.parametrize("kw", [{"gamma0": 0.0, "gamma_form": "sigmoid"}, {"gamma0": 1.0},
                                {"gamma0": -0.1}, {"gamma_form": "relu"},
                                {"gamma0": 1.5, "learn_gamma": False},
                                {"sigma0": 0.0}, {"sigma_min": 0.5, "sigma_max": 0.1},
                                {"rel_pos_max": -1}, {"max_shift": -0.1}])
def test_bad_settings_rejected(kw):
    with pytest.raises(DTAConfigError, match="dta."):
        DynamicTemporalAttention(HIDDEN, HEADS, 0.0, **kw)


def test_gamma_logit_is_a_gate_parameter():
    from benchmark.training.optim import gate_names

    dta = _dta()
    assert gate_names(dta) == {"gamma_logit"}
    groups = parameter_groups(dta, 0.01, gate_lr_multiplier=5.0)
    (gates,) = [g for g in groups if "lr_scale" in g]
    assert [id(p) for p in gates["params"]] == [id(dta.gamma_logit)] and gates["lr_scale"] == 5.0


def test_gamma_logit_is_not_weight_decayed():
    # ρ is a scalar gate logit: excluded by the module's explicit list, not by its name (inside
    # kdc-net: tests/test_kdc_net.py)
    dta = _dta()
    assert "gamma_logit" in DynamicTemporalAttention.no_weight_decay_parameters
    skip = no_decay_names(dta)
    assert "gamma_logit" in skip and not any(part in "gamma_logit" for part in ("bias", "LayerNorm"))
    assert {"centre_weight", "width_weight", "query.weight"}.isdisjoint(skip)
    assert {"rel_bias", "centre_bias", "width_bias"} <= skip
    groups = parameter_groups(dta, 0.01)
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay_of[id(dta.gamma_logit)] == 0.0 and decay_of[id(dta.centre_weight)] == 0.01


def test_recomputed_attention_weights_give_the_kept_graph_gradients_bit_for_bit():
    """attention_probs recomputes the window and softmaxes in backward (less memory); outputs
    and every gradient equal those of the graph that keeps them, and nothing is kept but the
    inputs."""
    x, mask = _frames(batch=3, length=9)
    grads = []
    for kept in (True, False):
        dta = _dta()
        _perturb(dta)
        leaf = x.clone().requires_grad_(True)
        q, k = _qk(dta, leaf)
        saved: list[tuple[int, ...]] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t,
                                                      lambda t: t):
            probs = dta._attention_probs(q, k, mask) if kept else dta.attention_probs(q, k, mask)
        (probs * torch.linspace(-1, 1, probs.numel()).view_as(probs)).sum().backward()
        grads.append([probs.detach(), leaf.grad] + [p.grad for p in dta.parameters()])
        square = [s for s in saved if len(s) == 4 and s[-1] == s[-2] == 9]     # (B, h, T, T)
        assert (len(square) > 2) if kept else not square
    for want, got in zip(*grads):
        assert (want is None and got is None) or torch.equal(want, got)
