"""Rank kernels: the rank of the relevant video(s) of every query in one block of scores.

Pure tensor functions, no state, no Python loop over queries; they run on whatever device the
scores live on. The evaluator (``benchmark/evaluate.py``) calls them once per query block.

Tie rule (docs/methods.md §1.5, docs/architecture.md §4): ties count **against** the method.
Videos are ordered by descending score and, inside a group of equal scores, every irrelevant
video is placed before every relevant one (the worst tie-break there is). Consequences:

* one relevant video: rank = 1 + #{other videos v : s_v >= s_gt}; a constant scorer gets the
  worst rank Nv, never the best; with tie-free scores the rank equals the reference's
  ``np.argsort`` rank.
* several relevant videos: the rank is the position of the first relevant video in that
  worst-case order, i.e. 1 + #{irrelevant v : s_v >= max relevant score}, and AP is the ordinary
  average precision of that same order. Among tied *relevant* videos the order does not matter
  for the first position, and for AP the pessimistic order gives them the smallest precisions
  (relevant k-th in a tie group sits after all tied irrelevant videos).
  The simpler rule "each relevant video's rank counts every other video scored >= it" agrees
  whenever relevant videos do not tie with each other, but inside such a tie it hands every
  relevant video the *largest* precision of its group (optimistic) and can rank no relevant
  video first even though one of them must come first; hence the worst-case order instead.
  ``ties`` counts only irrelevant videos tied with the best relevant one: the videos whose
  tie-break decides the rank (with one relevant video: all other videos with its score).

NaN scores are an error (``NaNScoreError``) naming the first affected query.
"""
from __future__ import annotations

import torch
from torch import Tensor

from benchmark.errors import PRVRBenchError


class NaNScoreError(PRVRBenchError, ValueError):
    """A score block holds NaN; ``query_index`` is the first affected query (0-based, global)."""

    def __init__(self, query_index: int, key: str | None = None) -> None:
        self.query_index = query_index
        self.key = key
        where = f" in score matrix {key!r}" if key is not None else ""
        super().__init__(f"NaN score{where} for query index {query_index}: ranks are undefined; "
                         "check the method's encodings and score for this query")


def check_no_nan(scores: Tensor, *, offset: int = 0, key: str | None = None) -> None:
    """Raise ``NaNScoreError`` naming the first query (``offset`` + row) whose scores hold NaN.

    Shapes: scores (q, Nv).
    """
    if not scores.is_floating_point():
        return
    # A row sum is NaN when the row holds NaN (or both infinities, or overflows both ways); it
    # is one cheap pass, and only a flagged block pays for the exact element-wise check.
    if not bool(torch.isnan(scores.sum(dim=1)).any()):
        return
    bad = torch.isnan(scores).any(dim=1)                                   # (q,)
    if bool(bad.any()):
        first = int(torch.nonzero(bad)[0, 0])
        raise NaNScoreError(offset + first, key)


def rank_block(scores: Tensor, positive: Tensor, *, offset: int = 0,
               key: str | None = None) -> tuple[Tensor, Tensor]:
    """Pessimistic rank of the one relevant video of each query, and its tie count.

    rank_i = 1 + #{v != gt_i : S_iv >= S_i,gt_i}; ties_i = #{v != gt_i : S_iv == S_i,gt_i}.
    ``offset`` and ``key`` only serve the NaN error message (global query index, matrix name).

    Shapes: scores (q, Nv) any float dtype; positive (q,) int64 video index in [0, Nv);
    returns rank (q,) int64 in [1, Nv] and ties (q,) int64 in [0, Nv - 1].
    """
    check_no_nan(scores, offset=offset, key=key)
    s_pos = scores.gather(1, positive.to(scores.device, torch.int64)[:, None])  # (q, 1)
    # int32 counts: reducing booleans straight into int64 is several times slower on the CPU.
    at_or_above = (scores >= s_pos).sum(dim=1, dtype=torch.int32)         # (q,) includes gt itself
    ties = (scores == s_pos).sum(dim=1, dtype=torch.int32) - 1            # (q,) gt itself excluded
    return at_or_above.to(torch.int64), ties.to(torch.int64)


def multi_positive_block(scores: Tensor, relevant: Tensor, *, offset: int = 0,
                         key: str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Best rank, its tie count and full average precision with several relevant videos.

    With R_i the relevant set of query i and m_i = max_{v in R_i} S_iv:
    best_rank_i = 1 + #{v not in R_i : S_iv >= m_i}; ties_i = #{v not in R_i : S_iv == m_i};
    AP_i = (1/|R_i|) * sum_{j in R_i} (#relevant at positions <= p_j) / p_j, with p_j the position
    of j in the worst-case order (descending score, irrelevant before relevant inside a tie).
    One stable sort per block (this mode only).

    Shapes: scores (q, Nv); relevant (q, Nv) bool, at least one True per row;
    returns best_rank (q,) int64, ties (q,) int64, ap (q,) float64.
    """
    check_no_nan(scores, offset=offset, key=key)
    relevant = relevant.to(scores.device, torch.bool)
    n_rel = relevant.sum(dim=1, dtype=torch.int32)                         # (q,)
    if bool((n_rel == 0).any()):
        first = int(torch.nonzero(n_rel == 0)[0, 0])
        raise ValueError(f"query index {offset + first} has no relevant video in the relevance "
                         "labels; every query needs at least one")
    # Best relevant score per query; -inf where irrelevant so max picks a relevant one.
    best = scores.masked_fill(~relevant, float("-inf")).amax(dim=1, keepdim=True)  # (q, 1)
    irrelevant = ~relevant
    ahead = ((scores >= best) & irrelevant).sum(dim=1, dtype=torch.int32)  # (q,) worst-case ahead
    ties = ((scores == best) & irrelevant).sum(dim=1, dtype=torch.int32)   # (q,)
    best_rank = ahead + 1
    # Worst-case order: sort by relevance (irrelevant first) then stably by descending score,
    # so equal scores keep irrelevant videos ahead of relevant ones.
    by_rel = torch.sort(relevant.to(torch.uint8), dim=1, stable=True).indices  # (q, Nv)
    s_by_rel = scores.gather(1, by_rel)                                    # (q, Nv)
    order = torch.sort(s_by_rel, dim=1, descending=True, stable=True).indices  # (q, Nv)
    rel_sorted = relevant.gather(1, by_rel.gather(1, order))               # (q, Nv) bool
    hits = rel_sorted.to(torch.float64).cumsum(dim=1)                      # (q, Nv)
    position = torch.arange(1, scores.shape[1] + 1, device=scores.device,
                            dtype=torch.float64)                           # (Nv,)
    ap = (hits / position * rel_sorted).sum(dim=1) / n_rel                 # (q,)
    return best_rank.to(torch.int64), ties.to(torch.int64), ap
