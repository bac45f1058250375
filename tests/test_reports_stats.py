"""reports: seed statistics, paired tests, M/V recomputation and published data (no MLflow)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmark.evaluate import EvalResult, KeyRanks, MVAbsentError
from benchmark.mv import MVEdgesError
from reports import mv as mvmod
from reports import published, stats


def _result(rank, mv=None, ids=None) -> EvalResult:
    rank = np.asarray(rank, dtype=np.int64)
    ids = np.arange(len(rank)).astype(np.str_) if ids is None else np.asarray(ids, dtype=np.str_)
    return EvalResult(per_key={"score": KeyRanks(rank, np.zeros_like(rank), 1.0 / rank)},
                      query_ids=ids, mv=mv, synthetic=True)


# ------------------------------------------------------------------------------ seed stats
def test_seed_stats_mean_and_sample_std():
    s = stats.seed_stats([10.0, 12.0, 17.0])
    assert s.n == 3
    assert s.mean == pytest.approx(13.0)
    assert s.std == pytest.approx(math.sqrt(((10 - 13) ** 2 + (12 - 13) ** 2 + (17 - 13) ** 2) / 2))
    one = stats.seed_stats([4.0])
    assert one.mean == 4.0 and math.isnan(one.std) and one.n == 1


# ------------------------------------------------------------------------------ paired tests
def test_identical_runs_are_not_significant():
    rng = np.random.default_rng(0)
    runs = [(s, _result(rng.integers(1, 100, 300))) for s in range(3)]
    t = stats.paired_test(runs, runs)
    assert t.test == "identical" and t.p_value == 1.0 and not t.significant and t.marker == ""
    assert t.pairing == "seed" and t.n_pairs == 900


def test_clearly_better_run_is_significant_and_direction_is_kept():
    rng = np.random.default_rng(1)
    base = [(s, _result(rng.integers(2, 100, 300))) for s in range(3)]
    better = [(s, _result(np.maximum(1, r.rank // 4))) for s, r in base]
    t = stats.paired_test(better, base)
    assert t.test == "wilcoxon" and t.pairing == "seed"
    assert t.significant and t.p_value < 1e-6 and t.marker == "**"
    assert t.mean_diff > 0
    assert stats.paired_test(base, better).mean_diff < 0


def test_noise_level_difference_is_not_significant():
    rng = np.random.default_rng(2)
    a = [(0, _result(rng.integers(1, 100, 400)))]
    b = [(0, _result(rng.integers(1, 100, 400)))]      # independent draws, same distribution
    t = stats.paired_test(a, b)
    assert t.test == "wilcoxon" and t.p_value > 0.05


def test_different_seeds_are_not_paired():
    rng = np.random.default_rng(3)
    rank = rng.integers(1, 50, 200)
    a = [(5, _result(rank)), (6, _result(rank))]
    b = [(0, _result(rank)), (1, _result(rank)), (2, _result(rank))]
    with pytest.raises(stats.SeedMismatchError, match=r"seeds \{5, 6\} vs \{0, 1, 2\}"):
        stats.paired_test(a, b)
    # the same seed twice on one side is no pairing either
    with pytest.raises(stats.SeedMismatchError):
        stats.paired_test([(0, _result(rank)), (0, _result(rank))],
                          [(0, _result(rank)), (0, _result(rank))])
    assert isinstance(stats.SeedMismatchError("x"), stats.PairingError)


def test_seed_interval_is_the_student_t_half_width():
    # n = 3, mean 13, s = sqrt(13); t_{0.975, 2} = 4.302652729...
    assert stats.seed_interval([10.0, 12.0, 17.0]) == pytest.approx(
        4.302652729911275 * math.sqrt(13.0) / math.sqrt(3.0))
    assert math.isnan(stats.seed_interval([4.0]))


def test_bootstrap_fallback_with_few_differences():
    rank = np.full(100, 10)
    better = rank.copy()
    better[:4] = 1                                    # 4 differing queries < MIN_WILCOXON
    t = stats.paired_test([(0, _result(better))], [(0, _result(rank))])
    assert t.test == "bootstrap" and 0.0 < t.p_value <= 1.0
    assert "bootstrap" in stats.describe_tests([t])
    # a symmetric difference has a mean of zero: p = 1
    assert stats.bootstrap_p(np.array([1.0, -1.0, 0.0, 0.0])) == 1.0


def test_bootstrap_p_matches_a_loop_oracle():
    rng = np.random.default_rng(4)
    diff = rng.normal(0.05, 0.2, 60)
    p = stats.bootstrap_p(diff, n_boot=2000, seed=7, block=300)
    # oracle: same draws in one block, loop over resamples
    g = np.random.default_rng(7)
    hits = 0
    for start in range(0, 2000, 300):
        idx = g.integers(0, 60, size=(min(300, 2000 - start), 60))
        for row in idx:
            hits += abs(diff[row].mean() - diff.mean()) >= abs(diff.mean())
    assert p == pytest.approx((1 + hits) / 2001)


def test_pairing_needs_the_same_queries():
    a = [(0, _result([1, 2, 3], ids=["a", "b", "c"]))]
    b = [(0, _result([1, 2, 3], ids=["a", "c", "b"]))]
    with pytest.raises(stats.PairingError, match="different test queries"):
        stats.paired_test(a, b)


def test_significance_markers():
    assert stats.significance_marker(0.001) == "**"
    assert stats.significance_marker(0.03) == "*"
    assert stats.significance_marker(0.2) == ""
    assert stats.significance_marker(math.nan) == ""


def test_row_keys_split_sweep_trials_but_pool_seeds():
    frame = pd.DataFrame({
        "collection": ["tvr"] * 4, "variant": ["kdc-net"] * 2 + ["ms-sl"] * 2,
        "param.method.krd.window": [3, 5, np.nan, np.nan], "seed": [0, 1, 0, 1]})
    out = stats.add_row_keys(frame)
    assert list(out["row"]) == ["kdc-net [krd.window=3]", "kdc-net [krd.window=5]", "ms-sl", "ms-sl"]


# ------------------------------------------------------------------------------ M/V
def test_by_mv_empty_bin_and_hand_case():
    res = _result([1, 20, 3, 200], mv=np.array([0.05, 0.15, 0.15, 1.0]))
    out = res.by_mv((0, 0.1, 0.2, 0.5, 1.0))
    assert out["0.0-0.1"]["R1"] == 100.0 and out["0.0-0.1"]["n_queries"] == 1
    assert out["0.1-0.2"]["R5"] == 50.0 and out["0.1-0.2"]["R100"] == 100.0
    assert out["0.2-0.5"]["n_queries"] == 0 and math.isnan(out["0.2-0.5"]["SumR"])
    assert out["0.5-1.0"]["R100"] == 0.0 and out["0.5-1.0"]["SumR"] == 0.0


def test_by_mv_without_mv_says_absent():
    with pytest.raises(MVAbsentError, match="absent"):
        _result([1, 2]).by_mv(None)


def test_parse_edges_and_quantiles():
    assert mvmod.parse_edges("0,0.1,0.2,0.4,0.6,1") == (0.0, 0.1, 0.2, 0.4, 0.6, 1.0)
    with pytest.raises(MVEdgesError):
        mvmod.parse_edges("0,0.5,0.4")
    with pytest.raises(MVEdgesError):
        mvmod.parse_edges("0,a,1")
    q = mvmod.quantile_edges(np.linspace(0.01, 1, 100))
    assert q[0] == 0.0 and q[-1] == 1.0 and len(q) == 6


# ------------------------------------------------------------------------------ published
def test_published_sums_add_up():
    """Every complete published row: SumR = R@1 + R@5 + R@10 + R@100 (rounding only)."""
    checked = 0
    for row in published.PUBLISHED:
        for collection, res in row.results.items():
            if None in res:
                continue
            assert sum(res[:4]) == pytest.approx(res[4], abs=0.25), (row.method, collection)
            checked += 1
    assert checked > 40


def test_published_main_rows_and_no_kdc_net():
    assert published.HARNESS_TO_PUBLISHED["ms-sl"].results["tvr"][4] == 172.3
    assert published.HARNESS_TO_PUBLISHED["dl-dkd++"].results["activitynet"][4] == 149.9
    assert "charades" not in published.HARNESS_TO_PUBLISHED["dl-dkd"].results
    assert "kdc-net" not in published.HARNESS_TO_PUBLISHED
    assert all("KDC" not in r.method for r in published.PUBLISHED)


def test_published_comparison_refuses_synthetic_lines():
    summary = pd.DataFrame([{"collection": "tvr", "row": "ms-sl", "method": "ms-sl",
                             "variant": "ms-sl", "synthetic": True, "row_params": {}, "n": 3,
                             **{f"{m}_mean": 1.0 for m in published.PUBLISHED_METRICS}}])
    with pytest.raises(published.SyntheticComparisonError, match="never placed next"):
        published.comparison(summary, "tvr")
    real = summary.assign(synthetic=False, SumR_mean=170.0)
    comp = published.comparison(real, "tvr")
    mine = comp[comp["kind"] == "reproduced"]
    assert list(mine["method"]) == ["MS-SL"]
    assert mine["delta_SumR"].iloc[0] == pytest.approx(170.0 - 172.3)
