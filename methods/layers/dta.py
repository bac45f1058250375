"""DTA: dynamic temporal attention over frames (docs/methods.md §9.3.4). RECONSTRUCTION.

prvr-bench's own design from the abstract of arXiv 2603.23902 ("relative positional encoding
and adaptive temporal windows"); no equation here comes from the paper. DTA is the §2
self-attention sublayer with different attention weights; for head h and frames i, j of a
video with n valid frames:

    L_h,ij = Q_h,i·K_h,j/√d_h + b_h[clip(j - i, -R, R)] + M_j            (M: -1e4 on padding, §2)
    τ_j    = j / max(n - 1, 1)                                           (0-based j)
    c_h,i  = clip(τ_i + s_max tanh(u_h·Q_h,i + u_h0), 0, 1)
    σ_h,i  = clip(σ_0 exp(v_h·Q_h,i + v_h0), σ_min, σ_max)
    G_h,ij = -(τ_j - c_h,i)² / (2 σ_h,i²)
    A_h    = (1 - γ_h) softmax_j(L_h) + γ_h softmax_j(L_h + G_h)
    γ_h    = tanh(ρ_h), ρ_h init atanh(γ_0)      (gamma_form="tanh", the default)
          or sigmoid(ρ_h), ρ_h init logit(γ_0)   (gamma_form="sigmoid", the first reconstruction)

Padded keys are set to the dtype's minimum in both softmaxes (after G is added), so they get
exactly zero weight. Q is the frame's own attention query: the encoding never sees the text,
which keeps videos cacheable and ``score`` separable. b, u, v start at 0 (an explicit exception
to the N(0, 0.02²) rule), ρ at atanh(γ_0) or logit(γ_0): at the start every frame's window is
centred on itself with width σ_0.

Identity at initialisation (issue 13): with the tanh form and γ_0 = 0 (the defaults) γ = 0 and
b = 0, so A is exactly the §2 softmax and DTA computes what SelfAttentionLayer computes; ρ still
gets a gradient (dA/dγ = softmax(L + G) − softmax(L) ≠ 0) and the window opens as it learns.
The sigmoid form cannot reach γ = 0 (γ_0 = 0.5 was the first reconstruction's default). Under
tanh γ may turn negative: rows of A still sum to 1, but a row may then hold negative weights
(the layer subtracts local context); |γ| < 1 always.
"""
from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from benchmark.errors import PRVRBenchError
from methods.layers.attention import ATTENTION_MASK_VALUE, SelfAttentionLayer


class DTAConfigError(PRVRBenchError, ValueError):
    """Bad DTA settings; the message names the knob."""


class DynamicTemporalAttention(SelfAttentionLayer):
    """Self-attention sublayer with relative position bias and an adaptive Gaussian window.

    Only :meth:`attention_probs` differs from :class:`SelfAttentionLayer`; projections, dropout,
    output map, residual and LayerNorm are inherited. With ``rel_pos=False`` and ``window=False``
    it computes exactly what SelfAttentionLayer computes. Parameters added with every switch on:
    h(2R+1) + h(2 d_h + 2) + h, i.e. 1,040 for h = 4, d_h = 96, R = 32.

    Weight decay (benchmark/training/optim.py): ``gamma_logit`` ρ is a per-head scalar gate
    logit, not a projection weight; decaying it would pull γ towards γ(0) (0.5 under sigmoid)
    for no reason, so it is listed in ``no_weight_decay_parameters`` and gets none. It is also
    a gate (``gate_parameters``): it trains at the gate group's learning-rate multiplier.
    ``rel_bias``, ``centre_bias`` and ``width_bias`` get none by the reference's "bias" name
    rule; ``centre_weight`` and ``width_weight`` are projection weights and are decayed like the
    Linear weights.

    Shapes: x (B, T, D), mask (B, T) float 1/0 or None -> (B, T, D).
    """

    #: read by benchmark.training.optim.no_decay_names (NO_DECAY_ATTRIBUTE)
    no_weight_decay_parameters: ClassVar[frozenset[str]] = frozenset({"gamma_logit"})
    #: read by benchmark.training.optim.gate_names (GATE_ATTRIBUTE)
    gate_parameters: ClassVar[frozenset[str]] = frozenset({"gamma_logit"})

    def __init__(self, hidden: int, heads: int, dropout: float, *, rel_pos: bool = True,
                 window: bool = True, adaptive: bool = True, learn_gamma: bool = True,
                 sigma0: float = 0.1, gamma0: float = 0.0,
                 gamma_form: Literal["tanh", "sigmoid"] = "tanh", max_shift: float = 0.25,
                 sigma_min: float = 0.01, sigma_max: float = 1.0, rel_pos_max: int = 32) -> None:
        super().__init__(hidden, heads, dropout)
        if rel_pos_max < 0:
            raise DTAConfigError(f"dta.rel_pos_max must be >= 0; got {rel_pos_max}")
        if not 0 < sigma_min <= sigma_max:
            raise DTAConfigError(f"dta.sigma_min/sigma_max must satisfy 0 < min <= max; got "
                                 f"{sigma_min}, {sigma_max}")
        if not sigma0 > 0:
            raise DTAConfigError(f"dta.sigma0 must be > 0; got {sigma0}")
        if max_shift < 0:
            raise DTAConfigError(f"dta.max_shift must be >= 0; got {max_shift}")
        if gamma_form not in ("tanh", "sigmoid"):
            raise DTAConfigError(f"dta.gamma_form must be 'tanh' or 'sigmoid'; got {gamma_form!r}")
        if learn_gamma and window and gamma_form == "sigmoid" and not 0.0 < gamma0 < 1.0:
            raise DTAConfigError(f"dta.gamma0 must lie in (0, 1) when dta.learn_gamma is true and "
                                 f"dta.gamma_form is 'sigmoid' (logit(γ0) initialises ρ); got {gamma0}")
        if learn_gamma and window and gamma_form == "tanh" and not 0.0 <= gamma0 < 1.0:
            raise DTAConfigError(f"dta.gamma0 must lie in [0, 1) when dta.learn_gamma is true and "
                                 f"dta.gamma_form is 'tanh' (atanh(γ0) initialises ρ); got {gamma0}")
        if not 0.0 <= gamma0 <= 1.0:
            raise DTAConfigError(f"dta.gamma0 must lie in [0, 1]; got {gamma0}")
        self.use_rel_pos = rel_pos
        self.use_window = window
        self.adaptive = adaptive and window
        self.learn_gamma = learn_gamma and window
        self.gamma_form = gamma_form
        self.sigma0, self.gamma0, self.max_shift = float(sigma0), float(gamma0), float(max_shift)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.rel_pos_max = int(rel_pos_max)
        # parameters a setting does not use are not created (counts stay honest, RNG untouched)
        if rel_pos:
            self.rel_bias = nn.Parameter(torch.zeros(heads, 2 * self.rel_pos_max + 1))  # (h, 2R+1)
        if self.adaptive:
            self.centre_weight = nn.Parameter(torch.zeros(heads, self.head_dim))     # u_h
            self.centre_bias = nn.Parameter(torch.zeros(heads))                      # u_h0
            self.width_weight = nn.Parameter(torch.zeros(heads, self.head_dim))      # v_h
            self.width_bias = nn.Parameter(torch.zeros(heads))                       # v_h0
        if self.learn_gamma:
            if gamma_form == "tanh":
                logit = math.atanh(self.gamma0)
            else:
                logit = math.log(self.gamma0 / (1.0 - self.gamma0))
            self.gamma_logit = nn.Parameter(torch.full((heads,), logit))             # ρ_h

    def relative_bias(self, length: int, device=None) -> Tensor:
        """b_h[clip(j - i, -R, R)]. Shapes: -> (h, T, T), row i = query frame, column j = key."""
        pos = torch.arange(length, device=device)
        offset = (pos[None, :] - pos[:, None]).clamp(-self.rel_pos_max, self.rel_pos_max)  # (T, T)
        return self.rel_bias[:, offset + self.rel_pos_max]                          # (h, T, T)

    def gamma(self) -> Tensor:
        """γ_h, learnable tanh(ρ_h) or sigmoid(ρ_h), or the fixed γ_0. Shapes: -> (h,)."""
        if not self.use_window:
            return torch.zeros(self.heads)
        if self.learn_gamma:
            if self.gamma_form == "tanh":
                return torch.tanh(self.gamma_logit)
            return torch.sigmoid(self.gamma_logit)
        return torch.full((self.heads,), self.gamma0)

    @staticmethod
    def positions(mask: Tensor | None, batch: int, length: int, dtype, device) -> Tensor:
        """τ_j = j / max(n - 1, 1) with n the number of valid frames. Shapes: -> (B, T)."""
        if mask is None:
            count = torch.full((batch,), float(length), dtype=dtype, device=device)
        else:
            count = mask.to(dtype).sum(dim=-1)                                      # (B,)
        pos = torch.arange(length, dtype=dtype, device=device)
        return pos[None, :] / (count[:, None] - 1.0).clamp(min=1.0)                 # (B, T)

    def window(self, q: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Window centre c, width σ (per head and query frame) and key positions τ.

        Shapes: q (B, h, T, dh); mask (B, T) or None -> c (B, h, T), σ (B, h, T), τ (B, T).
        """
        batch, heads, length, _ = q.shape
        tau = self.positions(mask, batch, length, q.dtype, q.device)                # (B, T)
        if self.adaptive:
            shift = torch.einsum("bhtd,hd->bht", q, self.centre_weight) \
                + self.centre_bias[None, :, None]                                   # (B, h, T)
            centre = (tau[:, None, :] + self.max_shift * torch.tanh(shift)).clamp(0.0, 1.0)
            log_scale = torch.einsum("bhtd,hd->bht", q, self.width_weight) \
                + self.width_bias[None, :, None]                                    # (B, h, T)
            width = (self.sigma0 * torch.exp(log_scale)).clamp(self.sigma_min, self.sigma_max)
        else:
            centre = tau[:, None, :].expand(batch, heads, length)                   # (B, h, T)
            width = torch.full_like(centre, self.sigma0)
        return centre, width, tau

    def attention_probs(self, q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
        """A_h = (1 - γ_h) softmax(L_h) + γ_h softmax(L_h + G_h), padded keys excluded.

        Under autograd the weights are recomputed in backward instead of kept: the window and
        the two softmaxes leave about five (B, h, T, T) tensors per layer to autograd (about
        0.3 GB for kdc-net's two branches on a 128-video TVR batch), and recomputing them costs a small
        fraction of the step. Nothing in here draws random numbers, so the recomputation and
        the gradients are bit-identical to keeping them (tests/test_dta.py).

        Shapes: q, k (B, h, T, dh); mask (B, T) or None -> (B, h, T, T).
        """
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
            return checkpoint(self._attention_probs, q, k, mask, use_reentrant=False,
                              preserve_rng_state=False)  # pyright: ignore[reportReturnType]
        return self._attention_probs(q, k, mask)

    def _attention_probs(self, q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
        length = q.shape[2]
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)   # (B, h, T, T)
        if mask is not None:
            additive = (1.0 - mask.to(scores.dtype)) * ATTENTION_MASK_VALUE           # (B, T) §2 mask
            scores = scores + additive[:, None, None, :]
        if self.use_rel_pos:
            scores = scores + self.relative_bias(length, q.device)[None]            # (B, h, T, T)
        low = torch.finfo(scores.dtype).min
        padded = None if mask is None else (mask == 0)[:, None, None, :]            # (B, 1, 1, T)

        def excluded(logits: Tensor) -> Tensor:
            return logits if padded is None else logits.masked_fill(padded, low)

        base = excluded(scores).softmax(dim=-1)                                     # (B, h, T, T)
        if not self.use_window:
            return base
        centre, width, tau = self.window(q, mask)                                   # (B, h, T) x2
        log_window = -(tau[:, None, None, :] - centre[..., None]).square() \
            / (2.0 * width[..., None].square())                                     # (B, h, T, T) G
        windowed = excluded(scores + log_window).softmax(dim=-1)                    # (B, h, T, T)
        gamma = self.gamma().to(device=q.device, dtype=q.dtype)[None, :, None, None]  # (1, h, 1, 1)
        return (1.0 - gamma) * base + gamma * windowed
