"""HSA: hierarchical semantic aggregation of query tokens (docs/methods.md §9.3.3). RECONSTRUCTION.

prvr-bench's own design from the abstract of arXiv 2603.23902 ("multi-scale phrase cues ...
fused adaptively"); no equation here comes from the paper. For token states H (m, D), token
mask μ and the branch's sentence feature q̄:

    P^(k) = ReLU(Conv1d_k(H ⊙ μ))          k ∈ K (default {1, 2, 3}: word, phrases)
    p^(k) = Pool^(k)(P^(k), μ)              attention pooling of §2, one vector per scale
    a     = softmax_k(w_sᵀ p^(k)),  u = Σ_k a_k p^(k)            (scale_agg="attention")
          or u = mean_k p^(k)                                      (scale_agg="mean")
    q     = q̄ + g ⊙ u,  g ∈ R^D a learned gate, initialised to 0     (fusion="residual")
    z     = sigmoid(W_z [q̄; u] + b_z),  q = z ⊙ u + (1 - z) ⊙ q̄  (fusion="gate")
          or q = (q̄ + u)/2 (fusion="mean"), or q = u (fusion="phrase")

``residual`` starts as the identity (q = q̄ exactly while g = 0) and is kdc-net's default since
issue 13; ``gate`` is the first reconstruction's form, which at initialisation mixes half of u
into every query (z ≈ 0.5). In the residual form only g receives a gradient at the very first
step (the phrase path is multiplied by g = 0); once g moves, the phrase path learns too.

Conv1d_k pads floor((k-1)/2) zeros on the left and ceil((k-1)/2) on the right, so position t
covers tokens t - floor((k-1)/2) .. t + ceil((k-1)/2) and the output keeps length m.
"""
from __future__ import annotations

from typing import ClassVar, Literal, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.errors import PRVRBenchError
from methods.layers.init import INITIALIZER_RANGE
from methods.layers.pooling import AttentionPooling


class HSAConfigError(PRVRBenchError, ValueError):
    """Bad HSA settings; the message names the knob."""


class HSA(nn.Module):
    """Multi-scale phrase pooling plus fusion with the sentence feature (§9.3.3).

    Parameters with K = {1,2,3}, D = 384: Σ_k (k D² + D) + |K| D + D, plus the fusion's:
    residual D (887,808 in all), gate 2D² + D (1,182,720), mean and phrase none. Conv1d
    weights are drawn N(0, 0.02²) with zero bias here, because
    ``reference_init_`` covers Linear/Embedding/LayerNorm only (§2 rule applied to convolutions);
    the gate and pooling vectors are Linear layers, so a later ``reference_init_`` re-draws them
    under the same rule, giving z ≈ 0.5 at the start (gate fusion). The residual gate g is a
    plain parameter, so it keeps its 0; ``residual_gate`` is listed in ``gate_parameters``
    (benchmark/training/optim.py): no weight decay, and the gate group's lr multiplier.

    Shapes: tokens (Nq, L, D) encoded token states; mask (Nq, L) float 1/0; sentence (Nq, D)
    the branch's pooled q̄ -> (Nq, D).
    """

    #: read by benchmark.training.optim.gate_names (GATE_ATTRIBUTE)
    gate_parameters: ClassVar[frozenset[str]] = frozenset({"residual_gate"})

    def __init__(self, hidden: int, kernels: Sequence[int] = (1, 2, 3),
                 scale_agg: Literal["attention", "mean"] = "attention",
                 fusion: Literal["residual", "gate", "mean", "phrase"] = "residual") -> None:
        super().__init__()
        kernels = tuple(int(k) for k in kernels)
        if not kernels or any(k < 1 for k in kernels) or len(set(kernels)) != len(kernels):
            raise HSAConfigError(f"hsa.kernels must be distinct positive sizes; got {kernels!r}")
        if scale_agg not in ("attention", "mean"):
            raise HSAConfigError(f"hsa.scale_agg must be 'attention' or 'mean'; got {scale_agg!r}")
        if fusion not in ("residual", "gate", "mean", "phrase"):
            raise HSAConfigError(f"hsa.fusion must be 'residual', 'gate', 'mean' or 'phrase'; "
                                 f"got {fusion!r}")
        self.kernels = kernels
        self.scale_agg = scale_agg
        self.fusion = fusion
        convs = [nn.Conv1d(hidden, hidden, k) for k in kernels]
        for conv in convs:
            nn.init.normal_(conv.weight, mean=0.0, std=INITIALIZER_RANGE)
            if conv.bias is not None:                     # always: built with bias=True
                nn.init.zeros_(conv.bias)
        self.convs = nn.ModuleList(convs)
        self.pools = nn.ModuleList(AttentionPooling(hidden) for _ in kernels)
        # modules a setting does not use are not built (parameter counts and RNG stay honest)
        self.scale_score = nn.Linear(hidden, 1, bias=False) if scale_agg == "attention" else None
        self.gate = nn.Linear(2 * hidden, hidden) if fusion == "gate" else None
        if fusion == "residual":
            self.residual_gate = nn.Parameter(torch.zeros(hidden))                # g, (D,)

    def scale_states(self, tokens: Tensor, mask: Tensor) -> list[Tensor]:
        """P^(k) = ReLU(Conv1d_k(H ⊙ μ)) for every k (padded tokens zeroed first; the outputs at
        padded positions are left for the pooling mask). Shapes: -> |K| tensors (Nq, L, D)."""
        x = (tokens * mask.to(tokens.dtype)[..., None]).transpose(1, 2)   # (Nq, D, L)
        # one padded copy for every kernel, each conv reading its window of it: autograd keeps
        # that one copy instead of one per kernel (same values, so the same results)
        most_left = max((k - 1) // 2 for k in self.kernels)
        padded = F.pad(x, (most_left, max(k // 2 for k in self.kernels)))  # (Nq, D, L + pads)
        length = x.shape[-1]
        states = []
        for k, conv in zip(self.kernels, self.convs):
            start = most_left - (k - 1) // 2                                # floor / ceil of (k-1)/2
            window = padded[..., start:start + length + k - 1]              # (Nq, D, L + k - 1)
            states.append(F.relu(conv(window)).transpose(1, 2))             # (Nq, L, D)
        return states

    def phrase_features(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Pooled feature of every scale, p^(k). Shapes: -> (Nq, |K|, D)."""
        pooled = [pool(states, mask) for pool, states
                  in zip(self.pools, self.scale_states(tokens, mask))]     # |K| x (Nq, D)
        return torch.stack(pooled, dim=1)                                   # (Nq, |K|, D)

    def scale_weights(self, phrases: Tensor) -> Tensor:
        """a_k over scales. Shapes: phrases (Nq, |K|, D) -> (Nq, |K|)."""
        if self.scale_score is None:
            return phrases.new_full(phrases.shape[:2], 1.0 / phrases.shape[1])
        return self.scale_score(phrases).squeeze(-1).softmax(dim=1)         # (Nq, |K|)

    def gate_values(self, sentence: Tensor, phrase: Tensor) -> Tensor:
        """z = sigmoid(W_z [q̄; u] + b_z) (fusion="gate" only). Shapes: (Nq, D), (Nq, D) -> (Nq, D)."""
        if self.gate is None:
            raise HSAConfigError(f"HSA with fusion={self.fusion!r} has no gate")
        return torch.sigmoid(self.gate(torch.cat([sentence, phrase], dim=-1)))  # (Nq, D)

    def forward(self, tokens: Tensor, mask: Tensor, sentence: Tensor) -> Tensor:
        phrases = self.phrase_features(tokens, mask)                        # (Nq, |K|, D)
        weights = self.scale_weights(phrases)                               # (Nq, |K|)
        phrase = torch.einsum("nk,nkd->nd", weights, phrases)               # (Nq, D) u
        if self.fusion == "phrase":
            return phrase
        if self.fusion == "mean":
            return 0.5 * (sentence + phrase)
        if self.fusion == "residual":
            return sentence + self.residual_gate * phrase                   # (Nq, D) q̄ + g ⊙ u
        z = self.gate_values(sentence, phrase)                              # (Nq, D)
        return z * phrase + (1.0 - z) * sentence
