"""HSA (docs/methods.md §9.3.3): shapes, parameter count, convolution windows, gating, padding."""
from __future__ import annotations

import math

import pytest
import torch

from methods.layers.hsa import HSA, HSAConfigError
from methods.layers.init import reference_init_


def _inputs(n=3, length=6, hidden=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(n, length, hidden, generator=g)
    lengths = torch.tensor([length, 1, 4][:n])
    mask = (torch.arange(length)[None] < lengths[:, None]).float()
    sentence = torch.randn(n, hidden, generator=g)
    return tokens, mask, sentence


def _hsa(hidden=16, **kw):
    torch.manual_seed(0)
    return reference_init_(HSA(hidden, **kw))


def test_parameter_count_matches_methods_md():
    assert sum(p.numel() for p in HSA(384).parameters()) == 887_808          # residual (default)
    assert sum(p.numel() for p in HSA(384, fusion="gate").parameters()) == 1_182_720
    d = 384
    assert sum(p.numel() for p in HSA(d, kernels=(1,), fusion="gate").parameters()) == (
        (d * d + d) + d + d + 2 * d * d + d)
    assert sum(p.numel() for p in HSA(d, kernels=(1,)).parameters()) == (d * d + d) + d + d + d
    assert sum(p.numel() for p in HSA(d, scale_agg="mean", fusion="mean").parameters()) == (
        6 * d * d + 3 * d + 3 * d)


def test_output_shapes():
    tokens, mask, sentence = _inputs()
    hsa = _hsa()
    assert hsa(tokens, mask, sentence).shape == (3, 16)
    assert hsa.phrase_features(tokens, mask).shape == (3, 3, 16)
    assert [s.shape for s in hsa.scale_states(tokens, mask)] == [(3, 6, 16)] * 3


def test_convolution_windows_are_asymmetric_as_specified():
    # loop oracle: position t of kernel k covers tokens t - floor((k-1)/2) .. t + ceil((k-1)/2)
    tokens, mask, _ = _inputs()
    hsa = _hsa(kernels=(1, 2, 3, 4))
    x = tokens * mask[..., None]
    for k, conv, got in zip(hsa.kernels, hsa.convs, hsa.scale_states(tokens, mask)):
        left = (k - 1) // 2
        for n in range(x.shape[0]):
            for t in range(x.shape[1]):
                acc = conv.bias.clone()
                for j in range(k):
                    s = t - left + j
                    if 0 <= s < x.shape[1]:
                        acc = acc + conv.weight[:, :, j] @ x[n, s]
                assert torch.allclose(got[n, t], acc.relu(), atol=1e-5), (k, n, t)


def _loop_hsa(hsa, tokens, mask, sentence, *, scale_agg="attention", fusion="gate"):
    """docs/methods.md §9.3.3 restated with Python loops over queries, positions and scales,
    reading only the module's parameters (never its methods). Returns (q, u, z); z is None
    without a gate. Everything in float64."""
    d = lambda t: t.detach().double()                                    # noqa: E731
    x, mu, qbar = d(tokens) * d(mask)[..., None], d(mask), d(sentence)   # H ⊙ μ
    nq, length, _ = x.shape
    qs, us, zs = [], [], []
    for n in range(nq):
        valid = [t for t in range(length) if mu[n, t] > 0]
        pooled = []                                                      # p^(k), one per scale
        for conv, pool in zip(hsa.convs, hsa.pools):
            w, b, k = d(conv.weight), d(conv.bias), conv.weight.shape[-1]
            left = (k - 1) // 2                                          # floor((k-1)/2) on the left
            states = []
            for t in range(length):
                acc = b.clone()
                for j in range(k):
                    s = t - left + j
                    if 0 <= s < length:                                  # zero padding outside
                        acc = acc + w[:, :, j] @ x[n, s]
                states.append(acc.clamp(min=0.0))                        # ReLU
            wp = d(pool.score.weight)[0]
            logits = [float(wp @ states[t]) for t in valid]              # softmax over valid tokens
            top = max(logits)
            e = [math.exp(v - top) for v in logits]
            pooled.append(sum((ei / sum(e)) * states[t] for ei, t in zip(e, valid)))
        if scale_agg == "attention":
            ws = d(hsa.scale_score.weight)[0]
            logits = [float(ws @ p) for p in pooled]
            top = max(logits)
            e = [math.exp(v - top) for v in logits]
            a = [ei / sum(e) for ei in e]
        else:
            a = [1.0 / len(pooled)] * len(pooled)
        u = sum(ak * p for ak, p in zip(a, pooled))
        z = None
        if fusion == "gate":
            z = torch.sigmoid(d(hsa.gate.weight) @ torch.cat([qbar[n], u]) + d(hsa.gate.bias))
            q = z * u + (1 - z) * qbar[n]
        elif fusion == "mean":
            q = (qbar[n] + u) / 2
        elif fusion == "residual":
            q = qbar[n] + d(hsa.residual_gate) * u
        else:
            q = u
        qs.append(q)
        us.append(u)
        zs.append(z)
    stack = lambda v: None if v[0] is None else torch.stack(v)           # noqa: E731
    return torch.stack(qs), torch.stack(us), stack(zs)


@pytest.mark.parametrize("kernels", [(1, 2, 3), (1,), (2, 4), (1, 2, 3, 4)])
@pytest.mark.parametrize("scale_agg", ["attention", "mean"])
@pytest.mark.parametrize("fusion", ["residual", "gate", "mean", "phrase"])
def test_forward_matches_loop_oracle(kernels, scale_agg, fusion):
    tokens, mask, sentence = _inputs()
    hsa = _hsa(kernels=kernels, scale_agg=scale_agg, fusion=fusion)
    assert (hsa.gate is None) == (fusion != "gate")              # unused modules are not built
    assert hasattr(hsa, "residual_gate") == (fusion == "residual")
    if fusion == "residual":                                      # an opened gate, not the identity
        with torch.no_grad():
            hsa.residual_gate.copy_(torch.linspace(-1.0, 2.0, 16))
    want, _, _ = _loop_hsa(hsa, tokens, mask, sentence, scale_agg=scale_agg, fusion=fusion)
    got = hsa(tokens, mask, sentence)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    # float64 end to end: agreement to rounding
    got64 = hsa.double()(tokens.double(), mask.double(), sentence.double())
    torch.testing.assert_close(got64, want, rtol=1e-10, atol=1e-12)


def test_residual_form_is_the_identity_at_init_and_its_gate_learns_first():
    tokens, mask, sentence = _inputs()
    hsa = _hsa()
    assert hsa.fusion == "residual" and torch.equal(hsa.residual_gate, torch.zeros(16))
    out = hsa(tokens, mask, sentence)
    assert torch.equal(out, sentence)                            # q = q̄ exactly while g = 0
    out.square().sum().backward()
    _, u, _ = _loop_hsa(hsa, tokens, mask, sentence, fusion="residual")
    # dL/dg = Σ_n 2 q̄_n ⊙ u_n: the gate gets a gradient, the phrase path none until g moves
    torch.testing.assert_close(hsa.residual_gate.grad.double(), (2 * sentence.double() * u).sum(0),
                               rtol=1e-5, atol=1e-6)
    assert hsa.residual_gate.grad.abs().sum() > 0
    assert all(p.grad is None or not p.grad.any() for n, p in hsa.named_parameters()
               if n != "residual_gate")
    with torch.no_grad():
        hsa.residual_gate.fill_(0.5)
    hsa.zero_grad()
    hsa(tokens, mask, sentence).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in hsa.parameters())


def test_gate_in_unit_interval_and_near_half_at_init():
    tokens, mask, sentence = _inputs()
    hsa = _hsa(hidden=16, fusion="gate")
    _, u, z = _loop_hsa(hsa, tokens, mask, sentence)
    assert ((z > 0) & (z < 1)).all()
    # weights N(0, 0.02²) and zero bias: z scatters a few hundredths around 0.5
    assert abs(z.mean().item() - 0.5) < 0.02
    assert (z - 0.5).abs().max() < 0.15
    # a saturated gate selects the phrase side, a closed one the sentence side
    with torch.no_grad():
        hsa.gate.weight.zero_()
        hsa.gate.bias.fill_(50.0)
    torch.testing.assert_close(hsa(tokens, mask, sentence).double(), u, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        hsa.gate.bias.fill_(-50.0)
    assert torch.allclose(hsa(tokens, mask, sentence), sentence, atol=1e-6)


def test_scale_attention_weights_sum_to_one_and_mean_aggregation_is_uniform():
    tokens, mask, _ = _inputs()
    hsa = _hsa()
    a = hsa.scale_weights(hsa.phrase_features(tokens, mask))
    assert torch.allclose(a.sum(1), torch.ones(3))
    mean = _hsa(scale_agg="mean")
    assert mean.scale_score is None
    assert torch.equal(mean.scale_weights(mean.phrase_features(tokens, mask)), torch.full((3, 3), 1 / 3))


def test_padding_invariance():
    tokens, mask, sentence = _inputs()
    hsa = _hsa(fusion="gate")
    base = hsa(tokens, mask, sentence)
    extra = torch.randn(3, 4, 16) * 10.0
    longer = hsa(torch.cat([tokens, extra], 1), torch.cat([mask, torch.zeros(3, 4)], 1), sentence)
    assert torch.allclose(base, longer, atol=1e-6)
    # and garbage in already padded slots changes nothing either
    dirty = tokens.masked_fill((mask == 0)[..., None], 7.0)
    assert torch.allclose(base, hsa(dirty, mask, sentence), atol=1e-6)


def test_gradients_reach_every_parameter():
    tokens, mask, sentence = _inputs()
    hsa = _hsa(fusion="gate")
    hsa(tokens, mask, sentence).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in hsa.parameters())


@pytest.mark.parametrize("kw", [{"kernels": ()}, {"kernels": (0,)}, {"kernels": (2, 2)},
                                {"scale_agg": "max"}, {"fusion": "sum"}])
def test_bad_settings_rejected(kw):
    with pytest.raises(HSAConfigError, match="hsa."):
        HSA(8, **kw)
