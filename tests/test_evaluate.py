"""The evaluator against brute-force per-query loop oracles (docs/architecture.md §4).

The oracles below restate the definitions with plain Python loops over queries and videos:
pessimistic ranks (ties count against the method), the worst-case order for multi-positive AP,
the metrics of docs/methods.md §1.5 and the right-closed M/V bins of docs/datasets.md §1.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from benchmark.data.batch import QueryBatch, VideoBatch
from benchmark.evaluate import EvalResult, evaluate, evaluate_method
from benchmark.interface import Encoding, FeatureDims, MethodConfig, PRVRMethod

CHUNKS = (1, 3, 7, 2048)


# ------------------------------------------------------------------------------------------------
# Oracles
# ------------------------------------------------------------------------------------------------

def oracle_single(scores: np.ndarray, query_video: np.ndarray):
    ranks, ties = [], []
    for i in range(scores.shape[0]):
        gt = int(query_video[i])
        above = sum(1 for v in range(scores.shape[1]) if v != gt and scores[i, v] >= scores[i, gt])
        tied = sum(1 for v in range(scores.shape[1]) if v != gt and scores[i, v] == scores[i, gt])
        ranks.append(1 + above)
        ties.append(tied)
    return np.array(ranks), np.array(ties), 1.0 / np.array(ranks, dtype=np.float64)


def oracle_multi(scores: np.ndarray, relevant_sets: list[set[int]]):
    """Worst-case order: descending score, irrelevant before relevant on equal scores."""
    ranks, ties, aps = [], [], []
    for i in range(scores.shape[0]):
        rel = relevant_sets[i]
        order = sorted(range(scores.shape[1]), key=lambda v: (-scores[i, v], v in rel))
        hits, precisions, first = 0, [], None
        for pos, v in enumerate(order, start=1):
            if v in rel:
                hits += 1
                precisions.append(hits / pos)
                first = pos if first is None else first
        best = max(scores[i, v] for v in rel)
        ranks.append(first)
        ties.append(sum(1 for v in range(scores.shape[1]) if v not in rel and scores[i, v] == best))
        aps.append(sum(precisions) / len(rel))
    return np.array(ranks), np.array(ties), np.array(aps)


def oracle_metrics(ranks, ties, aps) -> dict:
    n = len(ranks)
    out = {f"R{k}": 100.0 * sum(1 for r in ranks if r <= k) / n for k in (1, 5, 10, 100)}
    out["SumR"] = out["R1"] + out["R5"] + out["R10"] + out["R100"]
    out["MedR"] = float(statistics.median(ranks))
    out["MeanR"] = sum(ranks) / n
    out["mAP"] = sum(aps) / n
    out["tied_queries"] = sum(1 for t in ties if t > 0)
    out["n_queries"] = n
    return out


def assert_metrics_equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


def random_case(rng: np.random.Generator):
    nq = int(rng.integers(1, 40))
    nv = int(rng.integers(1, 30))
    scores = rng.standard_normal((nq, nv))
    style = rng.integers(0, 3)
    if style == 1:
        scores = np.round(scores, 1)                  # many ties
    elif style == 2:
        scores = rng.integers(0, 3, size=(nq, nv)).astype(np.float64)  # heavy ties
    query_video = rng.integers(0, nv, size=nq)
    return scores, query_video


# ------------------------------------------------------------------------------------------------
# Single relevant video
# ------------------------------------------------------------------------------------------------

def test_hand_computed_ranks_and_metrics():
    scores = torch.tensor([[0.9, 0.1, 0.5],     # gt 0 on top            -> rank 1
                           [0.2, 0.2, 0.2],     # constant, gt 1         -> rank 3, 2 ties
                           [0.1, 0.3, 0.3]])    # gt 2 tied with video 1 -> rank 2, 1 tie
    result = evaluate(scores, [0, 1, 2])
    assert result.rank.tolist() == [1, 3, 2]
    assert result.ties.tolist() == [0, 2, 1]
    assert result.ap == pytest.approx([1.0, 1 / 3, 1 / 2])
    m = result.metrics()
    assert m["R1"] == pytest.approx(100 / 3)
    assert m["R5"] == m["R10"] == m["R100"] == 100.0
    assert m["SumR"] == pytest.approx(100 / 3 + 300)
    assert m["MedR"] == 2.0 and m["MeanR"] == 2.0
    assert m["mAP"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    assert m["tied_queries"] == 2 and m["n_queries"] == 3


def test_matches_loop_oracle_on_random_matrices():
    rng = np.random.default_rng(1234)
    for case in range(60):
        scores, query_video = random_case(rng)
        want_rank, want_ties, want_ap = oracle_single(scores, query_video)
        for chunk in CHUNKS:
            as_tensor = bool(case % 2)
            matrix = torch.from_numpy(scores).float() if as_tensor else scores
            if as_tensor:   # the oracle must see what the evaluator sees
                want_rank, want_ties, want_ap = oracle_single(matrix.numpy(), query_video)
            result = evaluate(matrix, query_video, query_chunk=chunk)
            np.testing.assert_array_equal(result.rank, want_rank, err_msg=f"case {case} chunk {chunk}")
            np.testing.assert_array_equal(result.ties, want_ties)
            np.testing.assert_allclose(result.ap, want_ap, rtol=0, atol=1e-15)
            assert_metrics_equal(result.metrics(), oracle_metrics(want_rank, want_ties, want_ap))


def test_ranks_at_k_boundaries_against_oracle():
    # Nv > 100 so that R100 and the 1..100 range are exercised.
    rng = np.random.default_rng(7)
    scores = np.round(rng.standard_normal((50, 300)), 2)
    query_video = rng.integers(0, 300, size=50)
    want = oracle_single(scores, query_video)
    result = evaluate(scores, query_video, query_chunk=16)
    np.testing.assert_array_equal(result.rank, want[0])
    assert_metrics_equal(result.metrics(), oracle_metrics(*want))


def test_constant_scorer_gets_the_worst_rank():
    nq, nv = 6, 9
    result = evaluate(np.full((nq, nv), 0.5), np.arange(nq) % nv, query_chunk=4)
    assert result.rank.tolist() == [nv] * nq
    assert result.ties.tolist() == [nv - 1] * nq
    m = result.metrics()
    assert m["R1"] == 0.0 and m["MedR"] == nv and m["tied_queries"] == nq


def test_tie_free_scores_equal_reference_argsort_rank():
    # docs/methods.md §1.5: the reference ranks by np.argsort(-S_i); with no ties they agree.
    rng = np.random.default_rng(3)
    scores = rng.permuted(np.tile(np.arange(50, dtype=np.float64), (20, 1)), axis=1)
    query_video = rng.integers(0, 50, size=20)
    reference = [int(np.flatnonzero(np.argsort(-scores[i]) == query_video[i])[0]) + 1
                 for i in range(20)]
    result = evaluate(scores, query_video, query_chunk=6)
    assert result.rank.tolist() == reference
    assert result.metrics()["tied_queries"] == 0


def test_dict_of_matrices_evaluates_every_key():
    rng = np.random.default_rng(5)
    scores, query_video = rng.standard_normal((12, 8)), rng.integers(0, 8, size=12)
    other = np.round(scores * -1.0, 0)
    result = evaluate({"score": scores, "frame": other}, query_video, query_chunk=5)
    assert result.keys == ["score", "frame"]
    np.testing.assert_array_equal(result["frame"].rank, oracle_single(other, query_video)[0])
    np.testing.assert_array_equal(result.rank, oracle_single(scores, query_video)[0])
    assert result.metrics("frame") != result.metrics("score")


# ------------------------------------------------------------------------------------------------
# Multi-positive relevance
# ------------------------------------------------------------------------------------------------

def test_multi_positive_hand_computed():
    scores = np.array([[0.9, 0.1, 0.5],
                       [0.3, 0.5, 0.5]])
    # query 0: relevant {0, 1}: order 0(rel) 2 1(rel) -> AP = (1/1 + 2/3) / 2, rank 1
    # query 1: relevant {1} (own) plus nothing: video 2 ties with 1 and goes first -> rank 2
    result = evaluate(scores, [0, 1], relevance=[np.array([1]), np.array([], dtype=np.int64)])
    assert result.relevance_mode == "multi"
    assert result.rank.tolist() == [1, 2]
    assert result.ties.tolist() == [0, 1]
    assert result.ap == pytest.approx([(1 + 2 / 3) / 2, 1 / 2])


def test_multi_positive_tie_groups_use_the_worst_order():
    # Relevant {0, 1} tied with irrelevant {2} at the top: worst order 2, 0, 1 -> 1/2, 2/3.
    result = evaluate(np.array([[1.0, 1.0, 1.0, 0.0]]), [0], relevance=[np.array([1])])
    assert result.rank.tolist() == [2]
    assert result.ties.tolist() == [1]
    assert result.ap == pytest.approx([(1 / 2 + 2 / 3) / 2])


def test_multi_positive_matches_loop_oracle():
    rng = np.random.default_rng(99)
    for case in range(40):
        scores, query_video = random_case(rng)
        nq, nv = scores.shape
        relevance = [rng.choice(nv, size=int(rng.integers(0, nv + 1)), replace=False)
                     for _ in range(nq)]
        sets = [set(map(int, r)) | {int(query_video[i])} for i, r in enumerate(relevance)]
        want = oracle_multi(scores, sets)
        for chunk in CHUNKS:
            result = evaluate(scores, query_video, relevance=relevance, query_chunk=chunk)
            np.testing.assert_array_equal(result.rank, want[0], err_msg=f"case {case} chunk {chunk}")
            np.testing.assert_array_equal(result.ties, want[1])
            np.testing.assert_allclose(result.ap, want[2], rtol=1e-12, atol=1e-12)
            assert_metrics_equal(result.metrics(), oracle_metrics(*want))


def test_multi_positive_with_only_own_video_equals_single_mode():
    rng = np.random.default_rng(11)
    scores = np.round(rng.standard_normal((25, 10)), 1)
    query_video = rng.integers(0, 10, size=25)
    single = evaluate(scores, query_video)
    multi = evaluate(scores, query_video, relevance=[np.array([q]) for q in query_video])
    np.testing.assert_array_equal(single.rank, multi.rank)
    np.testing.assert_array_equal(single.ties, multi.ties)
    np.testing.assert_allclose(single.ap, multi.ap, rtol=1e-15)


# ------------------------------------------------------------------------------------------------
# M/V breakdown
# ------------------------------------------------------------------------------------------------

def oracle_by_mv(ranks, ties, aps, mv, edges):
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        members = [i for i in range(len(mv)) if lo < round(mv[i], 6) <= hi]
        out[(lo, hi)] = members
    return out


def test_by_mv_matches_loop_oracle():
    rng = np.random.default_rng(21)
    scores = np.round(rng.standard_normal((300, 40)), 1)
    query_video = rng.integers(0, 40, size=300)
    mv = np.round(rng.choice([0.0, 0.2, 0.4, 1.0, 0.05, 0.6000000000000001], size=300)
                  * (rng.random(300) < 0.3) + rng.random(300) * (rng.random(300) >= 0.3), 6)
    mv = np.clip(mv, 0, 1)
    want_rank, want_ties, want_ap = oracle_single(scores, query_video)
    result = evaluate(scores, query_video, mv=mv, query_chunk=64)
    for edges in [(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), (0.0, 0.1, 0.2, 0.4, 0.6, 1.0)]:
        got = result.by_mv(edges)
        members = oracle_by_mv(want_rank, want_ties, want_ap, mv, edges)
        assert len(got) == len(edges) - 1
        for (label, metrics), ((lo, hi), idx) in zip(got.items(), members.items()):
            assert metrics["n_queries"] == len(idx), label
            assert idx, "the oracle should populate every bin in this case"
            assert_metrics_equal(metrics, oracle_metrics([want_rank[i] for i in idx],
                                                         [want_ties[i] for i in idx],
                                                         [want_ap[i] for i in idx]))
    assert list(result.by_mv()) == ["0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0"]


def test_by_mv_edge_values_land_in_the_lower_bin():
    scores = np.eye(4)
    mv = np.array([0.2, 1.0, 0.2000000000000001, 0.0])
    bins = evaluate(scores, np.arange(4), mv=mv).by_mv()
    assert bins["0.0-0.2"]["n_queries"] == 2      # 0.2 and float-noise 0.2 are in (0, 0.2]
    assert bins["0.8-1.0"]["n_queries"] == 1      # 1.0 in the last bin
    assert sum(b["n_queries"] for b in bins.values()) == 3   # M/V = 0 is in no bin


# ------------------------------------------------------------------------------------------------
# Persistence
# ------------------------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    scores = np.round(rng.standard_normal((30, 12)), 1)
    query_video = rng.integers(0, 12, size=30)
    ids = [f"vid{q}#enc#{i}" for i, q in enumerate(query_video)]
    mv = np.round(rng.random(30), 6)
    for kwargs in ({"mv": mv}, {"mv": None, "relevance": [np.array([0, 1])] * 30}):
        result = evaluate({"score": scores, "clip": -scores}, query_video, query_ids=ids,
                          synthetic=True, **kwargs)
        path = result.save(tmp_path / "eval.npz")
        assert path == tmp_path / "eval.npz" and path.exists()
        loaded = EvalResult.load(path)
        assert loaded.keys == ["score", "clip"]
        assert loaded.query_ids.tolist() == ids
        assert loaded.synthetic is True and loaded.relevance_mode == result.relevance_mode
        assert loaded.has_mv == result.has_mv
        if result.has_mv:
            np.testing.assert_array_equal(loaded.mv, mv)
            assert json.dumps(loaded.by_mv(), default=str) == json.dumps(result.by_mv(), default=str)
        for key in result.keys:
            for name in ("rank", "ties", "ap"):
                np.testing.assert_array_equal(getattr(loaded[key], name), getattr(result[key], name))
                assert getattr(loaded[key], name).dtype == getattr(result[key], name).dtype
            assert loaded.metrics(key) == result.metrics(key)


def test_to_dict_is_strict_json():
    result = evaluate(np.eye(3), np.arange(3), mv=np.array([0.1, 0.1, 0.9]))
    text = json.dumps(result.to_dict(per_query=True), allow_nan=False)
    back = json.loads(text)
    assert back["metrics"]["score"]["R1"] == 100.0
    assert back["by_mv"]["score"]["0.2-0.4"]["R1"] is None          # empty bin: NaN -> null
    assert back["by_mv"]["score"]["0.2-0.4"]["n_queries"] == 0
    assert back["per_query"]["score"]["rank"] == [1, 1, 1]


# ------------------------------------------------------------------------------------------------
# evaluate_method: a real tiny method and a small split object
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameEncoding(Encoding):
    frames: Tensor        # (B, T, D) projected frames, zero-padded
    mask: Tensor          # (B, T)


@dataclass(frozen=True)
class QueryEncoding(Encoding):
    vec: Tensor           # (Nq, D)


class MaxFrameMethod(PRVRMethod):
    """Separable score: the best cosine between the query and any valid frame of the video.
    Dropout makes a forgotten ``eval()`` visible as a mismatch between chunkings."""

    def __init__(self, dims: FeatureDims) -> None:
        super().__init__(MethodConfig(), dims)
        self.q_proj = nn.Linear(dims.query, 6)
        self.v_proj = nn.Linear(dims.video, 6)
        self.dropout = nn.Dropout(0.5)

    def encode_queries(self, queries: QueryBatch) -> QueryEncoding:
        pooled = (queries.tokens * queries.mask[..., None]).sum(1) / queries.mask.sum(1, keepdim=True)
        return QueryEncoding(vec=nn.functional.normalize(self.dropout(self.q_proj(pooled)), dim=-1))

    def encode_videos(self, videos: VideoBatch) -> FrameEncoding:
        frames = nn.functional.normalize(self.dropout(self.v_proj(videos.frames)), dim=-1)
        return FrameEncoding(frames=frames, mask=videos.frame_mask)

    def score(self, q: QueryEncoding, v: FrameEncoding) -> dict[str, Tensor]:
        cos = torch.einsum("qd,btd->qbt", q.vec, v.frames)                     # (q, b, T)
        cos = cos.masked_fill(v.mask[None] == 0, float("-inf"))
        best = cos.amax(dim=2)                                                 # (q, b)
        return {"score": best, "coarse": torch.round(best * 4) / 4}


class TinySplit:
    """The part of SplitData the evaluator reads, over random features; records every video
    index it serves so tests can check each video is encoded once."""

    def __init__(self, seed: int, num_videos: int = 11, queries_per_video: int = 3,
                 with_mv: bool = True) -> None:
        g = np.random.default_rng(seed)
        self.dims = FeatureDims(query=5, video=7)
        self.num_videos = num_videos
        self.query_video = np.repeat(np.arange(num_videos), queries_per_video).astype(np.int64)
        self.num_queries = len(self.query_video)
        self.cap_ids = [f"v{v}#enc#{k}" for v in range(num_videos) for k in range(queries_per_video)]
        self.video_ids = [f"v{v}" for v in range(num_videos)]
        self.mv = np.round(g.random(self.num_queries), 6) if with_mv else None
        self.synthetic = True
        self.relevance = None
        self.split = "test"
        self.n_frames = g.integers(1, 9, size=num_videos)
        self.n_tokens = g.integers(1, 6, size=self.num_queries)
        self.frames = g.standard_normal((num_videos, 8, 7)).astype(np.float32)
        self.tokens = g.standard_normal((self.num_queries, 5, 5)).astype(np.float32)
        self.served_videos: list[int] = []

    def video_batch(self, index: np.ndarray) -> VideoBatch:
        self.served_videos.extend(int(i) for i in index)
        t = int(self.n_frames[index].max())            # pad to the longest video of the batch
        mask = (np.arange(t)[None] < self.n_frames[index][:, None]).astype(np.float32)
        frames = self.frames[index, :t] * mask[..., None]
        return VideoBatch(frames=torch.from_numpy(frames), frame_mask=torch.from_numpy(mask))

    def query_batch(self, index: np.ndarray) -> QueryBatch:
        mask = (np.arange(5)[None] < self.n_tokens[index][:, None]).astype(np.float32)
        return QueryBatch(tokens=torch.from_numpy(self.tokens[index] * mask[..., None]),
                          mask=torch.from_numpy(mask))


def full_scores(method: MaxFrameMethod, split: TinySplit) -> dict[str, np.ndarray]:
    method.eval()
    with torch.no_grad():
        q = method.encode_queries(split.query_batch(np.arange(split.num_queries)))
        v = method.encode_videos(split.video_batch(np.arange(split.num_videos)))
        return {k: t.numpy() for k, t in method.score(q, v).items()}


def test_evaluate_method_chunked_equals_unchunked():
    torch.manual_seed(0)
    split = TinySplit(seed=4)
    method = MaxFrameMethod(split.dims)
    method.train()
    reference = evaluate(full_scores(method, split), split.query_video, mv=split.mv)
    method.train()
    for query_chunk, video_chunk in [(2048, None), (1, 1), (4, 3), (7, 5), (33, 11), (5, 100)]:
        split.served_videos.clear()
        result = evaluate_method(method, split, query_chunk=query_chunk, video_chunk=video_chunk)
        assert method.training, "evaluate_method must restore the train/eval mode"
        assert sorted(split.served_videos) == list(range(split.num_videos)), "encode each video once"
        assert result.keys == ["score", "coarse"]
        for key in result.keys:
            np.testing.assert_array_equal(result[key].rank, reference[key].rank,
                                          err_msg=f"{key} q{query_chunk} v{video_chunk}")
            np.testing.assert_array_equal(result[key].ties, reference[key].ties)
        assert result.metrics("coarse")["tied_queries"] > 0     # the rounded key really ties
        assert result.query_ids.tolist() == split.cap_ids
        np.testing.assert_array_equal(result.mv, split.mv)
        assert result.synthetic is True
        assert result.by_mv() == reference.by_mv()


def test_evaluate_method_matches_the_single_oracle():
    torch.manual_seed(1)
    split = TinySplit(seed=9, num_videos=6, queries_per_video=2, with_mv=False)
    method = MaxFrameMethod(split.dims)
    scores = full_scores(method, split)
    result = evaluate_method(method, split, query_chunk=5, video_chunk=4)
    want = oracle_single(scores["score"], split.query_video)
    np.testing.assert_array_equal(result.rank, want[0])
    assert not result.has_mv
    assert math.isclose(result.metrics()["mAP"], float(np.mean(want[2])))


def test_benchmark_yardstick_agrees_with_the_evaluator():
    # bench/evaluator.py times the reference-style loops; they must rank the same.
    from bench.evaluator import naive_rank_loop, naive_reference

    rng = np.random.default_rng(17)
    scores = rng.permuted(np.tile(np.arange(40, dtype=np.float32), (25, 1)), axis=1)
    query_video = rng.integers(0, 40, size=25)
    result = evaluate(scores, query_video, query_chunk=8)
    ranks, aps = naive_reference(scores, query_video)
    np.testing.assert_array_equal(result.rank, ranks)
    np.testing.assert_array_equal(naive_rank_loop(scores, query_video), ranks)
    np.testing.assert_allclose(result.ap, aps, rtol=1e-12)


def test_evaluate_method_multi_positive_uses_split_relevance():
    torch.manual_seed(2)
    split = TinySplit(seed=5, num_videos=7, queries_per_video=2)
    rng = np.random.default_rng(3)
    split.relevance = [rng.choice(7, size=int(rng.integers(0, 4)), replace=False)
                       for _ in range(split.num_queries)]
    method = MaxFrameMethod(split.dims)
    scores = full_scores(method, split)
    result = evaluate_method(method, split, query_chunk=3, video_chunk=2)
    assert result.relevance_mode == "multi"
    sets = [set(map(int, r)) | {int(split.query_video[i])} for i, r in enumerate(split.relevance)]
    for key in ("score", "coarse"):
        want = oracle_multi(scores[key], sets)
        np.testing.assert_array_equal(result[key].rank, want[0])
        np.testing.assert_allclose(result[key].ap, want[2], rtol=1e-12)


class BrokenScoreMethod(MaxFrameMethod):
    def __init__(self, dims, mode):
        super().__init__(dims)
        self.mode = mode

    def score(self, q, v):
        out = super().score(q, v)
        if self.mode == "no-score":
            return {"frame": out["score"]}
        if self.mode == "shape":
            return {"score": out["score"][:, :1]}
        if self.mode == "keys" and len(v) < 3:      # the last, shorter video chunk differs
            return {"score": out["score"]}
        return out


@pytest.mark.parametrize("mode, pattern", [
    ("no-score", "must return a dict with a 'score' entry"),
    ("shape", r"entry 'score' has shape \(4, 1\), expected \(4, 3\)"),
    ("keys", "returned keys"),
])
def test_evaluate_method_rejects_bad_score_dicts(mode, pattern):
    from benchmark.evaluate import EvalInputError

    split = TinySplit(seed=1, num_videos=8, queries_per_video=1)
    method = BrokenScoreMethod(split.dims, mode)
    method.train()
    with pytest.raises(EvalInputError, match=pattern):
        evaluate_method(method, split, query_chunk=4, video_chunk=3)
    assert method.training          # the mode is restored even when scoring fails
