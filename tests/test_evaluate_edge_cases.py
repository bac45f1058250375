"""Evaluator edge cases: NaN, degenerate scorers, empty bins, missing M/V, bad inputs, devices."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.evaluate import EvalInputError, EvalResult, MVAbsentError, evaluate
from benchmark.ranks import NaNScoreError, multi_positive_block, rank_block


def test_nan_error_names_the_first_affected_global_query():
    scores = np.random.default_rng(0).standard_normal((10, 4))
    scores[7, 2] = np.nan
    scores[9, 0] = np.nan
    with pytest.raises(NaNScoreError, match=r"query index 7\b") as info:
        evaluate(scores, np.zeros(10, np.int64), query_chunk=3)   # NaN sits in the third block
    assert info.value.query_index == 7
    assert isinstance(info.value, ValueError)


def test_nan_error_names_the_score_key():
    good = np.eye(3)
    bad = np.eye(3)
    bad[0, 1] = np.nan
    with pytest.raises(NaNScoreError, match=r"'frame'.*query index 0"):
        evaluate({"score": good, "frame": bad}, np.arange(3))


def test_nan_error_in_multi_positive_mode():
    scores = torch.zeros(4, 3)
    scores[2, 0] = float("nan")
    with pytest.raises(NaNScoreError, match="query index 2"):
        evaluate(scores, [0, 1, 2, 0], relevance=[np.array([1])] * 4)


def test_nan_in_a_non_relevant_column_still_raises():
    with pytest.raises(NaNScoreError):
        rank_block(torch.tensor([[1.0, float("nan")]]), torch.tensor([0]))


def test_constant_scorer_worst_rank_in_multi_mode():
    result = evaluate(np.ones((3, 5)), [0, 1, 2], relevance=[np.array([4])] * 3)
    # two relevant videos, three irrelevant tied ahead of them -> rank 4, AP (1/4 + 2/5) / 2
    assert result.rank.tolist() == [4, 4, 4]
    assert result.ties.tolist() == [3, 3, 3]
    assert result.ap == pytest.approx([(1 / 4 + 2 / 5) / 2] * 3)


def test_infinite_scores_rank_like_numbers():
    inf = float("inf")
    scores = torch.tensor([[inf, 1.0, -inf], [-inf, -inf, 0.0], [inf, inf, 0.0]])
    result = evaluate(scores, [0, 0, 1])
    assert result.rank.tolist() == [1, 3, 2]
    assert result.ties.tolist() == [0, 1, 1]


def test_single_video_and_single_query():
    result = evaluate(np.array([[0.3]]), [0])
    assert result.rank.tolist() == [1] and result.ties.tolist() == [0]
    assert result.metrics()["SumR"] == 400.0


def test_zero_queries_gives_nan_metrics():
    result = evaluate(np.zeros((0, 4)), np.zeros(0, np.int64))
    m = result.metrics()
    assert m["n_queries"] == 0 and m["tied_queries"] == 0
    assert math.isnan(m["R1"]) and math.isnan(m["SumR"]) and math.isnan(m["MedR"])


def test_empty_bins_report_zero_queries_and_nan():
    mv = np.array([0.1, 0.15, 0.45])
    bins = evaluate(np.eye(3), np.arange(3), mv=mv).by_mv()
    assert [b["n_queries"] for b in bins.values()] == [2, 0, 1, 0, 0]
    for label in ("0.2-0.4", "0.6-0.8", "0.8-1.0"):
        assert all(math.isnan(bins[label][k]) for k in ("R1", "SumR", "MedR", "MeanR", "mAP"))
        assert bins[label]["tied_queries"] == 0
    assert bins["0.0-0.2"]["R1"] == 100.0


def test_missing_mv_breakdown_says_it_is_absent():
    result = evaluate(np.eye(3), np.arange(3))
    assert not result.has_mv
    with pytest.raises(MVAbsentError, match="M/V breakdown absent: no moments table"):
        result.by_mv()
    assert result.to_dict()["by_mv"] is None


def test_custom_edges_and_bad_edges():
    mv = np.array([0.05, 0.1, 0.3, 1.0])
    result = evaluate(np.eye(4), np.arange(4), mv=mv)
    bins = result.by_mv([0.0, 0.1, 0.2, 1.0])
    assert list(bins) == ["0.0-0.1", "0.1-0.2", "0.2-1.0"]
    assert [b["n_queries"] for b in bins.values()] == [2, 0, 2]
    with pytest.raises(ValueError, match="strictly increasing"):
        result.by_mv([0.0, 0.5, 0.4])


@pytest.mark.parametrize("kwargs, pattern", [
    ({"query_video": [0, 1]}, r"query_video has shape \(2,\), expected \(3,\)"),
    ({"query_video": [0, 1, 4]}, r"query_video\[2\] = 4 is outside \[0, 4\)"),
    ({"query_video": [0, 1, -1]}, r"query_video\[2\] = -1"),
    ({"query_video": [0.0, 1.0, 2.0]}, "integer video indices"),
    ({"mv": [0.1, 0.2]}, r"mv has shape"),
    ({"query_ids": ["a", "b"]}, "query_ids has 2 entries"),
    ({"query_chunk": 0}, "query_chunk must be a positive integer"),
    ({"relevance": [np.array([0])] * 2}, "relevance has 2 entries"),
    ({"relevance": [np.array([0]), np.array([9]), np.array([1])]},
     r"relevance of query index 1 names video index 9"),
])
def test_bad_inputs_raise_clear_errors(kwargs, pattern):
    args = {"query_video": [0, 1, 2], **kwargs}
    with pytest.raises(EvalInputError, match=pattern):
        evaluate(np.eye(3, 4), args.pop("query_video"), **args)


def test_bad_score_containers():
    with pytest.raises(EvalInputError, match="2-D"):
        evaluate(np.zeros(3), [0, 0, 0])
    with pytest.raises(EvalInputError, match=r"'frame' has shape \(3, 2\)"):
        evaluate({"score": np.eye(3), "frame": np.zeros((3, 2))}, [0, 1, 2])
    with pytest.raises(EvalInputError, match="empty dict"):
        evaluate({}, [0])
    with pytest.raises(EvalInputError, match="tensor or numpy array"):
        evaluate([[1.0, 0.0]], [0])
    with pytest.raises(EvalInputError, match="numeric"):
        evaluate(np.array([["a", "b"]]), [0])
    with pytest.raises(EvalInputError, match="real numbers"):
        evaluate(torch.ones(1, 2, dtype=torch.bool), [0])
    with pytest.raises(EvalInputError, match="zero videos"):
        evaluate(np.zeros((2, 0)), [0, 0])


def test_multi_positive_kernel_rejects_a_query_without_relevant_video():
    with pytest.raises(ValueError, match="query index 6 has no relevant video"):
        multi_positive_block(torch.zeros(2, 3), torch.tensor([[True, False, False],
                                                              [False, False, False]]), offset=5)


def test_low_precision_and_integer_scores():
    scores = torch.tensor([[3, 1, 3], [0, 2, 1]])
    for matrix in (scores, scores.half(), scores.bfloat16(), scores.numpy().astype(np.int16)):
        result = evaluate(matrix, [0, 2])
        assert result.rank.tolist() == [2, 2] and result.ties.tolist() == [1, 0]


def test_load_rejects_foreign_files(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.arange(3))
    with pytest.raises(EvalInputError, match="not a prvr-bench EvalResult"):
        EvalResult.load(path)
    with pytest.raises(EvalInputError, match="cannot read"):
        EvalResult.load(tmp_path / "missing.npz")


def test_save_writes_exactly_the_given_name(tmp_path):
    path = evaluate(np.eye(2), [0, 1]).save(tmp_path / "sub" / "ranks.data")
    assert path.name == "ranks.data" and path.exists()
    assert [p.name for p in path.parent.iterdir()] == ["ranks.data"]   # no temp file left
    assert EvalResult.load(path).rank.tolist() == [1, 1]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_blocks_match_cpu():
    g = torch.Generator().manual_seed(0)
    scores = torch.round(torch.randn(300, 50, generator=g), decimals=1)
    query_video = torch.randint(0, 50, (300,), generator=g)
    relevance = [np.array([int(v), (int(v) + 1) % 50]) for v in query_video]
    for rel in (None, relevance):
        cpu = evaluate(scores, query_video, relevance=rel, query_chunk=64)
        gpu = evaluate(scores.cuda(), query_video.cuda(), relevance=rel, query_chunk=64)
        np.testing.assert_array_equal(cpu.rank, gpu.rank)
        np.testing.assert_array_equal(cpu.ties, gpu.ties)
        np.testing.assert_allclose(cpu.ap, gpu.ap, rtol=1e-12)
