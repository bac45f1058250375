"""HSA (docs/methods.md §9.3.3): shapes, parameter count, convolution windows, gating, padding."""
from __future__ import annotations

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
    assert sum(p.numel() for p in HSA(384).parameters()) == 1_182_720
    d = 384
    assert sum(p.numel() for p in HSA(d, kernels=(1,)).parameters()) == (d * d + d) + d + d + 2 * d * d + d
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


def test_gate_in_unit_interval_and_near_half_at_init():
    tokens, mask, sentence = _inputs()
    hsa = _hsa(hidden=16)
    phrase = torch.einsum("nk,nkd->nd", hsa.scale_weights(hsa.phrase_features(tokens, mask)),
                          hsa.phrase_features(tokens, mask))
    z = hsa.gate_values(sentence, phrase)
    assert ((z > 0) & (z < 1)).all()
    # weights N(0, 0.02²) and zero bias: z scatters a few hundredths around 0.5
    assert abs(z.mean().item() - 0.5) < 0.02
    assert (z - 0.5).abs().max() < 0.15
    want = z * phrase + (1 - z) * sentence
    assert torch.allclose(hsa(tokens, mask, sentence), want, atol=1e-6)
    # a saturated gate selects one side
    with torch.no_grad():
        hsa.gate.weight.zero_()
        hsa.gate.bias.fill_(50.0)
    assert torch.allclose(hsa(tokens, mask, sentence), phrase, atol=1e-6)


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
    hsa = _hsa()
    base = hsa(tokens, mask, sentence)
    extra = torch.randn(3, 4, 16) * 10.0
    longer = hsa(torch.cat([tokens, extra], 1), torch.cat([mask, torch.zeros(3, 4)], 1), sentence)
    assert torch.allclose(base, longer, atol=1e-6)
    # and garbage in already padded slots changes nothing either
    dirty = tokens.masked_fill((mask == 0)[..., None], 7.0)
    assert torch.allclose(base, hsa(dirty, mask, sentence), atol=1e-6)


def test_mean_and_phrase_fusion():
    tokens, mask, sentence = _inputs()
    for fusion in ("mean", "phrase"):
        hsa = _hsa(fusion=fusion)
        assert hsa.gate is None
        phrases = hsa.phrase_features(tokens, mask)
        u = torch.einsum("nk,nkd->nd", hsa.scale_weights(phrases), phrases)
        want = u if fusion == "phrase" else (u + sentence) / 2
        assert torch.allclose(hsa(tokens, mask, sentence), want, atol=1e-6)


def test_gradients_reach_every_parameter():
    tokens, mask, sentence = _inputs()
    hsa = _hsa()
    hsa(tokens, mask, sentence).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in hsa.parameters())


@pytest.mark.parametrize("kw", [{"kernels": ()}, {"kernels": (0,)}, {"kernels": (2, 2)},
                                {"scale_agg": "max"}, {"fusion": "sum"}])
def test_bad_settings_rejected(kw):
    with pytest.raises(HSAConfigError, match="hsa."):
        HSA(8, **kw)
