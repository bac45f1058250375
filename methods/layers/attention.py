"""Self-attention sublayer and key-clip-guided attention (docs/methods.md §2 and §4.2).

``SelfAttentionLayer`` is the reference ``BertAttention``: one multi-head self-attention with
output map, dropout, residual and LayerNorm, and **no feed-forward block** (the reference
passes an ``intermediate_size`` that is never used). Subclasses can change the attention
weights alone by overriding :meth:`SelfAttentionLayer.attention_probs` (KDC-Net's DTA does).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from methods.layers.dropout import Dropout

#: ref: ms-sl method/model_components.py BertSelfAttention: additive mask on padded keys.
ATTENTION_MASK_VALUE = -1e4
#: ref: ms-sl method/model.py key_clip_guided_attention: ``masked_fill(..., -1e9)``.
KCGA_MASK_VALUE = -1e9


class SelfAttentionLayer(nn.Module):
    """H = LN(X + Dropout(Concat_h(A_h V_h) W_o + b_o)), A_h = Dropout(softmax(Q_h K_hᵀ/√d_h + M)).

    Q, K, V = X W_{q,k,v} + b; M = -1e4 on padded keys (mask 0), 0 elsewhere.

    Shapes: x (B, T, D), mask (B, T) float/bool with 1 = valid, or None -> (B, T, D).
    """

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads != 0:
            raise ValueError(f"SelfAttentionLayer: hidden size {hidden} is not a multiple of "
                             f"the number of heads {heads}")
        self.hidden = hidden
        self.heads = heads
        self.head_dim = hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attention_dropout = Dropout(dropout)
        self.output = nn.Linear(hidden, hidden)
        self.output_dropout = Dropout(dropout)
        # named LayerNorm for the reference's name-based no-decay rule (§3.5)
        self.LayerNorm = nn.LayerNorm(hidden)

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_dim).transpose(1, 2)  # (B, h, T, dh)

    def attention_probs(self, q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
        """softmax(q kᵀ/√d_h + M) over keys, before dropout.

        Shapes: q, k (B, h, T, dh); mask (B, T) or None -> (B, h, T, T).
        """
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, h, T, T)
        if mask is not None:
            additive = (1.0 - mask.to(scores.dtype)) * ATTENTION_MASK_VALUE  # (B, T)
            scores = scores + additive[:, None, None, :]
        return scores.softmax(dim=-1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        q = self._split_heads(self.query(x))  # (B, h, T, dh)
        k = self._split_heads(self.key(x))
        v = self._split_heads(self.value(x))
        probs = self.attention_dropout(self.attention_probs(q, k, mask))  # (B, h, T, T)
        context = torch.matmul(probs, v)  # (B, h, T, dh)
        context = context.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.hidden)  # (B, T, D)
        return self.LayerNorm(x + self.output_dropout(self.output(context)))


def guided_attention_pool(keys: Tensor, values: Tensor, mask: Tensor | None, guide: Tensor) -> Tensor:
    """f = Σ_t α_t V_t, α = softmax_t(K_t · u) with padded t set to -1e9 (no scaling, one head).

    Leading dimensions broadcast (einsum), so precomputed per-video keys (B, T, D) can meet a
    block of guides (Nq, B, D) without expanding the keys to (Nq, B, T, D).

    Shapes: keys, values (..., T, D); mask (..., T) with 1 = valid, or None; guide (..., D)
    -> (..., D) over the broadcast leading shape.
    """
    scores = torch.einsum("...td,...d->...t", keys, guide)  # (..., T)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, KCGA_MASK_VALUE)
    alpha = scores.softmax(dim=-1)  # (..., T)
    return torch.einsum("...t,...td->...d", alpha, values)  # (..., D)


def key_clip_guided_attention(frames: Tensor, mask: Tensor | None, guide: Tensor,
                              key_map: Callable[[Tensor], Tensor],
                              value_map: Callable[[Tensor], Tensor]) -> Tensor:
    """KCGA of MS-SL (docs/methods.md §4.2): K = key_map(F), V = value_map(F), then
    f = Σ_t softmax_t(K_t · u) V_t with u the raw (unprojected, unnormalised) key-clip
    proposal, padded positions at -1e9, no 1/√d scaling, a single head.

    Shapes: frames (..., T, D); mask (..., T) or None; guide (..., D) -> (..., D).
    """
    return guided_attention_pool(key_map(frames), value_map(frames), mask, guide)
