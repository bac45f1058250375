"""A report claims only what its data supports (issue 14 item 2, issue 16 item 2), on real
SQLite MLflow stores written by the project's tracking code and a real Optuna study. All
ranks are synthetic (drawn here), labelled synthetic.

* significance markers only on paired comparisons (same seeds, same queries), with a store
  built to tempt a naive test;
* sensitivity figures: one point per configuration, never joined, log axis for log knobs;
* heatmaps: every cell shows its value and count, or says it is empty;
* M/V: bootstrap intervals over queries, n per bin, and one set of default edges;
* budgets: the clock and epoch budget in captions; mixed budgets listed or refused.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
import pytest
from scipy import stats as sps

from benchmark import naming, tracking
from benchmark.config import EvalConfig
from benchmark.data import profiles
from benchmark.evaluate import EvalResult, KeyRanks
from benchmark.mv import DEFAULT_MV_EDGES, bin_labels
from benchmark.naming import Tag, TrialStateTag
from benchmark.views import split_view
from reports import budget, build, plots, tables
from reports import mv as mvmod
from reports.collect import Selection, collect
from reports.stats import add_row_keys

ROOT = Path(__file__).resolve().parents[1]
NQ = 300
PROGRESS = {"train.schedule_clock": "progress", "train.epochs": 4, "train.reference_epochs": 120}


def _result(rank: np.ndarray, mv: np.ndarray) -> EvalResult:
    rank = np.asarray(rank, dtype=np.int64)
    return EvalResult(per_key={"score": KeyRanks(rank, np.zeros_like(rank), 1.0 / rank)},
                      query_ids=np.array([f"q{i}" for i in range(len(rank))]), mv=mv,
                      synthetic=True)


def _log(uri: str, tmp: Path, variant: str, seed: int, test: EvalResult, *,
         params: dict | None = None, val_sumr: float | None = None, parent: str | None = None,
         extra_tags: dict | None = None) -> str:
    """One finished synthetic run with its ranks artifacts, as the training loop leaves it."""
    method = variant.split(".")[0]
    identity = naming.RunIdentity(method=method, variant=variant, collection="tvr",
                                  synthetic=True, seed=seed,
                                  experiment=naming.experiment_name("tvr", True),
                                  reconstruction=False, extra_tags=extra_tags or {})
    run = tracking.open_identified_run(uri, identity, parent_run_id=parent)
    run.log_params({"seed": seed, "eval.mv_edges": list(EvalConfig().mv_edges), **(params or {})})
    run.log_metrics(split_view(test, "test", EvalConfig().mv_edges).flat())
    if val_sumr is not None:
        run.log_metrics({"val/SumR": val_sumr}, step=0)
    d = tmp / run.run_id
    run.log_artifact(test.save(d / "ranks_test.npz"))
    if val_sumr is None:
        run.log_artifact(test.save(d / "ranks_val.npz"))
    run.end("FINISHED")
    return run.run_id


@pytest.fixture(scope="module")
def tempting(tmp_path_factory):
    """Rows a naive test would call significant although they are not paired, next to one
    truly paired comparison:

    * ``ms-sl`` seeds {0, 1}; ``ms-sl.paired`` seeds {0, 1}, ranks / 5: paired, significant;
    * ``ms-sl.lucky`` seeds {5, 6}, ranks / 5: same effect, different seeds: no marker;
    * ``dl-dkd++`` trials, one run each with seed = trial number (as a sweep whose seed follows
      the trial), the best trial far ahead of the others: no marker.
    """
    tmp = tmp_path_factory.mktemp("honest")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    rng = np.random.default_rng(11)
    mv = np.round(rng.uniform(0.005, 1.0, NQ), 6)
    base = {s: rng.integers(5, 200, NQ) for s in (0, 1, 5, 6)}
    for s in (0, 1):
        _log(uri, tmp, "ms-sl", s, _result(base[s], mv), params=PROGRESS)
        _log(uri, tmp, "ms-sl.paired", s, _result(np.maximum(1, base[s] // 5), mv), params=PROGRESS)
    for s in (5, 6):
        _log(uri, tmp, "ms-sl.lucky", s, _result(np.maximum(1, base[s] // 5), mv), params=PROGRESS)
    trials = {}
    for trial, (tau, shrink) in enumerate([(0.1, 1), (0.3, 6), (1.0, 1)]):
        rank = np.maximum(1, rng.integers(5, 200, NQ) // shrink)
        trials[tau] = _result(rank, mv)
        _log(uri, tmp, "dl-dkd++", trial, trials[tau], params={**PROGRESS,
                                                                "method.kd_temperature": tau})
    got = collect(Selection(tracking_uri=uri), tmp / "cache")
    return {"tmp": tmp, "uri": uri, "collected": got, "trials": trials, "mv": mv}


@pytest.fixture(scope="module")
def tempting_report(tempting):
    """The report folder of the tempting store."""
    out = tempting["tmp"] / "report"
    build.build_report(Selection(tracking_uri=tempting["uri"]), out, log_to_mlflow=False)
    return out


# ------------------------------------------------------------------------------ significance
def _line(md: str, row: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| {row} |"))


def _sumr_cell(md: str, row: str) -> str:
    """The SumR cell of ``row`` (| Method | R@1 | R@5 | R@10 | R@100 | SumR | n |), unbolded."""
    cell = _line(md, row).split("|")[6].strip()
    return cell[2:-2] if cell.startswith("**") else cell


def test_the_store_tempts_a_naive_test(tempting):
    """The unpaired best trial is far ahead: a Wilcoxon test run anyway would call it
    significant, so the absence of a marker below is the pairing rule's doing."""
    best, other = tempting["trials"][0.3], tempting["trials"][0.1]
    p = sps.wilcoxon(1.0 / best.rank - 1.0 / other.rank).pvalue  # pyright: ignore[reportAttributeAccessIssue]
    assert p < 1e-6


def test_unpaired_rows_get_no_marker_and_the_caption_says_why(tempting):
    table = tables.build_ablation(tempting["collected"])
    rows = {r.row: r for r in table.rows}
    lucky = rows["ms-sl.lucky"]
    trial_rows = [r for r in rows if r.startswith("dl-dkd++ [")]
    assert len(trial_rows) == 3
    for r in ["ms-sl.lucky"] + trial_rows:
        if rows[r].is_base["tvr"]:
            continue
        assert rows[r].tests == {}, r
    md = tables.to_markdown(table)
    assert _sumr_cell(md, "ms-sl.lucky").endswith(")")             # "... (+90.2)", no marker
    for r in trial_rows:
        if not rows[r].is_base["tvr"]:
            assert _sumr_cell(md, r).endswith(")"), r
    assert lucky.cells["tvr"]["SumR"].delta > 20            # a large, unmarked difference
    assert "ms-sl.lucky vs ms-sl: seeds {5, 6} vs {0, 1}" in table.caption
    assert "dl-dkd++ [kd_temperature=0.1] vs dl-dkd++ [kd_temperature=0.3]: seeds {0} vs {1}" \
        in table.caption
    assert "a test needs the same seeds and the same queries on both sides" in table.caption
    csv = table.tests.set_index("row")
    assert csv.loc["ms-sl.lucky", "test"] == "none"
    assert csv.loc["ms-sl.lucky", "reason"] == "seeds {5, 6} vs {0, 1}"


def test_a_paired_comparison_gets_its_marker(tempting):
    table = tables.build_ablation(tempting["collected"])
    paired = {r.row: r for r in table.rows}["ms-sl.paired"]
    t = paired.tests["tvr"]
    assert t.pairing == "seed" and t.n_pairs == 2 * NQ and t.marker == "**"
    assert _sumr_cell(tables.to_markdown(table), "ms-sl.paired").endswith(")**")
    assert "Wilcoxon signed-rank" in table.caption


def test_tests_csv_of_the_report_lists_unpaired_rows(tempting_report):
    out = tempting_report
    csv = pd.read_csv(out / "tables" / "tests.csv")
    none = csv.loc[csv["test"] == "none"]
    assert set(none["row"]) >= {"ms-sl.lucky"} and none["p_value"].isna().all()
    assert csv.loc[csv["row"] == "ms-sl.paired", "test"].item() == "wilcoxon"


# ------------------------------------------------------------------------------ budgets
def test_captions_print_clock_and_budget(tempting, tempting_report):
    table = tables.build_ablation(tempting["collected"])
    assert "Budget: clock: progress, 4 epochs of E_ref=120." in table.caption
    out = tempting_report
    assert "clock: progress, 4 epochs of E_ref=120" in (out / "tables" / "mv_tvr.md").read_text()
    index = (out / "index.md").read_text()
    sweep_caption = next(line for line in index.splitlines() if line.startswith("*Each point"))
    assert "Budget: clock: progress, 4 epochs of E_ref=120." in sweep_caption


def test_old_runs_read_as_the_epoch_clock():
    b = budget.budget_of({"train.epochs": "100"}, "old-run")
    assert b.label == "clock: epoch, 100 epochs"
    assert budget.budget_of({}, "r").label == "clock: epoch, epochs not recorded"
    with pytest.raises(budget.BudgetParamError, match=r"run r: MLflow param 'train.schedule_clock'"):
        budget.budget_of({"train.schedule_clock": "wallclock"}, "r")
    with pytest.raises(budget.BudgetParamError, match="'train.epochs' = '4.5'"):
        budget.budget_of({"train.epochs": "4.5"}, "r")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A study whose trials ran different budgets (a reopened study after the clock changed),
    and an ablation whose methods ran different budgets."""
    tmp = tmp_path_factory.mktemp("mixed")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    storage = f"sqlite:///{tmp / 'optuna.db'}"
    study_name = "mixed-budget-synthetic"
    with tracking.open_run(tracking_uri=uri, experiment="tvr-synthetic", run_name=study_name,
                           tags=naming.study_tags(study=study_name, spec="kd-decay-temperature",
                                                  collection="tvr", synthetic=True,
                                                  method="dl-dkd++", storage=storage)) as parent:
        parent_id = parent.run_id
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize")
    dist = {"method.kd_temperature": optuna.distributions.FloatDistribution(0.05, 2.0, log=True)}
    rng = np.random.default_rng(3)
    mv = np.round(rng.uniform(0.005, 1.0, 120), 6)
    ids = {}
    for n, (tau, params) in enumerate([(0.1, {"train.epochs": 4}), (0.3, PROGRESS),
                                       (1.0, PROGRESS)]):
        r = _result(rng.integers(1, 100, 120), mv)
        rid = _log(uri, tmp, "dl-dkd++", 0, r, parent=parent_id,
                   params={**params, "method.kd_temperature": tau},
                   extra_tags={Tag.STUDY: study_name, Tag.TRIAL: str(n),
                               Tag.TRIAL_STATE: TrialStateTag.COMPLETE})
        ids[n] = rid[:8]
        study.add_trial(optuna.trial.create_trial(params={"method.kd_temperature": tau},
                                                  distributions=dist, value=r.metrics()["SumR"],
                                                  user_attrs={"mlflow_run_id": rid}))
    return {"tmp": tmp, "uri": uri, "storage": storage, "ids": ids}


def test_a_sweep_of_mixed_budgets_is_refused_naming_the_runs(mixed):
    out = mixed["tmp"] / "report"
    res = build.build_report(Selection(tracking_uri=mixed["uri"]), out, storage=mixed["storage"],
                             log_to_mlflow=False)
    index = (out / "index.md").read_text()
    refusal = next(line for line in index.splitlines() if "refused" in line)
    assert "Sweep table and figures refused: its runs ran different budgets" in refusal
    epoch, progress = refusal.split("clock: epoch, 4 epochs: ")[1].split("; clock: progress, "
                                                                          "4 epochs of E_ref=120: ")
    assert f"({mixed['ids'][0]})" in epoch
    assert f"({mixed['ids'][1]})" in progress and f"({mixed['ids'][2]})" in progress
    assert not list((out / "figures").glob("curve_*")) and not (out / "tables" / "sweep.md").exists()
    assert any("refused" in n for n in res.notes)
    # the ablation table keeps the trials apart and lists the budgets in its caption
    caption = res.ablation.caption
    assert "Budgets differ across rows: clock: epoch, 4 epochs (dl-dkd++ [kd_temperature=0.1; " \
           "clock: epoch, 4 epochs]); clock: progress, 4 epochs of E_ref=120 (dl-dkd++ " \
           "[kd_temperature=0.3; clock: progress" in caption


def test_runs_of_one_variant_and_different_budgets_are_different_rows(mixed):
    got = collect(Selection(tracking_uri=mixed["uri"], tags={Tag.STUDY: "mixed-budget-synthetic"}),
                  mixed["tmp"] / "cache")
    frame = got.frame.drop(columns=[c for c in got.frame.columns if c.startswith("param.")])
    rows = sorted(set(add_row_keys(frame)["row"]))
    assert rows == ["dl-dkd++ [clock: epoch, 4 epochs]",
                    "dl-dkd++ [clock: progress, 4 epochs of E_ref=120]"]
    with pytest.raises(budget.MixedBudgetError, match="different budgets"):
        budget.single_budget(got.frame, "this figure")
    # a budget field that is a swept knob of the comparison may vary
    assert budget.single_budget(got.frame.loc[got.frame["schedule_clock"] == "progress"],
                                "x") == "clock: progress, 4 epochs of E_ref=120"


# ------------------------------------------------------------------------------ figures
def _sweep_frame() -> pd.DataFrame:
    """Synthetic sweep frame: τ (log knob) × decay kind; τ = 0.3 ran two seeds."""
    rows = [(0.05, "exp", 0, 250.0), (0.3, "linear", 1, 300.0), (0.3, "linear", 2, 290.0),
            (2.0, "exp", 3, 260.0), (0.3, "exp", 4, 270.0)]
    frame = pd.DataFrame({"collection": "tvr", "variant": "dl-dkd++",
                          "param.method.kd_temperature": [r[0] for r in rows],
                          "param.method.kd_decay.kind": [r[1] for r in rows],
                          "seed": [r[2] for r in rows], "val/SumR": [r[3] for r in rows]})
    return add_row_keys(frame)


def test_sensitivity_points_are_never_joined_and_log_knobs_get_a_log_axis():
    fig = plots.sensitivity_figure(_sweep_frame(), "param.method.kd_temperature", "t",
                                   log=True, log_knobs=frozenset({"param.method.kd_temperature"}))
    ax = fig.axes[0]
    try:
        assert ax.get_xscale() == "log"
        for line in ax.get_lines():                      # error-bar caps only, never a path
            assert line.get_linestyle() == "None" or len(line.get_xdata()) <= 1
        # one coloured point per configuration (4: the two τ = 0.3 linear seeds are one), in
        # one colour per decay kind; the seeds as their own grey dots
        sizes = {len(c.get_offsets()) for c in ax.collections if c.get_label() != "seed"}
        assert sum(len(c.get_offsets()) for c in ax.collections
                   if c.get_label() in ("kd_decay.kind=exp", "kd_decay.kind=linear")) == 4
        assert sizes and max(sizes) <= 4
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert {"kd_decay.kind=exp", "kd_decay.kind=linear", "seed"} <= set(labels)
        linear = next(c for c in ax.collections if c.get_label() == "kd_decay.kind=linear")
        assert linear.get_offsets()[0].tolist() == [0.3, 295.0]          # mean of two seeds
    finally:
        plt.close(fig)
    fig = plots.sensitivity_figure(_sweep_frame(), "param.method.kd_temperature", "t")
    assert fig.axes[0].get_xscale() == "linear"
    plt.close(fig)


def test_a_categorical_knob_spreads_its_configurations_and_colours_a_continuous_one():
    frame = _sweep_frame().assign(**{"param.method.kd_decay.base": [0.9, None, None, 0.95, 0.85]})
    frame = add_row_keys(frame.drop(columns=["row", "row_params"]))
    fig = plots.sensitivity_figure(frame, "param.method.kd_decay.kind", "t",
                                   log_knobs=frozenset({"param.method.kd_temperature"}))
    try:
        ax, bar = fig.axes
        assert bar.get_ylabel() == "kd_temperature" and bar.get_yscale() == "log"
        assert "also vary, not shown: kd_decay.base" in ax.get_title()
        means = next(c for c in ax.collections if c.get_label() != "seed"
                     and len(c.get_offsets()) == 4).get_offsets()
        xs = sorted(float(x) for x in means[:, 0])
        # three exp configurations spread over ±0.3 around tick 0; linear alone on tick 1
        assert xs == pytest.approx([-0.3, 0.0, 0.3, 1.0])
        assert [t.get_text() for t in ax.get_xticklabels()] == ["exp", "linear"]
        for line in ax.get_lines():
            assert line.get_linestyle() == "None" or len(line.get_xdata()) <= 1
    finally:
        plt.close(fig)


def test_heatmap_cells_show_value_and_count_or_say_empty():
    fig = plots.heatmap_figure(_sweep_frame(), "param.method.kd_decay.kind",
                               "param.method.kd_temperature", "t")
    try:
        texts = [t.get_text() for t in fig.axes[0].texts]
        # 2 kinds × 3 temperatures = 6 cells; 4 hold runs
        assert sorted(t for t in texts if "n=" in t) == ["250.0\nn=1", "260.0\nn=1",
                                                          "270.0\nn=1", "295.0\nn=2"]
        assert texts.count("no run") == 2
        assert "5 runs in 4 of 6 cells" in fig.axes[0].get_title()
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------ M/V
def test_bootstrap_ci_matches_a_loop_oracle():
    rng = np.random.default_rng(5)
    values = rng.random((40, 3))
    lo, hi = mvmod.bootstrap_ci(values, seed=9, n_boot=300, block=70)
    g = np.random.default_rng(9)
    means = []
    for start in range(0, 300, 70):
        for idx in g.integers(0, 40, size=(min(70, 300 - start), 40)):
            means.append(values[idx].mean(axis=0))
    assert lo == pytest.approx(np.quantile(means, 0.025, axis=0))
    assert hi == pytest.approx(np.quantile(means, 0.975, axis=0))
    empty_lo, _ = mvmod.bootstrap_ci(np.zeros((0, 3)))
    assert np.isnan(empty_lo).all()


def test_mv_intervals_and_counts(tempting):
    mvf, _ = mvmod.mv_frame(tempting["collected"])
    assert list(dict.fromkeys(mvf["bin"])) == bin_labels(DEFAULT_MV_EDGES)
    for m in mvmod.MV_METRICS:
        assert (mvf[f"{m}_lo"] <= mvf[m] + 1e-9).all() and (mvf[m] <= mvf[f"{m}_hi"] + 1e-9).all()
    # n per bin: the queries of the bin; the interval of a 2-seed row from its per-query values
    counts = np.bincount(mvmod.assign_bins(tempting["mv"], DEFAULT_MV_EDGES) + 1, minlength=6)[1:]
    row = mvf.loc[mvf["row"] == "ms-sl"].sort_values("bin_index")
    assert row["n_queries"].tolist() == counts.tolist()
    assert (row["R10_hi"] - row["R10_lo"]).gt(0).all()
    # seeded: the same frame twice
    again, _ = mvmod.mv_frame(tempting["collected"])
    pd.testing.assert_frame_equal(mvf, again)


def test_mv_markdown_and_figure_carry_intervals_and_n(tempting_report):
    out = tempting_report
    md = (out / "tables" / "mv_tvr.md").read_text()
    mvf = pd.read_csv(out / "tables" / "mv.csv")
    first = mvf.loc[(mvf["row"] == "ms-sl") & (mvf["bin_index"] == 0)].iloc[0]
    assert f"{first['R1']:.1f} [{first['R1_lo']:.1f}, {first['R1_hi']:.1f}]" in _line(md, "ms-sl")
    assert f"0.0-0.2 (n={int(first['n_queries'])})" in md
    assert "95 % bootstrap interval over the bin's queries" in md


# ------------------------------------------------------------------------------ M/V edges
def test_one_default_set_of_edges():
    assert EvalConfig().mv_edges == DEFAULT_MV_EDGES == profiles.MV_EDGES_5
    readme = (ROOT / "README.md").read_text()
    bins = [f"({label.replace('-', ',')}]" for label in bin_labels(DEFAULT_MV_EDGES)]
    assert f"{bins[0]} … {bins[-1]}" in readme


def test_report_bins_are_the_recorded_bins(tempting, tempting_report):
    """The report's bins are the bins of the runs' MLflow metrics (logged by split_view with
    the config's edges), and the values agree."""
    out = tempting_report
    mvf = pd.read_csv(out / "tables" / "mv.csv")
    rid = tempting["collected"].frame.query("variant == 'ms-sl.lucky' and seed == 5")["run_id"].item()
    metrics = tracking.get_run(tempting["uri"], rid)["metrics"]
    logged = sorted({k.split("/")[1] for k in metrics if k.startswith("test_mv/")})
    assert sorted(set(mvf["bin"])) == logged == bin_labels(EvalConfig().mv_edges)
    index = (out / "index.md").read_text()
    assert "the edges the runs recorded (MLflow param eval.mv_edges)" in index


def test_report_edges_precedence():
    frame = pd.DataFrame({"mv_edges": [(0.0, 0.5, 1.0), (0.0, 0.5, 1.0)]})
    assert mvmod.report_edges(frame)[0] == (0.0, 0.5, 1.0)
    assert mvmod.report_edges(frame, (0, 0.25, 1))[0] == (0.0, 0.25, 1.0)
    edges, why = mvmod.report_edges(pd.DataFrame({"mv_edges": [(0.0, 0.5, 1.0), None,
                                                               (0.0, 0.1, 1.0)]}))
    assert edges == DEFAULT_MV_EDGES and "recorded different edges (0,0.1,1; 0,0.5,1)" in why
    edges, why = mvmod.report_edges(pd.DataFrame({"mv_edges": [None]}))
    assert edges == DEFAULT_MV_EDGES and "no run recorded" in why
