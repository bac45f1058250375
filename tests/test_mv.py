"""M/V binning (benchmark/mv.py) against docs/datasets.md §1 and §4.5.

The last tests read the real per-query moments tables and skip when they are absent.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from benchmark.mv import DEFAULT_MV_EDGES, MVEdgesError, MVValueError, assign_bins, bin_labels, validate_edges

ANNOTATIONS = Path("/work/shared/data/annotations")


def oracle_bins(mv, edges):
    out = []
    for value in mv:
        value = round(float(value), 6)
        hit = [b for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])) if lo < value <= hi]
        out.append(hit[0] if hit else -1)
    return out


def test_default_edges_and_labels():
    assert DEFAULT_MV_EDGES == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert bin_labels() == ["0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0"]
    assert bin_labels([0, 0.1, 0.2, 0.4, 0.6, 1]) == ["0.0-0.1", "0.1-0.2", "0.2-0.4", "0.4-0.6",
                                                      "0.6-1.0"]
    assert bin_labels([0.0, 0.15, 1.0]) == ["0.0-0.15", "0.15-1.0"]


def test_right_closed_bins_on_and_between_edges():
    mv = np.array([0.0, 1e-6, 0.2, 0.2000004, 0.200001, 0.4, 0.5, 0.8, 0.800001, 1.0])
    assert assign_bins(mv).tolist() == [-1, 0, 0, 0, 1, 1, 2, 3, 4, 4]


def test_float_noise_is_rounded_before_comparing():
    # docs/datasets.md §1: [0, 90.71] in a 90.71000000000001 s video is M/V 1 -> last bin.
    noisy_one = 90.71 / 90.71000000000001
    assert noisy_one < 1.0
    noisy_edge = 0.6000000000000001
    assert assign_bins(np.array([noisy_one, noisy_edge, 0.19999999999])).tolist() == [4, 2, 0]


def test_values_outside_the_edges_are_in_no_bin():
    assert assign_bins(np.array([0.05, 0.1, 0.7, 0.75]), [0.1, 0.5, 0.7]).tolist() == [-1, -1, 1, -1]


def test_random_values_match_loop_oracle():
    rng = np.random.default_rng(0)
    for edges in [DEFAULT_MV_EDGES, (0.0, 0.1, 0.2, 0.4, 0.6, 1.0), (0.05, 0.3, 0.9)]:
        grid = np.array(edges + (0.0, 1.0))
        mv = np.concatenate([rng.random(500), rng.choice(grid, 100),
                             np.round(rng.random(200), 2)])
        assert assign_bins(mv, edges).tolist() == oracle_bins(mv, edges)


@pytest.mark.parametrize("edges, pattern", [
    ([0.0], "at least two"),
    ([0.0, 0.5, 0.5], "strictly increasing"),
    ([0.4, 0.2], "strictly increasing"),
    ([-0.1, 0.5], r"within \[0, 1\]"),
    ([0.0, 1.2], r"within \[0, 1\]"),
    ([0.0, float("nan")], "finite"),
    (["a", "b"], "not numbers"),
    ([[0.0, 1.0]], "flat list"),
])
def test_bad_edges_raise(edges, pattern):
    with pytest.raises(MVEdgesError, match=pattern):
        validate_edges(edges)
    with pytest.raises(MVEdgesError):
        bin_labels(edges)


@pytest.mark.parametrize("mv, pattern", [
    (np.array([0.1, np.nan]), "NaN for query index 1"),
    (np.array([0.1, 1.5]), r"query index 1 has 1.5"),
    (np.array([-0.2]), "query index 0"),
    (np.zeros((2, 2)), "flat"),
])
def test_bad_mv_values_raise(mv, pattern):
    with pytest.raises(MVValueError, match=pattern):
        assign_bins(mv)


# ------------------------------------------------------------------------------------------------
# Real moments tables (docs/datasets.md §4.5, §4.6, §5.6)
# ------------------------------------------------------------------------------------------------

TABLES = {
    "tvr": ("tvr/derived/tvr_prvr_test_moments.jsonl", [9298, 1000, 320, 128, 149]),
    "activitynet": ("activitynet/derived/activitynet_prvr_test_moments.jsonl",
                    [6714, 3988, 2604, 1069, 1378]),
    "charades": ("charades/derived/charades_prvr_test_moments.jsonl", [1077, 2113, 530, 0, 0]),
}


def _rows(name):
    path = ANNOTATIONS / TABLES[name][0]
    if not path.exists():
        pytest.skip(f"{path} absent")
    with path.open() as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.parametrize("name", list(TABLES))
def test_real_test_split_counts_and_labels(name):
    rows = _rows(name)
    mv = np.array([r["mv"] for r in rows])
    bins = assign_bins(mv)
    labels = bin_labels()
    assert np.bincount(bins[bins >= 0], minlength=5).tolist() == TABLES[name][1]
    # The table's own labels "(0.0,0.2]" name the same bin for every row.
    assert [f"({labels[b].replace('-', ',')}]" for b in bins] == [r["mv_bin"] for r in rows]


def test_tvr_raw_division_bins_like_the_rounded_values():
    # Plain float division misbins one TVR query (§1); assign_bins rounds, so counts hold.
    rows = _rows("tvr")
    raw = np.array([(min(r["ts"][1], r["duration"]) - max(r["ts"][0], 0.0)) / r["duration"]
                    for r in rows])
    unrounded = Counter(int(np.searchsorted(DEFAULT_MV_EDGES, v, side="left")) - 1 for v in raw)
    assert unrounded[0] == 9297                                  # the misbinned query
    assert np.bincount(assign_bins(raw), minlength=5).tolist() == TABLES["tvr"][1]
    assert int((np.round(raw, 6) == 1.0).sum()) == 43
    fine = assign_bins(raw, (0.0, 0.1, 0.2, 0.4, 0.6, 1.0))
    assert np.bincount(fine, minlength=5).tolist() == [7262, 2036, 1000, 320, 277]   # §4.6
