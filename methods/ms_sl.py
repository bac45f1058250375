"""ms-sl: Multi-Scale Similarity Learning, faithful to the reference code (card: methods/cards/ms-sl.md).

Dong et al., "Partially Relevant Video Retrieval", ACM MM 2022; docs/methods.md §4. A query
vector q̄ (attention-pooled tokens) is matched at two scales:

* clip scale: S_c(q, v) = max_j cos(q̄, P^v_j) over the 528 sliding-window proposals P^v of
  the 32 encoded clips (k = 1..32);
* frame scale: S_f(q, v) = cos(q̄, f(q, v)), f = key-clip-guided attention (KCGA) over the
  encoded frames, guided by the raw proposal u = P^v_{j*} of the cosine argmax j*;
* fused: S = w_c S_c + w_f S_f, (0.7, 0.3) by default and (0.5, 0.5) for Charades (presets).

Training (§4.3, §4.4): L = L_trip^clip(S^c) + 0.02 L_nce(U^c) + L_trip^frame(S^f) + 0.04
L_frame_nce(U^f), where U^c = max_j q̄·P_j uses unnormalised vectors, and the frame-scale
tensors are query×query: f_j = f(q_j, y(j)) attends only query j's own video, guided by its own
key clip, and S^f_ij = cos(q̄_i, f_j), U^f_ij = q̄_i·f_j, positives on the diagonal. The
hard-negative phase starts at ``hard_negative_start_epoch``. The reference behaviours that
change numbers are the defaults; each has a switch (§4.6, listed on MSSLConfig).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.data.batch import QueryBatch, TrainBatch, VideoBatch
from benchmark.interface import Encoding, FeatureDims, MethodConfig, Progress, PRVRMethod
from benchmark.registry import register_method, register_variant
from methods.errors import MethodConfigError, MethodInputError
from methods.layers.attention import guided_attention_pool
from methods.layers.encoders import QueryEncoder, SequenceEncoder
from methods.layers.init import reference_init_
from methods.layers.pooling import multi_scale_proposals, window_average_matrix
from methods.losses.nce import clip_nce, frame_nce
from methods.losses.ranking import clip_triplet_loss, frame_triplet_loss

NORM_EPS = 1e-12          # F.normalize's eps, as the reference's cosine uses


@dataclass(frozen=True, kw_only=True)
class MSSLConfig(MethodConfig):
    """MS-SL hyper-parameters; defaults are the reference's (ms-sl method/config.py, do_*.sh)."""

    hidden_size: int = 384                  # ref: config.py hidden_size
    num_heads: int = 4                      # ref: config.py n_heads
    input_dropout: float = 0.1              # ref: config.py input_drop
    dropout: float = 0.1                    # ref: config.py drop
    margin: float = 0.2                     # ref: config.py margin 0.2 (do_tvr.sh: 0.1, TVR preset)
    hard_negative_start_epoch: int = 20     # ref: config.py hard_negative_start_epoch; -1 = never
    hard_pool_size: int = 20                # ref: config.py hard_pool_size
    clip_nce_weight: float = 0.02           # ref: model.py forward, hard-coded 0.02
    frame_nce_weight: float = 0.04          # ref: model.py forward, hard-coded 0.04 (0.03 before e019d4a)
    clip_triplet_weight: float = 1.0        # ref: implicit 1 in model.py forward; ours for ablations
    frame_triplet_weight: float = 1.0       # ref: implicit 1 in model.py forward; ours for ablations
    clip_weight: float = 0.7                # ref: eval.py fusion 0.7 (do_charades.sh: 0.5, preset)
    frame_weight: float = 0.3               # ref: eval.py fusion 0.3 (do_charades.sh: 0.5, preset)
    # §4.6 switches: the first value reproduces the reference, the second applies the fix.
    frame_same_video_negatives: Literal["keep", "mask"] = "keep"      # §4.6 item 3
    frame_train_guidance: Literal["reference", "consistent"] = "reference"  # §4.6 item 4
    frame_nce_diagonal_once: bool = False                             # §4.6 item 5
    triplet_v2t_hard: Literal["top1", "pool"] = "top1"                # §4.6 item 6

    def __post_init__(self) -> None:
        if self.hidden_size < 1 or self.num_heads < 1 or self.hidden_size % self.num_heads:
            raise MethodConfigError(f"MSSLConfig: hidden_size ({self.hidden_size}) must be a "
                                    f"positive multiple of num_heads ({self.num_heads})")
        for name in ("input_dropout", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise MethodConfigError(f"MSSLConfig: {name} must be in [0, 1), got {getattr(self, name)}")
        if self.hard_negative_start_epoch < -1:
            raise MethodConfigError("MSSLConfig: hard_negative_start_epoch must be >= 0, or -1 for "
                                    f"never, got {self.hard_negative_start_epoch}")
        if self.hard_pool_size < 1:
            raise MethodConfigError(f"MSSLConfig: hard_pool_size must be >= 1, got {self.hard_pool_size}")
        for name in ("margin", "clip_nce_weight", "frame_nce_weight", "clip_triplet_weight",
                     "frame_triplet_weight", "clip_weight", "frame_weight"):
            if getattr(self, name) < 0:
                raise MethodConfigError(f"MSSLConfig: {name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class MSSLQueryEncoding(Encoding):
    """Shapes: query (Nq, D) pooled query vectors, not normalised."""

    query: Tensor


@dataclass(frozen=True)
class MSSLVideoEncoding(Encoding):
    """Compact per-video state; scoring derives the rest chunk by chunk.

    The 528 proposals and the KCGA key/value maps are deterministic functions of these tensors,
    so they are rebuilt inside ``score`` for each video chunk instead of being stored: the stored
    encoding of a collection is (32 + T)·D floats per video instead of (528 + 2T)·D
    (TVR test: ≈0.5 GB instead of ≈2.6 GB).

    Shapes: clips (B, 32, D) encoded clip states; frames (B, T, D) encoded frame states;
    frame_mask (B, T).
    """

    clips: Tensor
    frames: Tensor
    frame_mask: Tensor


class MSSL(PRVRMethod):
    """MS-SL (docs/methods.md §4). Parameters: 4,852,992 for 3072/768 inputs, 3,370,752 for
    1024/1024 (query encoder, clip and frame encoders, two 384×384 KCGA maps)."""

    config_cls = MSSLConfig
    config: MSSLConfig
    requires = frozenset({"clips"})
    batch_sort = "frames"                  # ref: collate sorts videos by frame count (§1.4)
    #: float elements one query sub-block of ``score`` may allocate per (query, video) pair
    #: times pairs; bounds the (q, v, 528) cosine slab (≈128 MiB in float32).
    score_budget_elements: ClassVar[int] = 1 << 25

    def __init__(self, config: MSSLConfig, dims: FeatureDims) -> None:
        super().__init__(config, dims)
        c = config
        # padded tokens/frames skip the input projection; they are masked in attention, pooling
        # and KCGA, so valid outputs are unchanged (tests/test_layers.py)
        self.query_encoder = QueryEncoder(dims.query, c.hidden_size, c.num_heads, dims.max_query_tokens,
                                          c.input_dropout, c.dropout, pack_valid=True)
        # ref: clip and frame encoders are deepcopies of the query encoder, then all are
        # re-initialised independently (§4.2); clips use positions 0..31 of a 128-row table.
        self.clip_encoder = SequenceEncoder(dims.video, c.hidden_size, c.num_heads, dims.max_frames,
                                            c.input_dropout, c.dropout)
        self.frame_encoder = SequenceEncoder(dims.video, c.hidden_size, c.num_heads, dims.max_frames,
                                             c.input_dropout, c.dropout, pack_valid=True)
        # ref: mapping_linear[0] (keys) and [1] (values), no bias
        self.key_map = nn.Linear(c.hidden_size, c.hidden_size, bias=False)
        self.value_map = nn.Linear(c.hidden_size, c.hidden_size, bias=False)
        reference_init_(self)

    # ------------------------------------------------------------------ encoders

    def encode_queries(self, queries: QueryBatch) -> MSSLQueryEncoding:
        return MSSLQueryEncoding(self.query_encoder(queries.tokens, queries.mask))  # (Nq, D)

    def encode_videos(self, videos: VideoBatch) -> MSSLVideoEncoding:
        if videos.clips is None:
            raise MethodInputError("ms-sl: VideoBatch.clips is None; load the split with "
                                   "requires={'clips'} (MSSL.requires)")
        clips = self.clip_encoder(videos.clips, None)                 # (B, 32, D), no mask (ref)
        frames = self.frame_encoder(videos.frames, videos.frame_mask)  # (B, T, D)
        return MSSLVideoEncoding(clips, frames, videos.frame_mask)

    # ------------------------------------------------------------------ scoring

    @staticmethod
    def _clip_scale(query: Tensor, clips: Tensor, proposals: Tensor) -> tuple[Tensor, Tensor]:
        """Clip-scale scores from per-clip dot products (§4.3).

        q̄·P_{k,s} is the window average of q̄·C_t (the proposals are linear in the clips), so
        the 528 raw scores cost 32 dot products per pair plus a (32 × 528) product; the cosine
        divides by ‖q̄‖‖P_j‖ (``F.normalize`` semantics, eps 1e-12).

        Shapes: query (Nq, D), clips (B, N, D), proposals (B, P, D) -> cos (Nq, B, P),
        raw (Nq, B, P).
        """
        average = window_average_matrix(clips.shape[1], clips.dtype, clips.device)    # (P, N)
        raw = torch.einsum("qd,btd->qbt", query, clips) @ average.t()                 # (Nq, B, P)
        q_norm = query.norm(dim=-1).clamp_min(NORM_EPS)                               # (Nq,)
        p_norm = proposals.norm(dim=-1).clamp_min(NORM_EPS)                           # (B, P)
        cos = raw / (q_norm[:, None, None] * p_norm[None])                             # (Nq, B, P)
        return cos, raw

    @staticmethod
    def _clip_scale_selected(query: Tensor, clips: Tensor, proposals: Tensor
                             ) -> tuple[Tensor, Tensor, Tensor]:
        """Training form of the clip scale: S^c = max_j cos, U^c = max_j raw, and j*.

        The argmaxes are found without autograd; the two maxima are then recomputed with
        autograd from the selected windows only, (q̄·C) a_{j} / (‖q̄‖‖P_j‖), so no (Nq, B, P)
        tensor is kept for the backward pass. Values and gradients equal those of ``max``
        (whose gradient also flows to the argmax entry alone).

        Shapes: query (Nq, D), clips (B, N, D), proposals (B, P, D) -> S^c (Nq, B),
        U^c (Nq, B), j* (Nq, B) int64.
        """
        with torch.no_grad():
            cos, raw = MSSL._clip_scale(query, clips, proposals)       # (Nq, B, P) each
            key_clip = cos.argmax(dim=-1)                               # (Nq, B)
            raw_clip = raw.argmax(dim=-1)                               # (Nq, B)
            del cos, raw
        average = window_average_matrix(clips.shape[1], clips.dtype, clips.device)  # (P, N)
        per_clip = torch.einsum("qd,btd->qbt", query, clips)            # (Nq, B, N)
        q_norm = query.norm(dim=-1).clamp_min(NORM_EPS)                  # (Nq,)
        p_norm = proposals.norm(dim=-1).clamp_min(NORM_EPS)              # (B, P)
        videos = torch.arange(clips.shape[0], device=clips.device)
        selected = (per_clip * average[key_clip]).sum(-1)                # (Nq, B) q̄·P_{j*}
        clip_score = selected / (q_norm[:, None] * p_norm[videos[None, :], key_clip])
        clip_raw = (per_clip * average[raw_clip]).sum(-1)                # (Nq, B) max_j q̄·P_j
        return clip_score, clip_raw, key_clip

    def _guided_frames(self, frames: Tensor, mask: Tensor, guide: Tensor) -> Tensor:
        """KCGA f = Σ_t softmax_t(K_t·u) V_t, K = key_map(F), V = value_map(F) (§4.2).
        Shapes: frames (B, T, D), mask (B, T), guide (..., B, D) -> (..., B, D)."""
        return guided_attention_pool(self.key_map(frames), self.value_map(frames), mask, guide)

    def score(self, q: MSSLQueryEncoding, v: MSSLVideoEncoding) -> dict[str, Tensor]:
        """{"score": w_c S_c + w_f S_f, "clip": S_c, "frame": S_f}, each (Nq, Nv) (§4.3).

        The inference KCGA guides every (query, video) pair by that pair's own key clip.
        Queries are processed in sub-blocks so that one sub-block allocates at most about
        ``score_budget_elements`` floats: per pair the per-clip scores (32), the raw proposal
        scores, norm products and cosines (3·528), the guide, the attended feature and its
        normalised copy (3D) and the attention scores and weights (2T). Beyond that the call
        holds the chunk's proposals and key/value maps,
        (528 + 2T)·D floats per video. Peak ≈ 4·[budget + Nv·(528 + 2T)·D] bytes in float32
        (budget 2²⁵: 128 MiB, plus ≈ 1.1 MB per video of the chunk at T = 128).
        """
        proposals = multi_scale_proposals(v.clips)                     # (Nv, P, D)
        keys, values = self.key_map(v.frames), self.value_map(v.frames)  # (Nv, T, D) each
        num_videos, num_props, hidden = proposals.shape
        # per pair: per-clip scores, raw, norm product and cosine (3P), guide, attended and its
        # normalised copy (3D), KCGA scores and weights (2T)
        per_pair = 3 * num_props + v.clips.shape[1] + 3 * hidden + 2 * v.frames.shape[1]
        step = max(1, self.score_budget_elements // max(1, num_videos * per_pair))
        vids = torch.arange(num_videos, device=proposals.device)
        clip_parts, frame_parts = [], []
        for start in range(0, len(q), step):                          # loop over query sub-blocks
            query = q.query[start:start + step]                         # (q, D)
            query_n = F.normalize(query, dim=-1)
            cos, raw = self._clip_scale(query, v.clips, proposals)      # (q, Nv, P) each
            del raw
            clip_score, key_clip = cos.max(dim=-1)                      # (q, Nv)
            del cos
            guide = proposals[vids[None, :], key_clip]                  # (q, Nv, D) raw proposals
            attended = guided_attention_pool(keys, values, v.frame_mask, guide)  # (q, Nv, D)
            frame_score = torch.einsum("qd,qvd->qv", query_n, F.normalize(attended, dim=-1))
            clip_parts.append(clip_score)
            frame_parts.append(frame_score)
        clip_score = torch.cat(clip_parts)                             # (Nq, Nv)
        frame_score = torch.cat(frame_parts)                           # (Nq, Nv)
        fused = self.config.clip_weight * clip_score + self.config.frame_weight * frame_score
        return {"score": fused, "clip": clip_score, "frame": frame_score}

    # ------------------------------------------------------------------ training

    def training_scores(self, batch: TrainBatch) -> dict[str, Tensor]:
        """The four training matrices of §4.3.

        Returns "clip" S^c (Nq, B), "clip_raw" U^c (Nq, B) and, with the reference guidance,
        "frame" S^f and "frame_raw" U^f (Nq, Nq) with positives on the diagonal; with
        ``frame_train_guidance="consistent"`` they are (Nq, B) and use the inference KCGA.
        """
        c = self.config
        y = batch.query_video                                           # (Nq,)
        query = self.encode_queries(batch.queries).query                # (Nq, D)
        video = self.encode_videos(batch.videos)
        proposals = multi_scale_proposals(video.clips)                  # (B, P, D)
        # ref: U^c is the max of the unnormalised scores; its argmax may differ from j*
        clip_score, clip_raw, key_clip = self._clip_scale_selected(query, video.clips, proposals)
        out = {"clip": clip_score, "clip_raw": clip_raw}
        if c.frame_triplet_weight == 0 and c.frame_nce_weight == 0:
            return out
        if c.frame_train_guidance == "reference":
            rows = torch.arange(len(y), device=y.device)
            guide = proposals[y, key_clip[rows, y]]                     # (Nq, D) own key clip
            # map the B videos once, then give each query its own video's maps (the reference
            # maps the Nq expanded copies; same values, Nq/B times the work)
            keys, values = self.key_map(video.frames), self.value_map(video.frames)  # (B, T, D)
            attended = guided_attention_pool(keys[y], values[y], video.frame_mask[y], guide)  # (Nq, D)
            out["frame"] = F.normalize(query, dim=-1) @ F.normalize(attended, dim=-1).t()  # (Nq, Nq)
            out["frame_raw"] = query @ attended.t()                     # (Nq, Nq)
        else:
            vids = torch.arange(proposals.shape[0], device=proposals.device)
            guide = proposals[vids[None, :], key_clip]                  # (Nq, B, D)
            attended = self._guided_frames(video.frames, video.frame_mask, guide)  # (Nq, B, D)
            out["frame"] = torch.einsum("qd,qbd->qb", F.normalize(query, dim=-1),
                                        F.normalize(attended, dim=-1))  # (Nq, B)
            out["frame_raw"] = torch.einsum("qd,qbd->qb", query, attended)  # (Nq, B)
        return out

    def compute_loss(self, batch: TrainBatch, progress: Progress) -> dict[str, Tensor]:
        """L = w_ct L_trip^clip + 0.02 L_nce^clip + w_ft L_trip^frame + 0.04 L_nce^frame (§4.4).
        The logged ``loss_*`` terms are unweighted."""
        c = self.config
        # ref: train.py train_epoch: -1 disables, else hard from that (0-based) epoch on; the
        # epoch is schedule time (Progress.time), so the progress clock starts it at 20 % of E_ref
        hard = c.hard_negative_start_epoch != -1 and progress.time >= c.hard_negative_start_epoch
        y = batch.query_video
        s = self.training_scores(batch)
        margin, hard_pool = c.margin, c.hard_pool_size
        terms = {"loss_clip_triplet": clip_triplet_loss(s["clip"], y, margin=margin, hard=hard,
                                                        hard_pool=hard_pool, v2t_hard=c.triplet_v2t_hard),
                 "loss_clip_nce": clip_nce(s["clip_raw"], y)}
        if "frame" not in s:
            zero = s["clip"].new_zeros(())
            terms.update(loss_frame_triplet=zero, loss_frame_nce=zero)
        elif c.frame_train_guidance == "consistent":
            terms["loss_frame_triplet"] = clip_triplet_loss(s["frame"], y, margin=margin, hard=hard,
                                                            hard_pool=hard_pool,
                                                            v2t_hard=c.triplet_v2t_hard)
            terms["loss_frame_nce"] = clip_nce(s["frame_raw"], y)
        else:
            exclude = None
            if c.frame_same_video_negatives == "mask":
                exclude = y[:, None] == y[None, :]                       # (Nq, Nq) same video
            terms["loss_frame_triplet"] = frame_triplet_loss(s["frame"], margin=margin, hard=hard,
                                                             hard_pool=hard_pool, exclude=exclude)
            terms["loss_frame_nce"] = frame_nce(s["frame_raw"], exclude=exclude,
                                                diagonal_once=c.frame_nce_diagonal_once)
        loss = (c.clip_triplet_weight * terms["loss_clip_triplet"]
                + c.clip_nce_weight * terms["loss_clip_nce"]
                + c.frame_triplet_weight * terms["loss_frame_triplet"]
                + c.frame_nce_weight * terms["loss_frame_nce"])
        return {"loss": loss, **{k: t.detach() for k, t in terms.items()},
                "hard_negatives": loss.new_tensor(float(hard)).detach()}


register_method("ms-sl", MSSL, MSSLConfig(),
                "MS-SL (ACM MM 2022): clip-scale proposals + key-clip-guided frame scale, "
                "faithful to the reference code")
register_variant("ms-sl.clip-only", "clip scale only: frame losses off, fusion weight 0",
                 {"frame_weight": 0.0, "frame_triplet_weight": 0.0, "frame_nce_weight": 0.0})
register_variant("ms-sl.frame-only", "frame scale only: clip losses off, fusion weight 0",
                 {"clip_weight": 0.0, "clip_triplet_weight": 0.0, "clip_nce_weight": 0.0})
register_variant("ms-sl.mask-false-negatives", "§4.6.3 fix: same-video pairs are not frame negatives",
                 {"frame_same_video_negatives": "mask"})
register_variant("ms-sl.consistent-guidance", "§4.6.4 fix: train the frame scale as it is scored",
                 {"frame_train_guidance": "consistent"})
register_variant("ms-sl.nce-diagonal-once", "§4.6.5 fix: frame NCE counts the positive once",
                 {"frame_nce_diagonal_once": True})
register_variant("ms-sl.v2t-pool", "§4.6.6 fix: hard v2t negatives sampled from the top H",
                 {"triplet_v2t_hard": "pool"})
register_variant("ms-sl.all-fixes", "every §4.6 fix of the loss (3, 4, 5, 6) at once",
                 {"frame_same_video_negatives": "mask", "frame_train_guidance": "consistent",
                  "frame_nce_diagonal_once": True, "triplet_v2t_hard": "pool"})
