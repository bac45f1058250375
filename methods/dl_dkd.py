"""DL-DKD (ICCV 2023 code) and DL-DKD++ (journal code): a dual-branch frame-level student
distilled from a CLIP teacher (cards: methods/cards/dl-dkd.md, methods/cards/dl-dkd++.md).

One class, :class:`DLDKD`, computes both; the two base registrations differ only in config
(docs/methods.md §5, §6, §8). Per branch b ∈ {inherit, explore} (the reference's B and A):

    F^b = Out_b(Enc^f_b(Pos^f_b(Lin^f_b(X^f)), mask))                      (B, T, D)
    q̄^b = Pool_b(Enc^q_b(Pos^q_b(Lin^q(W))))                              (Nq, D)
    S^b_iv = max_t cos(q̄^b_i, F^b_vt),  U^b_iv = max_t q̄^b_i·F^b_vt        (Nq, B), valid t only

    L = Σ_b [ L_trip(S^b) + w_nce · L_nce^b(U^b) ] + λ(e) · L_KD(inherit)

with L_nce^b = clip_nce (``label_style="hard"``, §3.3) or the soft-target NCE (§6.4) against
the teacher's U^T (inherit) or the branch's own U^E (explore); L_KD the frame KL on positive
pairs (§5.3); λ(e) = kd_scale·kd_decay(e) (+ kd_init for the increasing kinds). Inference and
validation score 0.7·S^inherit + 0.3·S^explore (``fusion_inherit``).

Module layout (creation order is stable; parameters are initialised once, after all modules
exist, with the reference ``re_init``):

    self.branches = ModuleDict, "inherit" first, then "explore" (only the enabled ones), each a
    DLDKDBranch with, in order, ``query`` (QueryEncoder: projection, position, encoder, pool),
    ``video`` (SequenceEncoder: projection, position, encoder) and ``output`` (Linear D→D).

Extension hooks for subclasses (KDC-Net): the factories ``_build_branch``,
``_build_query_encoder``, ``_build_video_encoder``, ``_build_video_attention``,
``_build_output_mapping``; the forward pieces ``_query_vector``, ``_frame_features``; the
targets ``_kd_target`` and ``_soft_targets``. With all of them left alone a subclass computes
exactly what this class computes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.data.batch import QueryBatch, TrainBatch, VideoBatch
from benchmark.interface import Encoding, FeatureDims, MethodConfig, Progress, PRVRMethod
from benchmark.registry import register_method, register_variant
from benchmark.schedules import Schedule, ScheduleKind, schedule_delta
from methods.errors import MethodConfigError
from methods.layers.encoders import QueryEncoder, SequenceEncoder
from methods.layers.init import reference_init_
from methods.layers.pooling import mask_logits
from methods.losses.distill import frame_kd_loss
from methods.losses.nce import clip_nce
from methods.losses.ranking import clip_triplet_loss
from methods.losses.soft_nce import soft_target_nce
from methods.teacher import (
    TeacherMissingError,
    positive_teacher_frame_cosines,
    require_teacher,
    teacher_video_scores,
)

BRANCHES = ("inherit", "explore")

# -- the reference's schedule switches, as Schedule values (docs/methods.md §5.3, §6.5) -----------

#: The reference KD decays by ``decay_way`` (docs/methods.md §5.3), with the script values.
REFERENCE_KD_DECAYS: dict[int, Schedule] = {
    0: Schedule(kind="constant"),
    1: Schedule(kind="exp"),
    2: Schedule(kind="linear"),
    3: Schedule(kind="sigmoid"),
    4: Schedule(kind="rising-exp"),
    5: Schedule(kind="rising-linear"),
    6: Schedule(kind="rising-sigmoid"),
    7: Schedule(kind="capped-exp-growth", start=0.001, base=1.05, cap=0.1),
    8: Schedule(kind="rising-capped", start=0.1, base=0.95, cap=0.1, floor=0.001),
}

#: Kinds to which the reference KD weight adds ``loss_init_weight`` (decay_way 4/5/6, §5.3):
#: the offset belongs to the KD weight, not to the curve.
KD_INIT_KINDS = frozenset({"rising-exp", "rising-linear", "rising-sigmoid"})

#: DL-DKD++ ``--alpha_decay`` / ``--belta_decay`` names -> Schedule kinds (§6.5).
SOFT_TARGET_KINDS: dict[str, ScheduleKind] = {"sigmoid": "sigmoid", "exp": "exp",
                                              "linear": "linear-anneal", "cosine": "cosine",
                                              "none": "constant"}
#: The type of the α/β schedule fields: the keys of SOFT_TARGET_KINDS, in table order, written
#: out for static checkers (tests/test_schedules.py checks that they agree).
SoftTargetKind = Literal["sigmoid", "exp", "linear", "cosine", "none"]


def soft_target_schedule(kind: str, start: float, floor: float, *,
                         sigmoid_k: float = 800.0, base: float = 0.95) -> Schedule:
    """The DL-DKD++ α/β schedule named ``kind`` (``--alpha_decay`` / ``--belta_decay``) from
    ``start`` (α0, β0) floored at ``floor`` (docs/methods.md §6.5); ``linear``/``cosine`` run
    over ``Progress.num_epochs``; ``none`` keeps ``start``."""
    try:
        mapped = SOFT_TARGET_KINDS[kind]
    except KeyError:
        raise MethodConfigError(f"unknown α/β schedule {kind!r}; expected one of "
                                f"{', '.join(SOFT_TARGET_KINDS)}") from None
    return Schedule(kind=mapped, start=start, floor=floor, sigmoid_k=sigmoid_k, base=base)


def reference_beta_floor(beta0: float) -> float:
    """β_min of DL-DKD++ ``train.py``: 0.5 when β0 ≥ 0.5, else 0 (docs/methods.md §6.5)."""
    return 0.5 if beta0 >= 0.5 else 0.0


def _exp_decay() -> Schedule:
    return REFERENCE_KD_DECAYS[1]      # ref: do_*.sh decay_way 1, exponential_k 0.95


@dataclass(frozen=True, kw_only=True)
class DLDKDConfig(MethodConfig):
    """DL-DKD / DL-DKD++ knobs. Defaults are the ICCV code's (``dl-dkd``); ``dl-dkd++``
    registers its own defaults (see the bottom of this module)."""

    # architecture (docs/methods.md §5.2, §6.2)
    hidden_size: int = 384                   # ref: A/B hidden 384
    num_heads: int = 4                       # ref: n_heads 4
    dropout: float = 0.1                     # ref: drop 0.1 (attention and output dropout)
    input_dropout: float = 0.1               # ref: input_drop 0.1 (input projection, positions)
    double_branch: bool = True               # ref: --double_branch true (both scripts)
    single_branch: Literal["inherit", "explore"] = "inherit"  # kept branch when double_branch=false
    separate_query_projection: bool = False  # ICCV code shares inherit's query projection (§5.6.2)
    # ranking losses (§3.1, §3.3)
    margin: float = 0.2                      # ref: config default; do_tvr.sh sets 0.1
    hard_pool_size: int = 20                 # ref: hard_pool_size 20
    hard_negative_start_epoch: int = 0       # ref: hard negatives from epoch 0 (§5.3); -1 = never
    triplet_v2t_hard: Literal["top1", "pool"] = "top1"   # ref: hardest single negative (§3.1)
    nce_weight: float = 0.04                 # ref: 0.04 per branch (inher_nce_weight)
    explore_nce_weight: float | None = None  # None: same as nce_weight (ref: explore_nce_weight 0.04)
    label_style: Literal["hard", "soft"] = "hard"   # ICCV: clip_nce; ++: soft-target NCE (§6.3)
    # KD (§5.3)
    kd_temperature: float = 0.2              # τ of the frame KL (ref: 0.2)
    kd_scale: float = 0.1                    # ref: loss_scale_weight / kl_intra_weight 0.1
    kd_decay: Schedule = field(default_factory=_exp_decay)
    kd_init: float = 0.1                     # ref: loss_init_weight, added only for rising-* kinds
    kd_reduction: Literal["sum", "mean"] = "sum"   # ref sums over queries (§5.6.3); mean = fix
    # soft targets (§6.4, §6.5)
    alpha0: float = 0.8                      # ref: --alpha 0.8
    alpha_schedule: SoftTargetKind = "sigmoid"   # ref: --alpha_decay sigmoid
    alpha_floor: float = 0.0                 # ref: min_alpha 0 on both branches of its if (§6.8.9)
    beta0: float = 0.8                       # ref: --belta 0.8
    beta_schedule: SoftTargetKind = "sigmoid"    # ref: --belta_decay sigmoid
    beta_floor: float | None = None          # None: reference rule 0.5 if β0 ≥ 0.5 else 0
    soft_sigmoid_k: float = 800.0            # ref: selfDistil_sigmoid_k 800
    soft_exp_base: float = 0.95              # ref: α/β exp share exponential_k 0.95 (§6.8.9)
    soft_partition: Literal["position", "random"] = "position"   # ref: batch position (§6.8.3)
    soft_v2t: Literal["log_weighted_sum", "cross_entropy"] = "log_weighted_sum"   # ref (§6.8.4)
    teacher_soft_targets: Literal["raw_dot", "cosine"] = "raw_dot"   # ref: raw CLIP dots (§6.8.5)
    explore_target_detach: bool = False      # ref: self-targets not detached (§6.8.2)
    resample_to_teacher_length: bool = False  # ++: students resampled to teacher length (§1.3.4)
    # teacher sequence longer than the student's (after both are sampled to ≤ max_frames):
    # "first_n" keeps its first n frames (ICCV collate cuts/pads to the student length, §1.3.5);
    # "bin" bins it down to n with the §1.3 step 1 rule (prvr-bench's fix for the journal
    # code, which has no rule and misaligns, §6.8.6). Data layer: requirement "teacher_first_n".
    teacher_alignment: Literal["first_n", "bin"] = "first_n"
    # inference (§5.4, §6.6)
    fusion_inherit: float = 0.7              # ref: hard-coded 0.7·S_inh + 0.3·S_exp in eval
    score_block_elements: int = 1 << 24      # memory bound of one (q, b, T) block in score()

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise MethodConfigError(message)
        check(self.hidden_size > 0 and self.hidden_size % self.num_heads == 0,
              f"hidden_size {self.hidden_size} must be a positive multiple of num_heads {self.num_heads}")
        for name in ("dropout", "input_dropout"):
            check(0.0 <= getattr(self, name) < 1.0, f"{name} must be in [0, 1), got {getattr(self, name)}")
        check(self.kd_temperature > 0, f"kd_temperature must be > 0, got {self.kd_temperature}")
        check(0.0 <= self.fusion_inherit <= 1.0,
              f"fusion_inherit must be in [0, 1], got {self.fusion_inherit}")
        for name in ("alpha0", "beta0", "alpha_floor"):
            check(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1], got {getattr(self, name)}")
        check(self.beta_floor is None or 0.0 <= self.beta_floor <= 1.0,
              f"beta_floor must be in [0, 1] or None, got {self.beta_floor}")
        check(self.hard_pool_size >= 1, f"hard_pool_size must be >= 1, got {self.hard_pool_size}")
        check(self.hard_negative_start_epoch >= -1, "hard_negative_start_epoch must be >= 0, or -1 "
              f"for never (both reference codes), got {self.hard_negative_start_epoch}")
        check(self.score_block_elements >= 1, "score_block_elements must be >= 1")

    # -- derived ----------------------------------------------------------------------------
    @property
    def enabled_branches(self) -> tuple[str, ...]:
        return BRANCHES if self.double_branch else (self.single_branch,)

    @property
    def kd_active(self) -> bool:
        """Whether the KD weight can be nonzero (and the inheritance branch exists)."""
        if "inherit" not in self.enabled_branches:
            return False
        init = self.kd_init if self.kd_decay.kind in KD_INIT_KINDS else 0.0
        return self.kd_scale != 0.0 or init != 0.0

    def kd_weight(self, progress: Progress) -> float:
        """λ(e) = kd_scale·kd_decay(e) + kd_init·[kind ∈ rising-*] (docs/methods.md §5.3)."""
        init = self.kd_init if self.kd_decay.kind in KD_INIT_KINDS else 0.0
        return self.kd_scale * self.kd_decay(progress) + init

    def alpha(self, progress: Progress) -> float:
        return soft_target_schedule(self.alpha_schedule, self.alpha0, self.alpha_floor,
                                    sigmoid_k=self.soft_sigmoid_k, base=self.soft_exp_base)(progress)

    def beta(self, progress: Progress) -> float:
        floor = reference_beta_floor(self.beta0) if self.beta_floor is None else self.beta_floor
        return soft_target_schedule(self.beta_schedule, self.beta0, floor,
                                    sigmoid_k=self.soft_sigmoid_k, base=self.soft_exp_base)(progress)


@dataclass(frozen=True)
class DLDKDQueries(Encoding):
    """Shapes: inherit, explore (Nq, D) L2-normalised query vectors, None for a disabled branch."""

    inherit: Tensor | None
    explore: Tensor | None


@dataclass(frozen=True)
class DLDKDVideos(Encoding):
    """Shapes: inherit, explore (B, T, D) L2-normalised frame features (None when disabled);
    mask (B, T) float frame mask."""

    inherit: Tensor | None
    explore: Tensor | None
    mask: Tensor


class DLDKDBranch(nn.Module):
    """One student branch: ``query`` encoder, frame ``video`` encoder and ``output`` mapping."""

    def __init__(self, query: QueryEncoder, video: nn.Module, output: nn.Module) -> None:
        super().__init__()
        self.query = query
        self.video = video
        self.output = output


def max_over_frames(scores: Tensor, mask: Tensor) -> Tensor:
    """max_t of per-frame scores with padded frames at −1e10 (reference mask_logits + max).

    Shapes: scores (Nq, B, T); mask (B, T) -> (Nq, B).
    """
    return mask_logits(scores, mask[None]).max(dim=2).values


class DLDKD(PRVRMethod):
    """Dual-branch DL-DKD / DL-DKD++ student (docs/methods.md §5, §6)."""

    config_cls = DLDKDConfig
    batch_sort = "captions"          # ref: collate sorts videos by caption count (§1.4, §6.4.1)
    config: DLDKDConfig

    def __init__(self, config: DLDKDConfig, dims: FeatureDims) -> None:
        super().__init__(config, dims)
        self.branches = nn.ModuleDict()
        for name in config.enabled_branches:        # "inherit" before "explore"
            self.branches[name] = self._build_branch(name)
        reference_init_(self)
        if self._shares_query_projection:
            # ref: A_query_input_proj is allocated and never used (§5.6.2); it counts in the
            # parameter total but receives no gradient, so it is frozen at its initial values.
            self._branch("explore").query.projection.requires_grad_(False)

    # -- factories (override in subclasses) -------------------------------------------------
    def _build_branch(self, name: str) -> DLDKDBranch:
        return DLDKDBranch(self._build_query_encoder(name), self._build_video_encoder(name),
                           self._build_output_mapping(name))

    def _build_query_encoder(self, name: str) -> QueryEncoder:
        c, d = self.config, self.dims
        # pack_valid: project valid tokens only; valid outputs equal the reference's (encoders.py)
        return QueryEncoder(d.query, c.hidden_size, c.num_heads, max_len=d.max_query_tokens,
                            input_dropout=c.input_dropout, dropout=c.dropout, pack_valid=True)

    def _build_video_attention(self, name: str) -> nn.Module | None:
        """The frame encoder's attention sublayer; None = the reference SelfAttentionLayer."""
        return None

    def _build_video_encoder(self, name: str) -> nn.Module:
        c, d = self.config, self.dims
        return SequenceEncoder(d.video, c.hidden_size, c.num_heads, max_len=d.max_frames,
                               input_dropout=c.input_dropout, dropout=c.dropout,
                               attention=self._build_video_attention(name), pack_valid=True)

    def _build_output_mapping(self, name: str) -> nn.Module:
        return nn.Linear(self.config.hidden_size, self.config.hidden_size)   # ref: *_mapping_linear

    # -- forward pieces (override in subclasses) --------------------------------------------
    def _branch(self, name: str) -> DLDKDBranch:
        """``self.branches[name]``, typed (the ModuleDict holds what ``_build_branch`` built)."""
        branch = self.branches[name]
        if not isinstance(branch, DLDKDBranch):
            raise TypeError(f"branch {name!r} is a {type(branch).__name__}, not a DLDKDBranch")
        return branch

    @property
    def _shares_query_projection(self) -> bool:
        return not self.config.separate_query_projection and len(self.branches) == 2

    def _query_vector(self, name: str, tokens: Tensor, mask: Tensor) -> Tensor:
        """q̄^b, unnormalised. Shapes: tokens (Nq, L, d_q), mask (Nq, L) -> (Nq, D)."""
        projection = (self._branch("inherit").query.projection
                      if name == "explore" and self._shares_query_projection else None)
        return self._branch(name).query(tokens, mask, projection=projection)

    def _frame_features(self, name: str, frames: Tensor, mask: Tensor,
                        rows: Tensor | None = None) -> Tensor:
        """F^b, unnormalised; ``rows`` = ``frames[mask.bool()]``, gathered once for both branches
        (``valid_rows``). Shapes: frames (B, T, d_v), mask (B, T) -> (B, T, D)."""
        branch = self._branch(name)
        return branch.output(branch.video(frames, mask, rows=rows))

    def valid_rows(self, frames: Tensor, mask: Tensor) -> Tensor | None:
        """The valid frames, gathered once when both branches would each gather them (one
        (n_valid, d_v) copy less: 154 MB on a 128-video TVR batch); None with one branch."""
        return frames[mask.bool()] if len(self.branches) > 1 else None

    def _kd_target(self, student: Tensor, teacher: Tensor, mask: Tensor,
                   progress: Progress) -> Tensor | None:
        """Target distribution of the KD term, or None for softmax(teacher/τ) (DL-DKD);
        ``progress`` lets a subclass schedule its target (kdc-net's KRD λ).

        Shapes: student, teacher, mask (Nq, T) positive-pair frame scores and mask.
        """
        return None

    def _soft_targets(self, name: str, U: Tensor, teacher_U: Tensor | None) -> Tensor:
        """T of the soft-target NCE: teacher scores for inherit, own scores for explore.

        Shapes: U, teacher_U (Nq, B) -> (Nq, B).
        """
        if name == "inherit":
            if teacher_U is None:
                raise TeacherMissingError(f"method {type(self).__name__!r}: the inheritance branch's "
                                          "soft targets are the teacher's scores, and none were given")
            return teacher_U
        return U.detach() if self.config.explore_target_detach else U   # ref: no detach (§6.8.2)

    # -- plug-in contract -------------------------------------------------------------------
    @classmethod
    def requirements(cls, config: DLDKDConfig) -> frozenset[str]:
        needs: set[str] = set()
        uses_teacher = "inherit" in config.enabled_branches and (
            config.kd_active or config.label_style == "soft")
        if uses_teacher or config.resample_to_teacher_length:
            needs.add("teacher")
            if config.teacher_alignment == "first_n":
                needs.add("teacher_first_n")
        if config.resample_to_teacher_length:
            needs.add("teacher_length")
        return frozenset(needs)

    def encode_queries(self, queries: QueryBatch) -> DLDKDQueries:
        vectors = {name: F.normalize(self._query_vector(name, queries.tokens, queries.mask), dim=-1)
                   for name in self.branches}                            # each (Nq, D)
        return DLDKDQueries(inherit=vectors.get("inherit"), explore=vectors.get("explore"))

    def encode_videos(self, videos: VideoBatch) -> DLDKDVideos:
        packed = self.valid_rows(videos.frames, videos.frame_mask)
        feats = {name: F.normalize(self._frame_features(name, videos.frames, videos.frame_mask, packed),
                                   dim=-1) for name in self.branches}    # each (B, T, D)
        return DLDKDVideos(inherit=feats.get("inherit"), explore=feats.get("explore"),
                           mask=videos.frame_mask)

    def _max_cosine(self, q: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """S_iv = max_t q_i·v_vt over valid frames for unit vectors, in video blocks of at most
        ``score_block_elements`` (q, b, T) entries.

        Shapes: q (Nq, D); v (Nv, T, D); mask (Nv, T) -> (Nq, Nv).
        """
        per_video = max(q.shape[0] * v.shape[1], 1)
        block = max(self.config.score_block_elements // per_video, 1)
        parts = [max_over_frames(torch.einsum("qd,btd->qbt", q, v[s:s + block]), mask[s:s + block])
                 for s in range(0, v.shape[0], block)]                   # each (Nq, b)
        return torch.cat(parts, dim=1)                                   # (Nq, Nv)

    def score(self, q: DLDKDQueries, v: DLDKDVideos) -> dict[str, Tensor]:
        out = {name: self._max_cosine(getattr(q, name), getattr(v, name), v.mask)
               for name in self.branches}                                # each (Nq, Nv)
        if len(out) == 2:
            w = self.config.fusion_inherit
            fused = w * out["inherit"] + (1.0 - w) * out["explore"]      # ref: 0.7/0.3 (§5.4)
        else:
            (fused,) = out.values()
        return {"score": fused, **out}

    def compute_loss(self, batch: TrainBatch, progress: Progress) -> dict[str, Tensor]:
        c = self.config
        qv = batch.query_video                                           # (Nq,)
        tokens, token_mask = batch.queries.tokens, batch.queries.mask
        frames, frame_mask = batch.videos.frames, batch.videos.frame_mask
        device = frames.device
        # ref: both codes' train.py switch hard negatives on only when the start epoch is not -1
        hard = c.hard_negative_start_epoch != -1 and progress.time >= c.hard_negative_start_epoch
        kd_weight = c.kd_weight(progress) if c.kd_active else 0.0
        soft = c.label_style == "soft"
        alpha, beta = (c.alpha(progress), c.beta(progress)) if soft else (1.0, 1.0)

        need_teacher = "inherit" in self.branches and (kd_weight != 0.0 or soft)
        # (c, G), loaded exactly when the inheritance branch uses the teacher (need_teacher)
        teacher = require_teacher(batch, type(self).__name__) if need_teacher else None
        teacher_U = None
        if soft and teacher is not None:
            teacher_U = teacher_video_scores(*teacher, frame_mask, kind=c.teacher_soft_targets)  # (Nq, B)

        zero = frames.new_zeros(())
        terms = {f"loss_{name}_{part}": zero for name in BRANCHES for part in ("triplet", "nce")}
        terms["loss_kd"] = zero
        total = zero
        packed = self.valid_rows(frames, frame_mask)                     # (n_valid, d_v) or None
        for name in self.branches:
            q = self._query_vector(name, tokens, token_mask)             # (Nq, D)
            v = self._frame_features(name, frames, frame_mask, packed)   # (B, T, D)
            raw = torch.einsum("qd,btd->qbt", q, v)                      # (Nq, B, T)
            cos = torch.einsum("qd,btd->qbt", F.normalize(q, dim=-1), F.normalize(v, dim=-1))
            S, U = max_over_frames(cos, frame_mask), max_over_frames(raw, frame_mask)   # (Nq, B)
            triplet = clip_triplet_loss(S, qv, margin=c.margin, hard=hard, hard_pool=c.hard_pool_size,
                                        v2t_hard=c.triplet_v2t_hard)
            if soft:
                nce = soft_target_nce(U, self._soft_targets(name, U, teacher_U), qv, alpha=alpha,
                                      beta=beta, partition=c.soft_partition, v2t=c.soft_v2t)
            else:
                nce = clip_nce(U, qv)
            w_nce = (c.nce_weight if name == "inherit" or c.explore_nce_weight is None
                     else c.explore_nce_weight)
            total = total + triplet + w_nce * nce
            terms[f"loss_{name}_triplet"], terms[f"loss_{name}_nce"] = triplet, nce
            if name == "inherit" and kd_weight != 0.0 and teacher is not None:
                rows = torch.arange(qv.shape[0], device=device)
                student = cos[rows, qv]                                  # (Nq, T) positive pairs
                teacher_cos = positive_teacher_frame_cosines(*teacher, frame_mask, qv)  # (Nq, T)
                kd_mask = frame_mask[qv]                                 # (Nq, T)
                kd = frame_kd_loss(student, teacher_cos, kd_mask, temperature=c.kd_temperature,
                                   reduction=c.kd_reduction,
                                   target=self._kd_target(student, teacher_cos, kd_mask, progress))
                total = total + kd_weight * kd
                terms["loss_kd"] = kd
        out = {"loss": total}
        out.update({k: t.detach() for k, t in terms.items()})
        out.update({k: torch.tensor(float(x), device=device)
                    for k, x in (("kd_weight", kd_weight), ("alpha", alpha), ("beta", beta))})
        return out


# -- registrations ----------------------------------------------------------------------------

DL_DKD_CONFIG = DLDKDConfig()
#: The journal code's defaults where they differ from the ICCV code's (the rest of its recipe,
#: margin 0.2, hard_pool_size 20, nce 0.04, KD 0.1·0.95^e at τ 0.2, α0 = β0 = 0.8 sigmoid, is
#: DLDKDConfig's; per-collection values are in methods/presets/dl-dkd++.toml).
DL_DKD_PP_CONFIG = DLDKDConfig(
    separate_query_projection=True,    # ref: master gives each branch its own query_* / exp_* modules
    label_style="soft",                # ref: --label_style soft (all three scripts)
    explore_nce_weight=0.04,           # ref: --explore_nce_weight 0.04 (--inher_nce_weight 0.04)
    resample_to_teacher_length=True,   # ref: data_provider resamples students to the teacher length
    teacher_alignment="bin")           # the journal code has no rule for a longer teacher (§6.8.6)

register_method("dl-dkd", DLDKD, DL_DKD_CONFIG,
                "dual-branch student with decaying CLIP frame KD (ICCV 2023 code, branch iccv)")
register_method("dl-dkd++", DLDKD, DL_DKD_PP_CONFIG,
                "journal code: separate branches, dynamic soft targets (teacher/self), α/β schedules")

_DECAYS = {  # variant suffix -> (decay_way, summary)
    "decay-linear": (2, "KD decay linear max(1 − 0.01e, 0.05) (decay_way 2)"),
    "decay-sigmoid": (3, "KD decay sigmoid 800/(800 + e^{e/8}) (decay_way 3)"),
    "decay-rising-exp": (4, "KD weight increasing 0.1·(1 − 0.95^e) + 0.1 (decay_way 4)"),
    "decay-rising-linear": (5, "KD weight increasing 0.1·(1 − max(1 − 0.01e, .05)) + 0.1 (decay_way 5)"),
    "decay-rising-sigmoid": (6, "KD weight increasing 0.1·(1 − sigmoid) + 0.1 (decay_way 6)"),
    "decay-capped-growth": (7, "KD decay min(0.001·1.05^e, 0.1) (decay_way 7)"),
    "decay-rising-capped": (8, "KD decay max(min(0.1(1 − 0.95^e), 0.1), 0.001) (decay_way 8)"),
}

for _base in ("dl-dkd", "dl-dkd++"):
    register_variant(f"{_base}.single-branch", "inheritance branch only, with KD (no exploration branch)",
                     {"double_branch": False, "single_branch": "inherit"})
    register_variant(f"{_base}.explore-only", "exploration branch only: one student, no teacher",
                     {"double_branch": False, "single_branch": "explore"})
    register_variant(f"{_base}.no-kd", "both branches, KD term switched off", {"kd_scale": 0.0})
    register_variant(f"{_base}.fixed-kd", "KD weight never decays (constant kd_scale)",
                     {"kd_decay.kind": "constant"})
    for _suffix, (_way, _summary) in _DECAYS.items():
        register_variant(f"{_base}.{_suffix}", _summary,
                         schedule_delta("kd_decay", REFERENCE_KD_DECAYS[_way]))
    register_variant(f"{_base}.kd-mean", "KD averaged over queries instead of summed (fix §5.6.3)",
                     {"kd_reduction": "mean"})
    register_variant(f"{_base}.fusion-inherit", "rank by the inheritance branch alone (fusion weight 1)",
                     {"fusion_inherit": 1.0})
    register_variant(f"{_base}.fusion-explore", "rank by the exploration branch alone (fusion weight 0)",
                     {"fusion_inherit": 0.0})
    register_variant(f"{_base}.fusion-equal", "equal fusion 0.5·S_inh + 0.5·S_exp", {"fusion_inherit": 0.5})

register_variant("dl-dkd.readme-an", "README-implied AN checkpoint: KD decay_way 8 with scale 1.0 (§5.6.4)",
                 {**schedule_delta("kd_decay", REFERENCE_KD_DECAYS[8]), "kd_scale": 1.0})
register_variant("dl-dkd.soft-targets", "ICCV model with the ++ soft-target NCE (teacher/self targets)",
                 {"label_style": "soft"})
register_variant("dl-dkd.teacher-bin", "teacher longer than the student binned down to n frames, not cut "
                 "to its first n (the dl-dkd++ rule, §6.8.6)", {"teacher_alignment": "bin"})
register_variant("dl-dkd.separate-projection", "each branch uses its own query projection (fix §5.6.2)",
                 {"separate_query_projection": True})

register_variant("dl-dkd++.hard-targets", "hard-target clip_nce in both branches (label_style hard)",
                 {"label_style": "hard"})
register_variant("dl-dkd++.shared-projection",
                 "exploration reuses inheritance's query projection (ICCV quirk)",
                 {"separate_query_projection": False})
register_variant("dl-dkd++.detach-self-targets", "exploration self-targets detached (fix §6.8.2)",
                 {"explore_target_detach": True})
register_variant("dl-dkd++.random-partition",
                 "hard/soft rows drawn at random, not by batch position (§6.8.3)",
                 {"soft_partition": "random"})
register_variant("dl-dkd++.v2t-cross-entropy", "soft v2t as a cross-entropy like t2v (fix §6.8.4)",
                 {"soft_v2t": "cross_entropy"})
register_variant("dl-dkd++.teacher-cosine", "teacher soft targets from cosines, not raw CLIP dots (§6.8.5)",
                 {"teacher_soft_targets": "cosine"})
register_variant("dl-dkd++.no-teacher-length",
                 "keep the student frame grid (no resampling to teacher length)",
                 {"resample_to_teacher_length": False})
for _kind in ("exp", "linear", "cosine", "none"):
    register_variant(f"dl-dkd++.alpha-{_kind}", f"α schedule {_kind} (default sigmoid)",
                     {"alpha_schedule": _kind})
    register_variant(f"dl-dkd++.beta-{_kind}", f"β schedule {_kind} (default sigmoid)",
                     {"beta_schedule": _kind})
