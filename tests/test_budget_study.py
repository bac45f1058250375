"""The budget study's ranking table (sweeps/budget_study.py): Kendall τ of each budget's
ranking of the grid against the long budget's, over the settings every budget completed."""
from __future__ import annotations

import pytest

from benchmark.errors import PRVRBenchError
from sweeps import budget_study as bs


def test_grid_labels_are_distinct_and_cover_the_space():
    labels = [bs.setting_label(s) for s in bs.SETTINGS]
    assert len(set(labels)) == len(labels) >= 5
    assert {s["method.kd_decay.kind"] for s in bs.SETTINGS} == {"constant", "exp", "linear", "sigmoid"}


def test_tau_is_one_for_the_same_order_and_minus_one_for_the_reverse():
    long = {"a": 300.0, "b": 290.0, "c": 280.0, "d": 270.0}
    scores = {"same": {"a": 10.0, "b": 9.0, "c": 8.0, "d": 7.0},
              "reverse": {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0},
              "long-progress": long}
    table, summary = bs.ranking_table(scores, {k: 60.0 for k in scores}, "long-progress", 0, "x")
    assert summary["kendall"]["same"]["tau"] == pytest.approx(1.0)
    assert summary["kendall"]["reverse"]["tau"] == pytest.approx(-1.0)
    assert "| same | 1.000 |" in table and "| reverse | -1.000 |" in table


def test_only_settings_every_budget_completed_are_ranked_and_the_rest_are_named():
    scores = {"short": {"a": 1.0, "b": 2.0, "c": 3.0, "extra": 9.0},
              "long-progress": {"a": 1.0, "b": 2.0, "c": 3.0}}
    table, summary = bs.ranking_table(scores, {"short": 1.0, "long-progress": 1.0},
                                      "long-progress", 0, "x")
    assert summary["compared"] == ["c", "b", "a"]
    assert "Also completed in short only" in table and "extra" in table
    with pytest.raises(PRVRBenchError, match="only 1 setting"):
        bs.ranking_table({"short": {"a": 1.0}, "long-progress": {"a": 2.0, "b": 1.0}},
                         {"short": 1.0, "long-progress": 1.0}, "long-progress", 0, "x")
