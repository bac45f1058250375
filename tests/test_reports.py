"""reports end to end on a real local SQLite MLflow store written by the project's own tracking
code (benchmark.tracking.open_run + RunTracker.log_* + EvalResult.save artifacts) and a real
Optuna study: table values, mean/std, significance, M/V, figures, index, errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from benchmark import naming, tracking
from benchmark.evaluate import EvalResult, KeyRanks
from benchmark.naming import Tag, TrialStateTag
from reports import build, cli, collect, tables
from reports import mv as mvmod
from reports.collect import Selection

NQ = 240
SEEDS = (0, 1, 2)
STUDY = "krd-test-tvr-synthetic"


def _result(rank: np.ndarray, mv: np.ndarray, synthetic: bool = True) -> EvalResult:
    rank = np.asarray(rank, dtype=np.int64)
    return EvalResult(per_key={"score": KeyRanks(rank, np.zeros_like(rank), 1.0 / rank)},
                      query_ids=np.array([f"q{i}" for i in range(len(rank))]), mv=mv,
                      synthetic=synthetic)


def _log(uri: str, tmp: Path, variant: str, seed: int, test: EvalResult, *,
         collection: str = "tvr", synthetic: bool = True, params: dict | None = None,
         extra_tags: dict | None = None, parent: str | None = None, ranks: bool = True,
         status_ok: bool = True) -> str:
    method = variant.split(".")[0]
    identity = naming.RunIdentity(method=method, variant=variant, collection=collection,
                                  synthetic=synthetic, seed=seed,
                                  experiment=naming.experiment_name(collection, synthetic),
                                  reconstruction=method == "kdc-net",
                                  extra_tags=extra_tags or {})
    run = tracking.open_identified_run(uri, identity, parent_run_id=parent)
    run.log_params({"seed": seed, "train.epochs": 2, **(params or {})})
    metrics = test.metrics()
    run.log_metrics({f"test/{k}": metrics[k] for k in ("R1", "R5", "R10", "R100", "SumR")})
    run.log_metrics({f"val/{k}": metrics[k] for k in ("R1", "SumR")}, step=0)
    if ranks:
        d = tmp / run.run_id
        run.log_artifact(test.save(d / "ranks_test.npz"))
        run.log_artifact(test.save(d / "ranks_val.npz"))
    run.end("FINISHED" if status_ok else "FAILED")
    return run.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two stores: ``plain`` (ablation runs, no study) and ``sweep`` (a study with trials)."""
    tmp = tmp_path_factory.mktemp("reports")
    rng = np.random.default_rng(0)
    mv = np.round(rng.uniform(0.005, 1.0, NQ), 6)
    mv[:6] = [0.1, 0.2, 0.4, 0.6, 1.0, 0.0]
    base = {s: rng.integers(2, 150, NQ) for s in SEEDS}
    plain = f"sqlite:///{tmp / 'plain' / 'mlflow.db'}"
    runs = {}
    for s in SEEDS:
        runs[("ms-sl", s)] = (_result(base[s], mv), _log(plain, tmp, "ms-sl", s, _result(base[s], mv)))
        same = _result(base[s].copy(), mv)
        runs[("ms-sl.same", s)] = (same, _log(plain, tmp, "ms-sl.same", s, same))
        better = _result(np.maximum(1, base[s] // 5), mv)
        runs[("ms-sl.better", s)] = (better, _log(plain, tmp, "ms-sl.better", s, better))
    for s in (7, 8):     # different seeds from the base row
        k = _result(np.maximum(1, base[0] - 1), mv)
        runs[("kdc-net", s)] = (k, _log(plain, tmp, "kdc-net", s, k))
    # a FAILED run that must be left out
    _log(plain, tmp, "ms-sl.broken", 0, _result(base[0], mv), status_ok=False)
    # a re-evaluation of the ms-sl seed-0 checkpoint: not a training run, left out of tables
    _log(plain, tmp, "ms-sl", 0, _result(base[0], mv),
         extra_tags={Tag.EVALUATION: "true", Tag.CHECKPOINT: "runs/x/best.pt"})

    sweep = f"sqlite:///{tmp / 'sweep' / 'mlflow.db'}"
    storage = f"sqlite:///{tmp / 'sweep' / 'optuna.db'}"
    with tracking.open_run(tracking_uri=sweep, experiment="tvr-synthetic", run_name=STUDY,
                           tags=naming.study_tags(study=STUDY, spec="kdc-net-krd", collection="tvr",
                                                  synthetic=True, method="kdc-net",
                                                  storage=storage)) as parent:
        parent_id = parent.run_id
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    dists = {"method.krd.window": optuna.distributions.CategoricalDistribution((1, 3, 5, 7, 9)),
             "method.krd.delta": optuna.distributions.FloatDistribution(0.0, 0.5),
             "method.krd.lam": optuna.distributions.FloatDistribution(0.0, 1.0)}
    trial_runs = []
    for n in range(8):
        params = {"method.krd.window": (1, 3, 5, 7, 9)[n % 5], "method.krd.delta": 0.05 * n,
                  "method.krd.lam": (n % 4) / 3}
        r = _result(np.maximum(1, base[0] - 10 * n), mv)
        rid = _log(sweep, tmp, "kdc-net", 0, r, params=params, parent=parent_id,
                   extra_tags={Tag.STUDY: STUDY, Tag.TRIAL: str(n),
                               Tag.TRIAL_STATE: TrialStateTag.COMPLETE})
        trial_runs.append(rid)
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  value=r.metrics()["SumR"],
                                                  user_attrs={"mlflow_run_id": rid}))
    # a pruned trial: FINISHED run without ranks, must be left out (not an error)
    _log(sweep, tmp, "kdc-net", 0, _result(base[0], mv), ranks=False, parent=parent_id,
         params={"method.krd.window": 3, "method.krd.delta": 0.1, "method.krd.lam": 0.5},
         extra_tags={Tag.STUDY: STUDY, Tag.TRIAL: "8", Tag.TRIAL_STATE: TrialStateTag.PRUNED})
    return {"tmp": tmp, "plain": plain, "sweep": sweep, "storage": storage, "runs": runs,
            "parent": parent_id, "mv": mv, "trial_runs": trial_runs}


# ------------------------------------------------------------------------------ collection
def test_collect_frame_values(store):
    got = collect.collect(Selection(tracking_uri=store["plain"]), store["tmp"] / "cache1")
    frame = got.frame
    assert got.parent is None and got.study is None
    assert len(frame) == 11                          # 9 ms-sl* + 2 kdc-net; the FAILED run left out
    assert "ms-sl.broken" not in set(frame["variant"])
    assert any("failed" in n for n in got.notes)
    assert any("1 checkpoint-evaluation" in n for n in got.notes)
    assert len(frame[(frame["variant"] == "ms-sl") & (frame["seed"] == 0)]) == 1
    evaluations = collect.collect(Selection(tracking_uri=store["plain"],
                                            tags={Tag.EVALUATION: "true"}), store["tmp"] / "cache0")
    assert len(evaluations.frame) == 1                 # asked for by tag: the evaluation run itself
    row = frame[(frame["variant"] == "ms-sl.better") & (frame["seed"] == 1)].iloc[0]
    res, rid = store["runs"][("ms-sl.better", 1)]
    assert row["run_id"] == rid
    assert row["test/R1"] == pytest.approx(100.0 * np.mean(res.rank <= 1))
    assert row["test/SumR"] == pytest.approx(sum(100.0 * np.mean(res.rank <= k) for k in (1, 5, 10, 100)))
    assert bool(row["synthetic"]) and not bool(row["reconstruction"])
    assert frame.loc[frame["variant"] == "kdc-net", "reconstruction"].all()
    assert np.array_equal(got.ranks[rid].rank, res.rank)


def test_collect_filters(store):
    got = collect.collect(Selection(tracking_uri=store["plain"], methods=("kdc-net",)),
                          store["tmp"] / "cache2")
    assert set(got.frame["variant"]) == {"kdc-net"}
    got = collect.collect(Selection(tracking_uri=store["plain"], tags={Tag.VARIANT: "ms-sl.same"}),
                          store["tmp"] / "cache2")
    assert set(got.frame["seed"]) == set(SEEDS)


def test_default_selection_is_the_latest_study(store):
    got = collect.collect(Selection(tracking_uri=store["sweep"]), store["tmp"] / "cache3")
    assert got.study == STUDY and got.parent["run_id"] == store["parent"]
    assert sorted(got.frame["run_id"]) == sorted(store["trial_runs"])      # pruned one left out
    assert any("pruned" in n for n in got.notes)
    assert {"param.method.krd.window", "param.method.krd.delta", "param.method.krd.lam"} \
        <= set(got.frame.columns)
    assert "param.seed" not in got.frame.columns and "param.train.epochs" not in got.frame.columns


# ------------------------------------------------------------------------------ ablation table
@pytest.fixture(scope="module")
def ablation(store):
    got = collect.collect(Selection(tracking_uri=store["plain"]), store["tmp"] / "cache4")
    return got, tables.build_ablation(got)


def test_table_mean_std_and_delta(ablation, store):
    _, table = ablation
    rows = {r.row: r for r in table.rows}
    assert [r.row for r in table.rows][:3] == ["ms-sl", "ms-sl.better", "ms-sl.same"]
    assert rows["ms-sl"].is_base["tvr"] and not rows["ms-sl.better"].is_base["tvr"]
    r1 = [100.0 * np.mean(store["runs"][("ms-sl.better", s)][0].rank <= 1) for s in SEEDS]
    base_r1 = [100.0 * np.mean(store["runs"][("ms-sl", s)][0].rank <= 1) for s in SEEDS]
    cell = rows["ms-sl.better"].cells["tvr"]["R1"]
    assert cell.mean == pytest.approx(np.mean(r1))
    assert cell.std == pytest.approx(np.std(r1, ddof=1))
    assert cell.delta == pytest.approx(np.mean(r1) - np.mean(base_r1))
    assert rows["ms-sl.better"].n["tvr"] == 3
    assert rows["ms-sl"].cells["tvr"]["R1"].delta is None
    # best per column: the clearly better variant
    assert rows["ms-sl.better"].cells["tvr"]["SumR"].best
    assert not rows["ms-sl"].cells["tvr"]["SumR"].best


def test_table_significance(ablation):
    _, table = ablation
    rows = {r.row: r for r in table.rows}
    same, better = rows["ms-sl.same"].tests["tvr"], rows["ms-sl.better"].tests["tvr"]
    assert same.test == "identical" and not same.significant and same.marker == ""
    assert better.test == "wilcoxon" and better.pairing == "seed" and better.significant
    assert better.marker == "**"
    assert "Wilcoxon signed-rank" in table.caption
    kdc = rows["kdc-net"]
    assert kdc.is_base["tvr"]                        # its own group, its own base
    assert "seeds differ across rows" in table.caption      # kdc-net ran seeds 7, 8


def test_seeds_differ_warning_in_caption(store):
    got = collect.collect(Selection(tracking_uri=store["plain"], methods=("ms-sl", "kdc-net")),
                          store["tmp"] / "cache5")
    # relabel kdc-net as a variant of ms-sl so one group holds rows with different seeds
    got.frame.loc[got.frame["variant"] == "kdc-net", ["method", "variant"]] = ["ms-sl", "ms-sl.k"]
    table = tables.build_ablation(got)
    assert "seeds differ across rows" in table.caption
    k = {r.row: r for r in table.rows}["ms-sl.k"]
    assert "tvr" not in k.tests                       # seeds {7, 8} vs {0, 1, 2}: no test
    assert "ms-sl.k vs ms-sl: seeds {7, 8} vs {0, 1, 2}" in table.caption
    assert "not paired" in table.caption


def test_markdown_latex_and_labels(ablation):
    _, table = ablation
    md = tables.to_markdown(table)
    assert "| Method | R@1 | R@5 | R@10 | R@100 | SumR | n |" in md
    assert "KDC-Net (reconstruction)" in md and tables.KDC_NOTE in md
    assert "synthetic" in md.lower() and "(synthetic)" in table.title
    assert "**" in md and " ± " in md
    better = [line for line in md.splitlines() if line.startswith("| ms-sl.better")][0]
    assert "**" in better and "(+" in better
    tex = tables.to_latex(table)
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"$\pm$", r"\textbf{",
                  r"\begin{tabular}{lrrrrrr}"):
        assert token in tex, token
    assert "_" not in tex.replace(r"\_", "")
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(tables.to_rich(table))
    assert "ms-sl.better" in console.export_text()


# ------------------------------------------------------------------------------ M/V
def test_mv_frame_equals_by_mv_mean_over_seeds(ablation, store):
    got, _ = ablation
    edges = (0.0, 0.1, 0.2, 0.4, 0.6, 1.0)
    mvf, notes = mvmod.mv_frame(got, edges)
    assert not notes
    sub = mvf[mvf["row"] == "ms-sl.better"].sort_values("bin_index")
    per_seed = [store["runs"][("ms-sl.better", s)][0].by_mv(edges) for s in SEEDS]
    for _, line in sub.iterrows():
        ref = [p[line["bin"]] for p in per_seed]
        assert line["n_queries"] == ref[0]["n_queries"]
        for m in mvmod.MV_METRICS:
            assert line[m] == pytest.approx(np.mean([r[m] for r in ref]))
    assert list(sub["bin"]) == ["0.0-0.1", "0.1-0.2", "0.2-0.4", "0.4-0.6", "0.6-1.0"]


# ------------------------------------------------------------------------------ full report
def test_build_report_writes_every_file_and_logs_it(store):
    out = store["tmp"] / "report"
    res = build.build_report(Selection(tracking_uri=store["sweep"]), out, storage=store["storage"])
    assert res.logged_run_id == store["parent"]
    index = (out / "index.md").read_text()
    for path in res.files:
        assert path.exists() and path.stat().st_size > 0, path
    figures = sorted((out / "figures").iterdir())
    names = {p.name for p in figures}
    for stem in ("mv_tvr", "mv_quintiles_tvr", "heatmap_delta_lam", "curve_method_krd_window",
                 "curve_method_krd_delta"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names, stem
    for p in figures + sorted((out / "tables").iterdir()):
        assert p.stat().st_size > 0
        assert p.relative_to(out).as_posix() in index, f"{p} not linked from index.md"
    assert index.index("curve_method_krd_window") < index.index("curve_method_krd_delta")
    assert "synthetic" in index.lower()
    assert "Omitted: every selected run is on synthetic data" in index
    assert "KDC-Net (reconstruction)" in index
    sweep_md = (out / "tables" / "sweep.md").read_text()
    assert "Parameter importances" in sweep_md and "method.krd.window" in sweep_md
    # the folder is an artifact of the parent run
    local = tracking.download_artifact(store["sweep"], store["parent"], "report/index.md",
                                       store["tmp"] / "dl")
    assert local.read_text() == index
    # the parent's status is left alone
    assert tracking.get_run(store["sweep"], store["parent"])["status"] == "FINISHED"


def test_published_table_only_for_real_runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rng = np.random.default_rng(1)
    mv = np.round(rng.uniform(0.01, 1, 50), 6)
    for s in (0, 1):
        _log(uri, tmp_path, "ms-sl", s, _result(rng.integers(1, 60, 50), mv, synthetic=False),
             synthetic=False)
        _log(uri, tmp_path, "ms-sl", s, _result(rng.integers(1, 60, 50), mv), synthetic=True)
    res = build.build_report(Selection(tracking_uri=uri), tmp_path / "out")
    pub = (tmp_path / "out" / "tables" / "published_tvr.md").read_text()
    assert "| MS-SL | published | README, TF |" in pub and "172.3" in pub
    lines = [line for line in pub.splitlines() if "| reproduced |" in line]
    assert len(lines) == 1 and "| 2 |" in lines[0]                 # the two real seeds only
    assert res.logged_run_id is None
    # the ablation table keeps synthetic results apart (their own collection experiment)
    assert "synthetic" in res.ablation.caption.lower()


# ------------------------------------------------------------------------------ errors
def _error_line(stderr: str) -> str:
    """The CLI's one error line (MLflow may log its own INFO lines on stderr before it)."""
    lines = [line for line in stderr.splitlines() if line.startswith("report: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_cli_no_matching_run(store, capsys):
    rc = cli.main(["--tracking-uri", store["plain"], "--method", "nope", "--out",
                   str(store["tmp"] / "o1"), "--quiet"])
    err = _error_line(capsys.readouterr().err)
    assert rc == 2 and "\n" not in err and "matches no" in err and "method nope" in err


def test_cli_unknown_study(store, capsys):
    rc = cli.main(["--tracking-uri", store["sweep"], "--study", "missing", "--quiet",
                   "--out", str(store["tmp"] / "o2")])
    err = _error_line(capsys.readouterr().err)
    assert rc == 2 and "no study named 'missing'" in err and "\n" not in err


def test_cli_runs_without_ranks(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mv = np.linspace(0.01, 1, 20)
    _log(uri, tmp_path, "ms-sl", 0, _result(np.arange(1, 21), mv), ranks=False)
    rc = cli.main(["--tracking-uri", uri, "--quiet", "--out", str(tmp_path / "o")])
    err = _error_line(capsys.readouterr().err)
    assert rc == 2 and "lack per-query ranks" in err and "ranks_test.npz" in err and "\n" not in err


def test_cli_bad_arguments(store, capsys):
    assert cli.main(["--tracking-uri", store["plain"], "--mv-edges", "0,0.5,0.2", "--quiet"]) == 2
    assert "strictly increasing" in capsys.readouterr().err
    assert cli.main(["--tracking-uri", store["plain"], "--tag", "novalue", "--quiet"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_cli_success_prints_preview(store, capsys):
    rc = cli.main(["--tracking-uri", store["plain"], "--out", str(store["tmp"] / "o3"),
                   "--mv-edges", "0,0.5,1"])
    out = capsys.readouterr().out
    assert rc == 0 and "ms-sl.better" in out and "index" in out
    assert "0.0-0.5" in (store["tmp"] / "o3" / "tables" / "mv_tvr.md").read_text()


def test_trial_params_replace_inactive_mlflow_params():
    import pandas as pd

    from reports.stats import add_row_keys

    frame = pd.DataFrame({"run_id": ["a", "b"], "collection": ["tvr"] * 2,
                          "variant": ["dl-dkd++"] * 2,
                          "param.method.kd_decay.base": [0.95, 0.88],       # MLflow: all values
                          "param.method.kd_decay.slope": [-0.03, -0.01]})
    trials = {"a": {"method.kd_decay.kind": "linear", "method.kd_decay.slope": -0.03},
              "b": {"method.kd_decay.kind": "exp", "method.kd_decay.base": 0.88}}
    out = add_row_keys(build.with_trial_params(frame, trials))
    assert list(out["row"]) == ["dl-dkd++ [kd_decay.kind=linear, kd_decay.slope=-0.03]",
                                "dl-dkd++ [kd_decay.base=0.88, kd_decay.kind=exp]"]


def test_two_collections_get_column_groups(store):
    got = collect.collect(Selection(tracking_uri=store["plain"]), store["tmp"] / "cache6")
    moved = got.frame["variant"] == "ms-sl.same"
    got.frame.loc[moved, "collection"] = "activitynet"
    table = tables.build_ablation(got)
    assert table.collections == ["activitynet", "tvr"]          # docs/methods.md §12 order
    md = tables.to_markdown(table)
    assert "| TVR R@1 |" in md and "| ActivityNet Captions SumR |" in md
    same = [line for line in md.splitlines() if line.startswith("| ms-sl.same")][0]
    assert same.count(" – |") == 6                       # no TVR runs: six empty TVR cells
    tex = tables.to_latex(table)
    assert r"\multicolumn{6}{c}{TVR}" in tex and r"\cmidrule(lr){2-7} \cmidrule(lr){8-13}" in tex
    # ms-sl.same is alone in ActivityNet, so it is the base row of its group there
    assert {r.row: r for r in table.rows}["ms-sl.same"].is_base["activitynet"]


def test_importances_need_enough_trials():
    from reports import sensitivity

    study = optuna.create_study(direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for x in (0.1, 0.5):
        study.add_trial(optuna.trial.create_trial(params={"x": x}, distributions=dist, value=x))
    rep = sensitivity.study_report(study)
    assert rep.importances is None and "at least 3 complete trials" in rep.importance_message
    assert list(rep.best["number"]) == [1, 0]                    # best first (maximize)
    study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=0.2))
    study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=0.3))
    md = sensitivity.to_markdown(sensitivity.study_report(study), "t", "c")
    assert "| x |" in md
