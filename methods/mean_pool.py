"""mean-pool: the minimal PRVR baseline (card: methods/cards/mean-pool.md).

A query is the masked mean of its token features, a video the masked mean of its frame
features; each goes through its own two-layer projection into a joint space and is
L2-normalised, and the score is the cosine. Training uses a symmetric InfoNCE with a fixed
temperature τ:

    U = cos(q, v) / τ                                          (Nq, B)
    L_t2v = mean_i [ logsumexp_b U_ib − U_{i, y(i)} ]          each query's own video is positive
    L_v2t = mean_b [ logsumexp_i U_ib − logsumexp_{i: y(i)=b} U_ib ]   all of a video's queries positive
    L = L_t2v + v2t_weight · L_v2t

The video side follows the multi-positive form of clip_nce (docs/methods.md §3.3). Because a
video is reduced to one mean vector, a short moment is diluted by the rest of the video: this
model is expected to do worse at low M/V than at high M/V.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.data.batch import QueryBatch, TrainBatch, VideoBatch
from benchmark.interface import Encoding, FeatureDims, MethodConfig, Progress, PRVRMethod
from benchmark.precision import float32_loss
from benchmark.registry import register_method, register_variant
from methods.errors import MethodConfigError
from methods.layers.dropout import Dropout


@dataclass(frozen=True, kw_only=True)
class MeanPoolConfig(MethodConfig):
    hidden_size: int = 384          # as the PRVR methods' D (docs/methods.md §2)
    joint_size: int = 384
    dropout: float = 0.1            # on the pooled input, like the reference input_drop
    temperature: float = 0.05       # τ of the InfoNCE; our choice for a cosine scorer
    v2t_weight: float = 1.0         # weight of the video-to-text half

    def __post_init__(self) -> None:
        if self.hidden_size < 1 or self.joint_size < 1:
            raise MethodConfigError("hidden_size and joint_size must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise MethodConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.temperature <= 0:
            raise MethodConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.v2t_weight < 0:
            raise MethodConfigError("v2t_weight must be >= 0")


@dataclass(frozen=True)
class MeanPoolEncoding(Encoding):
    """Shapes: embedding (N, D_joint), L2-normalised."""

    embedding: Tensor


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over the valid positions of dim 1.

    Shapes: x (N, T, d); mask (N, T) float 1/0 -> (N, d). An all-padding row gives zeros.
    """
    total = torch.bmm(mask.unsqueeze(1).to(x.dtype), x).squeeze(1)   # (N, d) no (N, T, d) product
    count = mask.sum(1, keepdim=True).clamp_min(1.0)            # (N, 1)
    return total / count


class MeanPool(PRVRMethod):
    """Two projections of mean-pooled features, cosine score, symmetric InfoNCE."""

    config_cls = MeanPoolConfig
    batch_sort = "frames"
    config: MeanPoolConfig

    def __init__(self, config: MeanPoolConfig, dims: FeatureDims) -> None:
        super().__init__(config, dims)
        self.query_proj = self._projection(dims.query, config)
        self.video_proj = self._projection(dims.video, config)

    @staticmethod
    def _projection(d_in: int, c: MeanPoolConfig) -> nn.Sequential:
        return nn.Sequential(Dropout(c.dropout), nn.Linear(d_in, c.hidden_size), nn.ReLU(),
                             nn.Linear(c.hidden_size, c.joint_size))

    def encode_queries(self, queries: QueryBatch) -> MeanPoolEncoding:
        pooled = masked_mean(queries.tokens, queries.mask)                 # (Nq, d_q)
        return MeanPoolEncoding(F.normalize(self.query_proj(pooled), dim=-1))   # (Nq, D)

    def encode_videos(self, videos: VideoBatch) -> MeanPoolEncoding:
        pooled = masked_mean(videos.frames, videos.frame_mask)             # (B, d_v)
        return MeanPoolEncoding(F.normalize(self.video_proj(pooled), dim=-1))   # (B, D)

    def score(self, q: MeanPoolEncoding, v: MeanPoolEncoding) -> dict[str, Tensor]:
        return {"score": q.embedding @ v.embedding.T}                      # (Nq, Nv)

    def compute_loss(self, batch: TrainBatch, progress: Progress) -> dict[str, Tensor]:
        cos = self.score(self.encode_queries(batch.queries), self.encode_videos(batch.videos))["score"]
        t2v, v2t = info_nce(cos, batch.query_video, self.config.temperature)
        loss = t2v + self.config.v2t_weight * v2t
        return {"loss": loss, "loss_t2v": t2v.detach(), "loss_v2t": v2t.detach(),
                "pos_cosine": cos.gather(1, batch.query_video[:, None]).mean().detach()}


@float32_loss
def info_nce(cos: Tensor, query_video: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """The two InfoNCE sides (t2v, multi-positive v2t) of cosine scores over a temperature.

    Shapes: cos (Nq, B); query_video (Nq,) int64 in [0, B) -> two scalars."""
    logits = cos / temperature                                         # (Nq, B)
    t2v = F.cross_entropy(logits, query_video)
    own = query_video[:, None] == torch.arange(logits.shape[1], device=logits.device)  # (Nq, B)
    everyone = logits.logsumexp(dim=0)                                 # (B,)
    positives = logits.masked_fill(~own, float("-inf")).logsumexp(dim=0)   # (B,)
    has_query = own.any(0)                                             # (B,) guard videos without queries
    v2t = (everyone - positives)[has_query].mean()
    return t2v, v2t


register_method("mean-pool", MeanPool, MeanPoolConfig(),
                "minimal baseline: projected mean-pooled frames and tokens, cosine, InfoNCE")
register_variant("mean-pool.t2v-only", "text-to-video InfoNCE only (no video-side term)",
                 {"v2t_weight": 0.0})
