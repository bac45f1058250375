"""Shared building blocks (docs/methods.md §2, §4.2): hand-computed cases and loop oracles."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from methods.layers.attention import SelfAttentionLayer, guided_attention_pool, key_clip_guided_attention
from methods.layers.dropout import Dropout, dropout
from methods.layers.encoders import QueryEncoder, SequenceEncoder
from methods.layers.init import reference_init_
from methods.layers.pooling import AttentionPooling, mask_logits, masked_max, multi_scale_proposals
from methods.layers.projection import InputProjection, TrainablePositionalEncoding


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_reference_init_values():
    model = nn.Sequential(nn.Linear(400, 300), nn.LayerNorm(300), nn.Embedding(200, 300))
    for p in model.parameters():
        nn.init.constant_(p, 3.0)
    reference_init_(model)
    lin, ln, emb = model
    assert lin.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert lin.weight.mean().abs().item() < 1e-3
    assert emb.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.all(lin.bias == 0)
    assert torch.all(ln.weight == 1) and torch.all(ln.bias == 0)


def test_input_projection_formula():
    layer = InputProjection(6, 4, dropout=0.5).eval()
    x = torch.randn(2, 3, 6)
    normed = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    normed = normed * layer.LayerNorm.weight + layer.LayerNorm.bias
    expected = torch.relu(normed @ layer.linear.weight.t() + layer.linear.bias)
    torch.testing.assert_close(layer(x), expected)
    assert torch.all(layer(x) >= 0)


def test_positional_encoding_adds_positions_then_normalises():
    layer = TrainablePositionalEncoding(5, 4, dropout=0.5).eval()
    x = torch.randn(2, 3, 4)
    expected = F.layer_norm(x + layer.position_embeddings.weight[:3], (4,),
                            layer.LayerNorm.weight, layer.LayerNorm.bias)
    torch.testing.assert_close(layer(x), expected)
    with pytest.raises(ValueError, match="exceeds max_len 5"):
        layer(torch.randn(1, 6, 4))


def _attention_oracle(layer: SelfAttentionLayer, x, mask):
    """Per item, per head loop restating BertAttention (eval mode)."""
    out = torch.empty_like(x)
    dh = layer.head_dim
    for b in range(x.shape[0]):
        q = layer.query(x[b])
        k = layer.key(x[b])
        v = layer.value(x[b])
        heads = []
        for h in range(layer.heads):
            sl = slice(h * dh, (h + 1) * dh)
            scores = q[:, sl] @ k[:, sl].t() / math.sqrt(dh)
            if mask is not None:
                scores = scores + (1 - mask[b])[None, :] * -10000.0
            heads.append(torch.softmax(scores, dim=-1) @ v[:, sl])
        context = torch.cat(heads, dim=-1)
        out[b] = layer.LayerNorm(x[b] + layer.output(context))
    return out


def test_self_attention_matches_loop_oracle_with_mask():
    layer = reference_init_(SelfAttentionLayer(8, 2, dropout=0.3)).eval()
    nn.init.normal_(layer.query.weight, std=0.5)
    nn.init.normal_(layer.key.weight, std=0.5)
    x = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32)
    torch.testing.assert_close(layer(x, mask), _attention_oracle(layer, x, mask))
    torch.testing.assert_close(layer(x, None), _attention_oracle(layer, x, None))
    # padded keys carry no weight: changing them leaves the valid rows unchanged
    x2 = x.clone()
    x2[1, 3:] = 100.0
    torch.testing.assert_close(layer(x2, mask)[1, :3], layer(x, mask)[1, :3])


def test_self_attention_subclass_changes_only_the_weights():
    class Uniform(SelfAttentionLayer):
        def attention_probs(self, q, k, mask):
            t = q.shape[-2]
            return torch.full(q.shape[:-1] + (t,), 1.0 / t)

    layer = Uniform(8, 2, dropout=0.0).eval()
    x = torch.randn(2, 4, 8)
    mean_v = layer.value(x).mean(dim=1, keepdim=True).expand(-1, 4, -1)
    torch.testing.assert_close(layer(x, None), layer.LayerNorm(x + layer.output(mean_v)))


def test_self_attention_rejects_bad_heads():
    with pytest.raises(ValueError, match="multiple of the number of heads"):
        SelfAttentionLayer(10, 4, 0.1)


def test_kcga_hand_computed_no_scaling_and_masking():
    # identity maps: keys = values = frames; guide u = (1, 0)
    frames = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])  # (1, 3, 2)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    guide = torch.tensor([[1.0, 0.0]])
    out = key_clip_guided_attention(frames, mask, guide, nn.Identity(), nn.Identity())
    # scores (2, 0, masked) with NO 1/sqrt(d): alpha = (e^2, e^0)/(e^2+1)
    a0 = math.exp(2) / (math.exp(2) + 1)
    torch.testing.assert_close(out, torch.tensor([[2 * a0, 1 - a0]]))
    # without the mask the padded frame (score 5) dominates
    unmasked = key_clip_guided_attention(frames, None, guide, nn.Identity(), nn.Identity())
    assert unmasked[0, 0] > 4.0


def test_kcga_uses_key_and_value_maps():
    key_map = nn.Linear(3, 3, bias=False)
    value_map = nn.Linear(3, 3, bias=False)
    frames = torch.randn(2, 4, 3)
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 0, 0]])
    guide = torch.randn(2, 3)
    out = key_clip_guided_attention(frames, mask, guide, key_map, value_map)
    for b in range(2):
        n = int(mask[b].sum())
        alpha = torch.softmax(key_map(frames[b, :n]) @ guide[b], dim=0)
        torch.testing.assert_close(out[b], alpha @ value_map(frames[b, :n]))


def test_guided_attention_broadcasts_a_block_of_guides():
    keys = torch.randn(3, 5, 4)      # (B, T, D) per video
    values = torch.randn(3, 5, 4)
    mask = (torch.arange(5)[None, :] < torch.tensor([5, 3, 1])[:, None]).float()
    guides = torch.randn(2, 3, 4)    # (Nq, B, D)
    out = guided_attention_pool(keys, values, mask, guides)
    assert out.shape == (2, 3, 4)
    for i in range(2):
        for v in range(3):
            expected = guided_attention_pool(keys[v], values[v], mask[v], guides[i, v])
            torch.testing.assert_close(out[i, v], expected)


def test_mask_logits_and_masked_max():
    s = torch.tensor([[1.0, 5.0, 3.0]])
    m = torch.tensor([[1.0, 0.0, 1.0]])
    torch.testing.assert_close(mask_logits(s, m), torch.tensor([[1.0, -1e10, 3.0]]))
    values, index = masked_max(s, m, dim=1)
    assert values.item() == 3.0 and index.item() == 2


def test_attention_pooling_hand_computed_and_single_query():
    pool = AttentionPooling(2)
    with torch.no_grad():
        pool.score.weight.copy_(torch.tensor([[1.0, 0.0]]))
    states = torch.tensor([[[0.0, 1.0], [math.log(3.0), 2.0], [9.0, 9.0]]])  # (1, 3, 2)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    out = pool(states, mask)
    assert out.shape == (1, 2)  # the batch dim survives a one-query batch
    # weights (1, 3)/4 over the valid tokens
    torch.testing.assert_close(out, torch.tensor([[0.75 * math.log(3.0), 0.25 * 1 + 0.75 * 2]]))


def test_proposals_hand_computed_order_n3():
    clips = torch.tensor([[[1.0], [2.0], [4.0]]])
    out = multi_scale_proposals(clips)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([1.0, 2.0, 4.0, 1.5, 3.0, 7.0 / 3]))


def test_proposals_count_528_and_order_match_avgpool_reference():
    clips = torch.randn(2, 32, 6, dtype=torch.float64)
    out = multi_scale_proposals(clips)
    assert out.shape == (2, 528, 6)
    pooled = [clips] + [F.avg_pool1d(clips.transpose(1, 2), k, stride=1).transpose(1, 2)
                        for k in range(2, 33)]
    torch.testing.assert_close(out, torch.cat(pooled, dim=1))
    f32 = multi_scale_proposals(clips.float())
    assert f32.dtype == torch.float32
    torch.testing.assert_close(f32, out.float(), atol=1e-6, rtol=1e-6)


def test_query_encoder_shapes_and_projection_override():
    enc = QueryEncoder(6, 8, 2, max_len=5, input_dropout=0.0, dropout=0.0).eval()
    tokens = torch.randn(3, 4, 6)
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    assert enc.token_states(tokens, mask).shape == (3, 4, 8)
    assert enc(tokens, mask).shape == (3, 8)
    other = InputProjection(6, 8, 0.0)
    assert not torch.allclose(enc(tokens, mask, projection=other), enc(tokens, mask))
    expected = enc.pool(enc.encoder(enc.position(other(tokens)), mask), mask)
    torch.testing.assert_close(enc(tokens, mask, projection=other), expected)


def test_sequence_encoder_shapes_and_custom_attention():
    enc = SequenceEncoder(6, 8, 2, max_len=10)
    assert enc(torch.randn(2, 7, 6), torch.ones(2, 7)).shape == (2, 7, 8)

    class Passthrough(nn.Module):
        def forward(self, x, mask):
            return x

    enc = SequenceEncoder(6, 8, 2, max_len=10, input_dropout=0.0, attention=Passthrough()).eval()
    x = torch.randn(2, 7, 6)
    torch.testing.assert_close(enc(x, None), enc.position(enc.projection(x)))


def test_window_average_matrix_scores_equal_proposal_scores():
    from methods.layers.pooling import window_average_matrix
    clips = torch.randn(3, 32, 5, dtype=torch.float64)
    q = torch.randn(4, 5, dtype=torch.float64)
    A = window_average_matrix(32, torch.float64)
    assert A.shape == (528, 32)
    direct = torch.einsum("qd,bpd->qbp", q, multi_scale_proposals(clips))
    torch.testing.assert_close(torch.einsum("qd,btd->qbt", q, clips) @ A.t(), direct)
    torch.testing.assert_close(A[:3, :3], torch.eye(3, dtype=torch.float64))
    assert A[32, :2].tolist() == [0.5, 0.5] and A[-1].tolist() == [1 / 32] * 32


def test_sequence_encoder_pack_valid_keeps_valid_outputs():
    full = SequenceEncoder(6, 8, 2, max_len=10, input_dropout=0.0, dropout=0.0).eval()
    packed = SequenceEncoder(6, 8, 2, max_len=10, input_dropout=0.0, dropout=0.0, pack_valid=True).eval()
    packed.load_state_dict(full.state_dict())
    nn.init.normal_(full.projection.linear.bias)
    packed.load_state_dict(full.state_dict())
    x = torch.randn(3, 7, 6)
    mask = (torch.arange(7)[None, :] < torch.tensor([7, 4, 1])[:, None]).float()
    x = x * mask[..., None]
    a, b = full(x, mask), packed(x, mask)
    valid = mask.bool()
    torch.testing.assert_close(b[valid], a[valid])
    b.sum().backward()   # gradients flow through the scatter
    assert packed.projection.linear.weight.grad is not None


def test_query_encoder_pack_valid_keeps_outputs():
    full = QueryEncoder(6, 8, 2, max_len=5, input_dropout=0.0, dropout=0.0).eval()
    nn.init.normal_(full.projection.linear.bias)
    packed = QueryEncoder(6, 8, 2, max_len=5, input_dropout=0.0, dropout=0.0, pack_valid=True).eval()
    packed.load_state_dict(full.state_dict())
    tokens = torch.randn(3, 4, 6)
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    torch.testing.assert_close(packed(tokens, mask), full(tokens, mask))
    other = InputProjection(6, 8, 0.0)
    torch.testing.assert_close(packed(tokens, mask, projection=other), full(tokens, mask, projection=other))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_draws_and_returns_what_torch_does_and_keeps_a_byte_mask(p):
    """Same random numbers, output and gradient bits as F.dropout on the CPU; autograd keeps a
    bool mask (1 byte per element), not a float noise tensor."""
    x = torch.randn(64, 33, 17)
    grad_out = torch.randn_like(x)
    results = []
    for fn in (F.dropout, dropout):
        leaf = x.clone().requires_grad_(True)
        saved: list[torch.Tensor] = []
        torch.manual_seed(3)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            out = fn(leaf * 1.0, p, True)
        out.backward(grad_out)
        results.append((out.detach(), leaf.grad, torch.rand(1), [t.dtype for t in saved]))
    (want, want_grad, want_next, want_saved), (got, got_grad, got_next, got_saved) = results
    assert torch.equal(got, want) and torch.equal(got_grad, want_grad)
    assert torch.equal(got_next, want_next)          # the generator advanced alike
    assert want_saved == [x.dtype] and got_saved == [torch.bool]
    assert 0 < (got == 0).float().mean() < 2 * p


def test_dropout_module_is_identity_in_eval_and_without_grad():
    layer = Dropout(0.5)
    x = torch.randn(8, 4)
    assert layer.eval()(x) is x
    torch.manual_seed(0)
    with torch.no_grad():
        plain = layer.train()(x)
    torch.manual_seed(0)
    assert torch.equal(plain, F.dropout(x, 0.5, True))
    with pytest.raises(ValueError, match="probability"):
        Dropout(1.5)
