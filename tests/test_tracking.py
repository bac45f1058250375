"""benchmark.tracking against a real MLflow SQLite store in a temporary directory (no mocks)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmark import tracking
from benchmark.naming import KIND_STUDY, Tag


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    db = tmp_path_factory.mktemp("mlflow") / "runs" / "mlflow.db"
    return f"sqlite:///{db}"


def _open(uri, name, **kw):
    return tracking.open_run(tracking_uri=uri, experiment="tvr-synthetic", run_name=name,
                             tags=kw.pop("tags", {"method": "mean-pool"}), **kw)


def test_run_lifecycle_params_metrics_artifacts(uri, tmp_path):
    with _open(uri, "mean-pool-tvr-synthetic-s0") as run:
        for attr in ("run_id", "log_params", "set_tags", "log_metrics", "log_artifact"):
            assert hasattr(run, attr), attr
        params = {f"method.p{i:03d}": i for i in range(230)}         # > 2 batches of 100
        params["data.long"] = "x" * 7000                               # over the 6000 limit
        run.log_params(params)
        for epoch in range(3):
            run.log_metrics({"val/SumR": 10.0 + epoch, "train/loss": 1.0 / (epoch + 1)}, step=epoch)
        run.log_metrics({"train/loss_kd": float("nan")}, step=0)
        art = tmp_path / "record.json"
        art.write_text(json.dumps({"a": 1}))
        run.log_artifact(art)
        run.set_tags({"synthetic": True, "seed": 3})
        run_id = run.run_id
    got = tracking.get_run(uri, run_id)
    assert got["status"] == "FINISHED"
    assert got["run_name"] == "mean-pool-tvr-synthetic-s0"
    assert len(got["params"]) == 231
    assert got["params"]["method.p229"] == "229"
    assert len(got["params"]["data.long"]) == tracking.MAX_PARAM_VALUE_LENGTH
    assert got["metrics"]["val/SumR"] == 12.0                           # latest step
    assert math.isnan(got["metrics"]["train/loss_kd"])
    assert got["tags"]["synthetic"] == "true" and got["tags"]["seed"] == "3"
    assert tracking.metric_history(uri, run_id, "val/SumR") == [(0, 10.0), (1, 11.0), (2, 12.0)]
    # artifacts live under <db dir>/mlartifacts (architecture §9)
    db_dir = tracking.sqlite_path(uri).parent
    assert got["artifact_uri"].startswith((db_dir / "mlartifacts").resolve().as_uri())
    local = tracking.download_artifact(uri, run_id, "record.json", tmp_path / "dl")
    assert json.loads(local.read_text()) == {"a": 1}


def test_exception_ends_failed_and_interrupt_killed(uri):
    with pytest.raises(RuntimeError):
        with _open(uri, "boom") as run:
            run.log_metrics({"val/SumR": 1.0}, step=0)
            raise RuntimeError("x")
    assert tracking.get_run(uri, run.run_id)["status"] == "FAILED"
    with pytest.raises(KeyboardInterrupt):
        with _open(uri, "ctrl-c") as run2:
            raise KeyboardInterrupt
    assert tracking.get_run(uri, run2.run_id)["status"] == "KILLED"


@pytest.mark.parametrize("name", ["test/R@1", "val/SumR%", "", "a//b", "/abs", "../up"])
def test_bad_metric_names_rejected_before_sending(uri, name):
    with _open(uri, "names") as run:
        with pytest.raises(tracking.TrackingError, match="name"):
            run.log_metrics({name: 1.0, "val/R1": 2.0})
        # nothing of the rejected batch was sent
        assert tracking.get_run(uri, run.run_id)["metrics"] == {}
    assert tracking.validate_name("test_mv/0.0-0.2/R1") == "test_mv/0.0-0.2/R1"


def test_nested_runs_reopen_search_and_close_stale(uri):
    with _open(uri, "study-x", tags={Tag.STUDY: "x", Tag.KIND: KIND_STUDY}) as parent:
        pid = parent.run_id
    children = []
    for i in range(3):
        child = _open(uri, f"t{i:03d}-mean-pool-tvr-synthetic-s{i}",
                      tags={Tag.STUDY: "x", Tag.TRIAL: str(i)}, parent_run_id=pid)
        children.append(child.run_id)
        if i < 2:
            child.end("FINISHED")                                        # third left RUNNING
    found = tracking.search_runs(uri, ["tvr-synthetic"], f"tags.`mlflow.parentRunId` = '{pid}'")
    assert sorted(r["run_id"] for r in found) == sorted(children)
    assert all(r["parent_run_id"] == pid for r in found)
    assert tracking.search_runs(uri, ["no-such-experiment"]) == []
    assert len(tracking.search_runs(uri, None, "tags.study = 'x'")) == 4
    closed = tracking.close_stale_runs(uri, children, reason="worker gone")
    assert closed == [children[2]]
    stale = tracking.get_run(uri, children[2])
    assert stale["status"] == "FAILED" and stale["tags"]["failure_reason"] == "worker gone"
    # reopen the parent (a resumed study) and finish it again
    with tracking.open_run(tracking_uri=uri, experiment="tvr-synthetic", run_name="study-x",
                           tags={"resumed": "true"}, run_id=pid) as again:
        assert tracking.get_run(uri, pid)["status"] == "RUNNING"
        again.log_metrics({"best/val/SumR": 5.0})
    final = tracking.get_run(uri, pid)
    assert final["status"] == "FINISHED" and final["tags"]["resumed"] == "true"


def test_unreachable_store_named_with_password_hidden():
    with pytest.raises(tracking.TrackingError) as info:
        tracking.check_reachable("http://user:hunter2@127.0.0.1:9/")
    assert "hunter2" not in str(info.value) and "127.0.0.1:9" in str(info.value)


def test_default_artifact_location_only_for_sqlite(tmp_path):
    assert tracking.default_artifact_location(f"sqlite:///{tmp_path}/runs/mlflow.db") == \
        (tmp_path / "runs" / "mlartifacts").as_uri()
    assert tracking.default_artifact_location("http://127.0.0.1:5000") is None
    assert tracking.sqlite_path("sqlite:///runs/mlflow.db") == Path("runs/mlflow.db")


def test_parallel_processes_open_one_new_sqlite_store(tmp_path):
    """Several processes creating runs in one *new* SQLite store at once all succeed (the
    first open, which migrates the schema, is serialised by a lock file)."""
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    code = ("import sys; from benchmark.tracking import open_run\n"
            "with open_run(tracking_uri=sys.argv[1], experiment='race', run_name=sys.argv[2]) as r:\n"
            "    r.log_metrics({'m': 1.0}, step=0)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, uri, f"r{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    outcomes = [(p.returncode, p.communicate(timeout=240)[1]) for p in procs]
    outcomes = [(p.returncode, err) for p, (_, err) in zip(procs, outcomes)]
    assert all(rc == 0 for rc, _ in outcomes), [err[-400:] for rc, err in outcomes if rc]
    from benchmark.tracking import search_runs

    assert sorted(r["run_name"] for r in search_runs(uri, ["race"])) == ["r0", "r1", "r2", "r3"]
    # the empty "Default" MLflow made on the first open is deleted once, whoever made it
    assert _experiments(uri) == {"0": ("Default", "deleted"), "1": ("race", "active")}


# -- the MLflow UI: experiment kind, the Default experiment, swept params, comparison view --------
def _experiments(uri: str) -> dict[str, tuple[str, str]]:
    """{id: (name, lifecycle stage)} as a fresh plain-MLflow process sees the store (so MLflow's
    own store start-up, which creates a missing experiment 0, runs again)."""
    import subprocess
    import sys

    code = ("import json, sys, mlflow\n"
            "from mlflow.entities import ViewType\n"
            "c = mlflow.MlflowClient(tracking_uri=sys.argv[1])\n"
            "print(json.dumps({e.experiment_id: [e.name, e.lifecycle_stage]\n"
            "                  for e in c.search_experiments(view_type=ViewType.ALL)}))\n")
    out = subprocess.run([sys.executable, "-c", code, uri], capture_output=True, text=True,
                         timeout=240, check=True).stdout
    return {k: tuple(v) for k, v in json.loads(out.splitlines()[-1]).items()}


def test_new_store_has_no_active_default_and_it_stays_away(tmp_path):
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    tracking.check_reachable(uri)                        # our first open creates the store
    assert _experiments(uri) == {"0": ("Default", "deleted")}
    with _open(uri, "r0"):
        pass
    # a later plain MLflow open (as `mlflow ui` does) does not bring it back
    assert _experiments(uri) == {"0": ("Default", "deleted"), "1": ("tvr-synthetic", "active")}


def test_a_default_that_existed_before_is_left_alone(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'old.db'}"
    mlflow.MlflowClient(tracking_uri=uri).search_experiments()   # MLflow alone made the store
    assert _experiments(uri) == {"0": ("Default", "active")}
    tracking.check_reachable(uri)
    assert _experiments(uri) == {"0": ("Default", "active")}
    client = mlflow.MlflowClient(tracking_uri=uri)
    made = client.get_experiment("0").creation_time
    assert tracking.retire_new_default_experiment(client, since_ms=made + 1) is False
    # even when it is "new enough", a Default holding runs is kept
    client.create_run("0")
    assert tracking.retire_new_default_experiment(client, since_ms=0) is False
    assert client.get_experiment("0").lifecycle_stage == "active"


def test_experiments_are_model_training_experiments(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'kind.db'}"
    with _open(uri, "r0") as run:
        client = tracking.client_for(uri)
        exp = client.get_experiment(run.experiment_id)
    assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    # an experiment made before (no kind) gets the tag; a kind someone chose is kept
    plain = mlflow.MlflowClient(tracking_uri=uri)
    old_id = plain.create_experiment("made-elsewhere")
    genai_id = plain.create_experiment("genai", tags={"mlflow.experimentKind": "genai_development"})
    assert tracking.ensure_experiment(uri, "made-elsewhere") == old_id
    assert tracking.ensure_experiment(uri, "genai") == genai_id
    assert plain.get_experiment(old_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert plain.get_experiment(genai_id).tags["mlflow.experimentKind"] == "genai_development"


def test_log_swept_params_prefix_and_bad_key(tmp_path):
    uri = f"sqlite:///{tmp_path / 'swept.db'}"
    with _open(uri, "t000") as run:
        run.log_params({"method.kd_temperature": 0.123456789, "method.kd_decay.base": 0.95})
        tracking.log_swept_params(run, {"method.kd_temperature": 0.123456789,
                                        "method.kd_decay.kind": "exp", "method.krd.window": 3})
        tracking.log_swept_params(run, {})
        with pytest.raises(tracking.TrackingError, match="R@1"):
            tracking.log_swept_params(run, {"R@1": 1})
    params = tracking.get_run(uri, run.run_id)["params"]
    assert params == {"method.kd_temperature": "0.123456789", "method.kd_decay.base": "0.95",
                      "swept/method.kd_temperature": "0.123457",
                      "swept/method.kd_decay.kind": "exp", "swept/method.krd.window": "3"}


def test_comparison_url_format_and_share_keys():
    url = tracking.comparison_url("http://127.0.0.1:5000/", "7", "kdc-net-krd-tvr-synthetic")
    assert url == ("http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
                   "&viewStateShareKey=kdc-net-krd-tvr-synthetic")
    key = tracking.comparison_share_key("dl-dkd++-tvr")
    assert key.startswith("dl-dkd--tvr-") and len(key) == len("dl-dkd--tvr-") + 8
    assert key != tracking.comparison_share_key("dl-dkd+-tvr")
    with pytest.raises(tracking.TrackingError, match="quote"):
        tracking.comparison_url("http://h", "1", "it's")
    view = tracking.comparison_view("s", ["b.y", "a.x", "b.y"])
    assert view["selectedColumns"] == ["params.`swept/a.x`", "params.`swept/b.y`",
                                       "metrics.`val/SumR`", "metrics.`test/SumR`",
                                       "tags.`trial_state`"]
    assert view["columnOrder"][3:] == view["selectedColumns"]
    assert view["columnWidths"]["params.`swept/a.x`"] == 120
    assert view["searchFilter"] == "tags.study = 's' AND tags.trial LIKE '%'"
    assert (view["orderByKey"], view["orderByAsc"]) == ("metrics.`val/SumR`", False)


def test_publish_comparison_collects_swept_keys_of_all_trials(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'cmp.db'}"
    study = "kd-tvr-synthetic"
    with _open(uri, study, tags={Tag.STUDY: study, Tag.KIND: KIND_STUDY}) as parent:
        pass
    sampled = [{"method.kd_decay.kind": "exp", "method.kd_decay.base": 0.9},
               {"method.kd_decay.kind": "linear", "method.kd_decay.slope": -0.01}]
    for i, values in enumerate(sampled):
        with _open(uri, f"t{i:03d}", tags={Tag.STUDY: study, Tag.TRIAL: str(i)},
                   parent_run_id=parent.run_id) as run:
            tracking.log_swept_params(run, values)
            run.log_metrics({"val/SumR": 10.0 + i, "test/SumR": 9.0})
    with _open(uri, "other", tags={Tag.STUDY: "other-study", Tag.TRIAL: "0"}) as run:
        tracking.log_swept_params(run, {"optim.lr": 0.1})
    url = tracking.publish_comparison(uri, study, base_url="http://127.0.0.1:5001")
    exp_id = parent.experiment_id
    assert url == tracking.comparison_url("http://127.0.0.1:5001", exp_id, study)
    tags = tracking.client_for(uri).get_experiment(exp_id).tags
    view = json.loads(tags[f"mlflow.sharedViewState.{study}"])
    assert view == tracking.comparison_view(
        study, ["method.kd_decay.base", "method.kd_decay.kind", "method.kd_decay.slope"])
    # the view's filter, run through MLflow's own search, keeps exactly the two trials
    found = tracking.search_runs(uri, None, view["searchFilter"])
    assert sorted(r["run_name"] for r in found) == ["t000", "t001"]
    with pytest.raises(tracking.TrackingError, match="no MLflow run of study 'nope'"):
        tracking.publish_comparison(uri, "nope")
    assert tracking.publish_all_comparisons(uri, "http://h") == [
        (study, tracking.comparison_url("http://h", exp_id, study))]
    assert tracking.main(["--tracking-uri", uri, "--base-url", "http://h"]) == 0
    out = capsys.readouterr().out
    assert f"{study}: {tracking.comparison_url('http://h', exp_id, study)}" in out


def test_ui_links_without_studies(tmp_path):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    assert "run a sweep first" in tracking.ui_links(uri)[0]
    with _open(uri, "plain-run"):
        pass
    lines = tracking.ui_links(uri, "http://h")
    assert lines[1] == "tvr-synthetic: http://h/#/experiments/1/runs?workflowType=machine_learning"


def test_readme_names_the_comparison_url_of_the_main_job():
    from benchmark.naming import study_name

    # experiment 1: a fresh store's first experiment (0 is MLflow's Default, deleted)
    url = tracking.comparison_url(tracking.DEFAULT_UI_URL, "1", study_name("tvr-default", "tvr", True))
    assert url in (Path(__file__).resolve().parents[1] / "README.md").read_text()
