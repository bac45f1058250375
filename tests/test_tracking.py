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
