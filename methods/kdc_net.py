"""kdc-net: RECONSTRUCTION of KDC-Net from the abstract of arXiv 2603.23902; not the authors'
method or code (card: methods/cards/kdc-net.md; spec: docs/methods.md §9.3).

The paper body is not accessible. Everything here is prvr-bench's design, built from the three
component names in the abstract on top of DL-DKD++ (``methods.dl_dkd``, docs/methods.md §6):

* HSA (``methods.layers.hsa``, §9.3.3): the query vector of a branch becomes
  q = q̄ + g ⊙ u (g a learned gate, 0 at the start), with u the attention-weighted multi-scale
  phrase feature of the encoded tokens and q̄ the branch's pooled sentence feature;
* DTA (``methods.layers.dta``, §9.3.4): the frame encoder's self-attention sublayer gets a
  relative position bias and an adaptive Gaussian window mixed in with weight γ = tanh(ρ),
  0 at the start;
* KRD (``methods.losses.krd``, §9.3.5): the inheritance branch's frame-KD target becomes
  λ·P^ref + (1 − λ)·P^raw, P^ref a softmax over the δ-segment of the smoothed teacher curve;
  λ rises from 0 on the schedule clock and the window is a fraction of each video's length.

Identity at initialisation (issue 13): with the defaults each module starts as a no-op, so an
untrained ``kdc-net`` scores exactly as ``dl-dkd++`` with the same shared weights, and its first
KD target is DL-DKD++'s; the gates (HSA's g, DTA's ρ) train in their own optimiser group at
``gate_lr_multiplier`` times the lr. The first reconstruction's forms stay reachable by switches
(``kdc-net.legacy`` sets all of them). Each module has an ``enabled`` switch; a module switched
off is not built, so parameters are initialised from the same random draws as ``dl-dkd++``, and
with all three off this class computes exactly what DL-DKD++ computes (``kdc-net.base``,
tested). Every run is tagged ``reconstruction=true``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

import torch
from torch import Tensor, nn

from benchmark.interface import FeatureDims, Progress
from benchmark.registry import register_method, register_variant
from benchmark.schedules import Schedule
from methods.dl_dkd import DL_DKD_PP_CONFIG, DLDKD, DLDKDBranch, DLDKDConfig
from methods.errors import MethodConfigError
from methods.layers.dta import DynamicTemporalAttention
from methods.layers.hsa import HSA
from methods.losses.krd import refine_target, window_sizes

RECONSTRUCTION_NOTE = ("reconstruction from the abstract of arXiv 2603.23902; "
                       "not the authors' method or code")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise MethodConfigError(message)


@dataclass(frozen=True, kw_only=True)
class HSAConfig:
    """HSA knobs (docs/methods.md §9.3.6). All values are ours: the paper's are unknown."""

    enabled: bool = True
    kernels: tuple[int, ...] = (1, 2, 3)                      # word (1) and phrase (2, 3) scales
    scale_agg: Literal["attention", "mean"] = "attention"     # a = softmax_k(w_sᵀ p^(k)) or 1/|K|
    # q = q̄ + g⊙u, g init 0 (identity at init) | z⊙u + (1−z)⊙q̄ (first reconstruction) | (q̄+u)/2 | u
    fusion: Literal["residual", "gate", "mean", "phrase"] = "residual"
    gate_bias: float = 0.0            # b_z at init, fusion="gate" only (−4: z ≈ 0.018, nearly closed)
    branches: Literal["both", "inherit"] = "both"

    def __post_init__(self) -> None:
        _check(len(self.kernels) > 0 and all(k >= 1 for k in self.kernels)
               and len(set(self.kernels)) == len(self.kernels),
               f"hsa.kernels must be distinct positive kernel sizes, got {self.kernels!r}")


@dataclass(frozen=True, kw_only=True)
class DTAConfig:
    """DTA knobs (docs/methods.md §9.3.6). All values are ours: the paper's are unknown."""

    enabled: bool = True
    rel_pos: bool = True              # relative position bias b_h[clip(j − i, −R, R)]
    rel_pos_max: int = 32             # R, in frames
    window: bool = True               # Gaussian window path (false ⇒ γ ≡ 0)
    adaptive: bool = True             # centre/width predicted from the frame's attention query
    sigma0: float = 0.1               # σ_0, initial width as a fraction of the video length
    gamma0: float = 0.0               # γ_0, initial mixing weight (0: DTA starts as §2 attention)
    gamma_form: Literal["tanh", "sigmoid"] = "tanh"   # γ = tanh(ρ), ρ0 = atanh γ_0 | sigmoid(ρ), logit γ_0
    learn_gamma: bool = True          # false: γ fixed at γ_0 (then 0 and 1 are allowed)
    max_shift: float = 0.25           # s_max, largest centre offset (fraction of the video)
    sigma_min: float = 0.01
    sigma_max: float = 1.0
    branches: Literal["both", "inherit"] = "both"

    def __post_init__(self) -> None:
        _check(self.rel_pos_max >= 0, f"dta.rel_pos_max must be >= 0, got {self.rel_pos_max}")
        _check(self.sigma0 > 0, f"dta.sigma0 must be > 0, got {self.sigma0}")
        _check(0 < self.sigma_min <= self.sigma_max,
               f"dta.sigma_min/sigma_max must satisfy 0 < min <= max, got {self.sigma_min}, {self.sigma_max}")
        _check(self.max_shift >= 0, f"dta.max_shift must be >= 0, got {self.max_shift}")
        _check(0.0 <= self.gamma0 <= 1.0, f"dta.gamma0 must lie in [0, 1], got {self.gamma0}")
        _check(self.gamma_form in ("tanh", "sigmoid"),
               f"dta.gamma_form must be 'tanh' or 'sigmoid', got {self.gamma_form!r}")
        learned = self.learn_gamma and self.window
        _check(not learned or self.gamma_form != "sigmoid" or 0.0 < self.gamma0 < 1.0,
               f"dta.gamma0 must lie in (0, 1) when dta.learn_gamma is true and dta.gamma_form "
               f"is 'sigmoid', got {self.gamma0}")
        _check(not learned or self.gamma_form != "tanh" or self.gamma0 < 1.0,
               f"dta.gamma0 must lie in [0, 1) when dta.learn_gamma is true and dta.gamma_form "
               f"is 'tanh', got {self.gamma0}")


@dataclass(frozen=True, kw_only=True)
class KRDConfig:
    """KRD knobs (docs/methods.md §9.3.6). ``lam`` is λ (``lambda`` is a Python keyword)."""

    enabled: bool = True
    window: int = 1                   # w_min, odd smallest window in frames (the window if fraction 0)
    window_fraction: float = 0.05     # f: w = max(w_min, 2⌊f·n/2⌋ + 1) for n valid frames
    delta: float = 0.2                # δ, selection margin below the normalised maximum
    lam: float = 0.5                  # λ, weight of the refined target against the raw one, ramped:
    # λ(p) = lam · lam_ramp(p), clipped to [0, 1]; rising-linear = min(e/10, 1), 0 at the start
    lam_ramp: Schedule = field(default_factory=lambda: Schedule(
        kind="rising-linear", slope=-0.1, intercept=1.0, linear_floor=0.0))
    smooth: Literal["mean", "max"] = "mean"
    refined: Literal["softmax", "uniform"] = "softmax"

    def __post_init__(self) -> None:
        _check(self.window >= 1 and self.window % 2 == 1,
               f"krd.window must be a positive odd integer (centred window), got {self.window}")
        _check(0.0 <= self.window_fraction <= 1.0,
               f"krd.window_fraction must lie in [0, 1], got {self.window_fraction}")
        _check(0.0 <= self.delta <= 1.0, f"krd.delta must lie in [0, 1], got {self.delta}")
        _check(0.0 <= self.lam <= 1.0, f"krd.lam (λ) must lie in [0, 1], got {self.lam}")

    def lam_at(self, progress: Progress) -> float:
        """λ at ``progress``: lam · lam_ramp(progress) in [0, 1]. The Schedule follows the run's
        schedule clock, like every other schedule called with a Progress."""
        return min(max(self.lam * self.lam_ramp(progress), 0.0), 1.0)


@dataclass(frozen=True, kw_only=True)
class KDCNetConfig(DLDKDConfig):
    """DL-DKD++'s knobs plus the three module sections. The class defaults of the inherited
    fields are DLDKDConfig's (the ICCV code's); the registered ``kdc-net`` default is
    :data:`KDC_NET_CONFIG`, which takes every inherited value from ``dl-dkd++``."""

    hsa: HSAConfig = field(default_factory=HSAConfig)
    dta: DTAConfig = field(default_factory=DTAConfig)
    krd: KRDConfig = field(default_factory=KRDConfig)
    # lr multiplier of the gate group (HSA's g, DTA's ρ; benchmark/training/optim.py): BertAdam
    # moves a parameter by about lr per step, so a gate starting at 0 needs a larger lr to open
    # within a short run. Ours, untuned; 1 trains the gates like every other parameter.
    gate_lr_multiplier: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.gate_lr_multiplier > 0,
               f"gate_lr_multiplier must be > 0, got {self.gate_lr_multiplier}")


def _uses(branches: Literal["both", "inherit"], name: str) -> bool:
    return branches == "both" or name == "inherit"


class KDCNet(DLDKD):
    """DL-DKD++ student with HSA (query side), DTA (frame side) and KRD (KD target).

    Module layout: DLDKD's, plus ``branches.<b>.hsa`` (HSA) where HSA is on, and
    ``branches.<b>.video.encoder`` a DynamicTemporalAttention where DTA is on.
    """

    config_cls = KDCNetConfig
    config: KDCNetConfig

    def __init__(self, config: KDCNetConfig, dims: FeatureDims) -> None:
        super().__init__(config, dims)
        if config.hsa.enabled and config.hsa.fusion == "phrase":
            # q = u never uses the pooled sentence feature q̄, so its pooling vector gets no
            # gradient; freeze it (it still counts in the parameter total)
            for name in self.branches:
                branch = self._branch(name)
                if hasattr(branch, "hsa"):
                    branch.query.pool.requires_grad_(False)
        if config.hsa.enabled and config.hsa.fusion == "gate" and config.hsa.gate_bias != 0.0:
            # after reference_init_ (which zeroes Linear biases); a constant, so no random draw
            with torch.no_grad():
                for name in self.branches:
                    hsa = getattr(self._branch(name), "hsa", None)
                    if hsa is not None and hsa.gate is not None:
                        hsa.gate.bias.fill_(config.hsa.gate_bias)

    @property
    def gate_lr_multiplier(self) -> float:
        """Read by benchmark.training.optim.build_optimizer (GATE_LR_ATTRIBUTE)."""
        return self.config.gate_lr_multiplier

    # -- factories ------------------------------------------------------------------------
    def _build_branch(self, name: str) -> DLDKDBranch:
        branch = super()._build_branch(name)
        h = self.config.hsa
        if h.enabled and _uses(h.branches, name):
            # built after the base modules of the branch: with HSA off nothing is drawn
            branch.hsa = HSA(self.config.hidden_size, h.kernels, h.scale_agg, h.fusion)
        return branch

    def _build_video_attention(self, name: str) -> nn.Module | None:
        c, t = self.config, self.config.dta
        if not (t.enabled and _uses(t.branches, name)):
            return None
        return DynamicTemporalAttention(
            c.hidden_size, c.num_heads, c.dropout, rel_pos=t.rel_pos, window=t.window,
            adaptive=t.adaptive, learn_gamma=t.learn_gamma, sigma0=t.sigma0, gamma0=t.gamma0,
            gamma_form=t.gamma_form, max_shift=t.max_shift, sigma_min=t.sigma_min, sigma_max=t.sigma_max,
            rel_pos_max=t.rel_pos_max)

    # -- forward pieces -------------------------------------------------------------------
    def _query_vector(self, name: str, tokens: Tensor, mask: Tensor) -> Tensor:
        """q^b = HSA(H^b, μ, q̄^b) where HSA is on, else DL-DKD's q̄^b (§9.3.3).

        Shapes: tokens (Nq, L, d_q), mask (Nq, L) -> (Nq, D).
        """
        branch = self._branch(name)
        hsa = getattr(branch, "hsa", None)
        if hsa is None:
            return super()._query_vector(name, tokens, mask)
        projection = (self._branch("inherit").query.projection
                      if name == "explore" and self._shares_query_projection else None)
        states = branch.query.token_states(tokens, mask, projection=projection)   # (Nq, L, D)
        sentence = branch.query.pool(states, mask)                                 # (Nq, D) q̄
        return hsa(states, mask, sentence)                                         # (Nq, D) q

    def _kd_target(self, student: Tensor, teacher: Tensor, mask: Tensor,
                   progress: Progress) -> Tensor | None:
        """KRD target λ(p)·P^ref + (1 − λ(p))·P^raw of the teacher frame cosines (§9.3.5), or
        None (DL-DKD's softmax(teacher/τ)) with KRD off. λ(p) = 0 gives P^raw exactly.

        Shapes: student, teacher, mask (Nq, T) -> (Nq, T).
        """
        k = self.config.krd
        if not k.enabled:
            return None
        window = (window_sizes(mask, k.window, k.window_fraction) if k.window_fraction > 0
                  else k.window)                                         # (Nq,) or one width
        return refine_target(teacher, mask, window=window, delta=k.delta, lam=k.lam_at(progress),
                             temperature=self.config.kd_temperature, refined=k.refined,
                             smooth=k.smooth)

    def compute_loss(self, batch, progress: Progress) -> dict[str, Tensor]:
        """DL-DKD++'s loss (with this class's pieces), plus the KRD λ in use as ``krd_lam`` when
        KRD is on (with it off the output is DL-DKD++'s, key for key)."""
        out = super().compute_loss(batch, progress)
        if self.config.krd.enabled:
            lam = self.config.krd.lam_at(progress)
            out["krd_lam"] = torch.tensor(float(lam), device=out["loss"].device)
        return out


# -- registrations ----------------------------------------------------------------------------

#: dl-dkd++'s registered defaults for every inherited field, with the three modules on.
KDC_NET_CONFIG = KDCNetConfig(**{f.name: getattr(DL_DKD_PP_CONFIG, f.name)
                                 for f in fields(DLDKDConfig)})

register_method("kdc-net", KDCNet, KDC_NET_CONFIG,
                "KDC-Net RECONSTRUCTION (abstract of arXiv 2603.23902 only): DL-DKD++ + HSA + DTA + KRD",
                reconstruction=True)

_OFF = {"hsa": {"hsa.enabled": False}, "dta": {"dta.enabled": False}, "krd": {"krd.enabled": False}}

# module ablations (docs/methods.md §9.3.7)
register_variant("kdc-net.no-hsa", "w/o HSA (query vector = pooled sentence feature)", _OFF["hsa"])
register_variant("kdc-net.no-dta", "w/o DTA (plain §2 self-attention over frames)", _OFF["dta"])
register_variant("kdc-net.no-krd", "w/o KRD (raw CLIP frame KD, as DL-DKD++)", _OFF["krd"])
register_variant("kdc-net.base", "all three modules off: must equal dl-dkd++ (parity)",
                 {**_OFF["hsa"], **_OFF["dta"], **_OFF["krd"]})
for _only in ("hsa", "dta", "krd"):
    register_variant(f"kdc-net.{_only}-only", f"{_only.upper()} alone (the other two modules off)",
                     {k: v for m, d in _OFF.items() if m != _only for k, v in d.items()})
register_variant("kdc-net.krd-no-window", "KRD without temporal smoothing (w = 1)",
                 {"krd.window": 1, "krd.window_fraction": 0.0})
register_variant("kdc-net.krd-no-select", "KRD without segment selection (δ = 1, smoothing only)",
                 {"krd.delta": 1.0})
register_variant("kdc-net.krd-refined-only", "refined target only, no raw mixing (λ = 1)", {"krd.lam": 1.0})
register_variant("kdc-net.krd-uniform", "hard segment target: uniform over the kept frames",
                 {"krd.refined": "uniform"})
register_variant("kdc-net.krd-max-smooth", "KRD smoothing by a moving max instead of a mean",
                 {"krd.smooth": "max"})
register_variant("kdc-net.no-kd", "no frame-level KD (the teacher still feeds the soft NCE)",
                 {"kd_scale": 0.0})
register_variant("kdc-net.const-kd", "KD weight constant 0.1 (w/o dynamic distillation)",
                 {"kd_decay.kind": "constant"})
register_variant("kdc-net.dta-no-relpos", "DTA w/o relative position bias", {"dta.rel_pos": False})
register_variant("kdc-net.dta-no-window", "DTA w/o Gaussian window (relative bias only)",
                 {"dta.window": False})
register_variant("kdc-net.dta-fixed-window", "DTA with a fixed window (c = τ_i, σ = σ_0)",
                 {"dta.adaptive": False})
register_variant("kdc-net.dta-fixed-gamma", "DTA with γ fixed at 0.5 (not learned)",
                 {"dta.learn_gamma": False, "dta.gamma0": 0.5})
register_variant("kdc-net.dta-inherit-only", "DTA in the inheritance branch only",
                 {"dta.branches": "inherit"})
register_variant("kdc-net.hsa-word-only", "HSA with the word scale only (K = (1,))", {"hsa.kernels": (1,)})
register_variant("kdc-net.hsa-mean-fusion", "HSA fused by a plain mean q = (q̄ + u)/2 (no gate)",
                 {"hsa.fusion": "mean"})
register_variant("kdc-net.hsa-phrase-fusion", "HSA output alone, q = u (no sentence feature)",
                 {"hsa.fusion": "phrase"})
register_variant("kdc-net.hsa-mean-scales", "HSA scales averaged instead of attended",
                 {"hsa.scale_agg": "mean"})
register_variant("kdc-net.hsa-inherit-only", "HSA in the inheritance branch only",
                 {"hsa.branches": "inherit"})

# the first reconstruction's forms (before issue 13), one at a time and all together
_LEGACY = {
    "hsa": {"hsa.fusion": "gate"},
    "dta": {"dta.gamma_form": "sigmoid", "dta.gamma0": 0.5},
    "krd": {"krd.window": 5, "krd.window_fraction": 0.0, "krd.lam_ramp.kind": "constant"},
}
register_variant("kdc-net.legacy", "first reconstruction: gated HSA, γ0 = 0.5, fixed 5-frame "
                 "KRD window, constant λ, gate lr ×1",
                 {**_LEGACY["hsa"], **_LEGACY["dta"], **_LEGACY["krd"], "gate_lr_multiplier": 1.0})
register_variant("kdc-net.hsa-gate-fusion", "HSA gated fusion q = z⊙u + (1−z)⊙q̄ (z ≈ 0.5 at init)",
                 _LEGACY["hsa"])
register_variant("kdc-net.hsa-closed-gate", "HSA gated fusion with b_z = −4 (z ≈ 0.018 at init)",
                 {"hsa.fusion": "gate", "hsa.gate_bias": -4.0})
register_variant("kdc-net.dta-sigmoid-gamma", "DTA γ = sigmoid(ρ) from γ0 = 0.5", _LEGACY["dta"])
register_variant("kdc-net.dta-small-gamma", "DTA γ = sigmoid(ρ) from γ0 = 0.02",
                 {"dta.gamma_form": "sigmoid", "dta.gamma0": 0.02})
register_variant("kdc-net.krd-fixed-window", "KRD with a fixed 5-frame window (no fraction)",
                 {"krd.window": 5, "krd.window_fraction": 0.0})
register_variant("kdc-net.krd-no-ramp", "KRD λ constant from the first step (no ramp)",
                 {"krd.lam_ramp.kind": "constant"})

# Fig.-3-style sensitivity grids (docs/methods.md §9.3.7), one knob at a time around the defaults
_GRIDS = {
    "krd-w": ("krd.window", (1, 3, 5, 7, 9), "KRD smallest window w_min"),
    "krd-wf": ("krd.window_fraction", (0.0, 0.025, 0.05, 0.1, 0.2), "KRD window fraction f"),
    "krd-delta": ("krd.delta", (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), "KRD selection margin δ"),
    "krd-lam": ("krd.lam", (0.0, 0.25, 0.5, 0.75, 1.0), "KRD mixing weight λ"),
    "dta-sigma": ("dta.sigma0", (0.02, 0.05, 0.1, 0.2, 0.4), "DTA initial window width σ0"),
    "dta-gamma": ("dta.gamma0", (0.0, 0.02, 0.25, 0.5, 0.75), "DTA initial mixing weight γ0"),
    "gate-lr": ("gate_lr_multiplier", (1.0, 3.0, 10.0, 30.0, 100.0), "gate lr multiplier"),
    "hsa-kernels": ("hsa.kernels", ((1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)), "HSA kernel set K"),
    "dta-relpos": ("dta.rel_pos_max", (8, 16, 32, 64), "DTA relative-bias distance R"),
}


def _grid_label(value) -> str:
    if isinstance(value, tuple):
        return "".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


for _prefix, (_key, _values, _what) in _GRIDS.items():
    for _value in _values:
        register_variant(f"kdc-net.{_prefix}{_grid_label(_value)}", f"sensitivity: {_what} = {_value}",
                         {_key: _value})
