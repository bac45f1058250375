"""The training loop, run directory artifacts, checkpoints and the train CLI, end to end on the
tiny generated collection (tests/conftest.py)."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import train as train_cli
from benchmark.config import config_hash, load_config, load_saved_config
from benchmark.evaluate import EvalResult
from benchmark.experiment import prepare, run_experiment
from benchmark.naming import Tag
from benchmark.record import RunRecord
from benchmark.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from benchmark.training.loop import EpochSummary, NonFiniteLossError, fit
from benchmark.views import RECORD_METRICS

torch.set_num_threads(1)


class CollectingTracker:
    """A real RunTracker that keeps everything in memory (the protocol of benchmark/tracker.py)."""

    run_id = None

    def __init__(self):
        self.metric_calls: list[tuple[dict, int | None]] = []
        self.tags: dict[str, str] = {}
        self.params: dict = {}
        self.artifacts: list[Path] = []

    def log_params(self, params):
        self.params.update(params)

    def set_tags(self, tags):
        self.tags.update(tags)

    def log_metrics(self, metrics, step=None):
        self.metric_calls.append((dict(metrics), step))

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append(Path(path))


def _cfg(root, runs, **sets):
    overrides = {"device": "cpu", "tracking.runs_dir": str(runs), "train.epochs": 3,
                 "optim.lr": 1e-3, "train.batch_size": 16}
    overrides.update(sets)
    return load_config("mean-pool", "tvr", data_root=root, overrides=overrides)


def test_tiny_end_to_end_run(tiny_root, tmp_path):
    # one full batch per epoch, so epoch means of the loss compare the same batch
    cfg = _cfg(tiny_root, tmp_path / "runs", **{"train.epochs": 4, "train.batch_size": 64,
                                                "optim.lr": 1e-4})
    tracker = CollectingTracker()
    seen: list[EpochSummary] = []
    record = run_experiment(cfg, tracker, hooks=[seen.append], run_dir=tmp_path / "run")

    # record: names, values, selection on val SumR
    assert record.method == "mean-pool" and record.variant == "mean-pool"
    assert record.collection == "tvr" and record.synthetic is True and record.seed == cfg.seed
    assert set(record.val) == set(RECORD_METRICS) == set(record.test)
    assert record.epochs_run == 4 and not record.stopped_early
    val_sumr = [s.metrics["val/SumR"] for s in seen]
    assert [s.epoch for s in seen] == [0, 1, 2, 3]
    assert record.best_epoch == int(np.argmax(val_sumr))
    assert record.val["SumR"] == pytest.approx(max(val_sumr))
    # the loop alone tracks the selection: every summary carries the best value so far
    assert [s.best_val_sumr for s in seen] == [max(val_sumr[:i + 1]) for i in range(4)]
    assert seen[-1].best_epoch == record.best_epoch
    assert record.test["SumR"] == pytest.approx(sum(record.test[f"R{k}"] for k in (1, 5, 10, 100)))
    assert list(record.test_by_mv) == ["0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0"]
    assert sum(b["n_queries"] for b in record.test_by_mv.values()) > 0
    assert record.epoch_seconds > 0 and record.eval_seconds > 0 and record.peak_rss_mb > 0
    assert 0 < record.peak_anon_mb <= record.peak_rss_mb
    assert record.peak_file_mb is not None and 0 < record.peak_file_mb <= record.peak_rss_mb
    assert record.val_equals_test is False and Tag.VAL_EQUALS_TEST not in tracker.tags
    assert seen[-1].metrics["train/loss"] < seen[0].metrics["train/loss"]    # it learns

    # tracker: one batched call per epoch plus the final one, names of architecture.md §7
    assert [step for _, step in tracker.metric_calls] == [0, 1, 2, 3, 4]
    epoch0 = tracker.metric_calls[0][0]
    for name in ("train/loss", "train/loss_t2v", "train/loss_v2t", "train/lr", "val/R1",
                 "val/SumR", "val/mAP", "time/epoch_seconds", "time/eval_seconds", "sys/peak_rss_mb",
                 "sys/peak_anon_mb", "sys/peak_file_mb"):
        assert name in epoch0, name
    final = tracker.metric_calls[-1][0]
    for name in ("test/SumR", "test/R100", "test/MedR", "test_mv/0.0-0.2/R1",
                 "test_mv/0.0-0.2/n_queries"):
        assert name in final, name
    assert all("@" not in k for call, _ in tracker.metric_calls for k in call)
    assert all(math.isfinite(v) for call, _ in tracker.metric_calls for v in call.values())

    # run directory: every artifact written and logged; each reads back
    run_dir = tmp_path / "run"
    names = {"record.json", "config.json", "ranks_test.npz", "ranks_val.npz"}
    assert names <= {p.name for p in run_dir.iterdir()}
    assert {p.name for p in tracker.artifacts} == names
    assert RunRecord.load(run_dir / "record.json").to_dict() == record.to_dict()
    assert load_saved_config(run_dir / "config.json") == cfg
    ranks = EvalResult.load(run_dir / "ranks_test.npz")
    assert ranks.metrics()["SumR"] == pytest.approx(record.test["SumR"])
    assert ranks.synthetic is True
    # every reported number is a view of the saved ranks: record, logged metrics, M/V bins
    for label, row in ranks.by_mv(cfg.eval.mv_edges).items():
        assert record.test_by_mv[label]["n_queries"] == row["n_queries"]
        assert final[f"test_mv/{label}/n_queries"] == row["n_queries"]
        for m in ("R1", "R5", "R10", "R100", "SumR"):
            if row["n_queries"]:
                assert record.test_by_mv[label][m] == row[m] == final[f"test_mv/{label}/{m}"]
    assert final["test/SumR"] == ranks.metrics()["SumR"] == record.test["SumR"]
    val_ranks = EvalResult.load(run_dir / "ranks_val.npz")
    assert val_ranks.metrics()["SumR"] == record.val["SumR"]
    payload = load_checkpoint(run_dir / "best.pt", config_hash=config_hash(cfg))
    assert payload["epoch"] == record.best_epoch
    json.loads(record.to_json())                                   # strict JSON (no NaN)


def test_same_seed_same_metrics_on_cpu(tiny_root, tmp_path):
    cfg = _cfg(tiny_root, tmp_path / "runs", **{"train.epochs": 2})
    a = run_experiment(cfg, run_dir=tmp_path / "a")
    b = run_experiment(cfg, run_dir=tmp_path / "b")
    assert a.val == b.val and a.test == b.test and a.test_by_mv == b.test_by_mv
    ra, rb = (EvalResult.load(tmp_path / d / "ranks_test.npz") for d in "ab")
    np.testing.assert_array_equal(ra.rank, rb.rank)
    c = run_experiment(load_config("mean-pool", "tvr", data_root=tiny_root,
                                   overrides={**{k: v for k, v in _flat_sets(cfg).items()}, "seed": 7}),
                       run_dir=tmp_path / "c")
    assert c.seed == 7 and c.test != a.test                        # the seed matters


def _flat_sets(cfg):
    return {"device": "cpu", "tracking.runs_dir": cfg.tracking.runs_dir, "train.epochs": 2,
            "optim.lr": 1e-3, "train.batch_size": 16}


def test_early_stop_after_patience(tiny_root, tmp_path):
    # lr 1e-12 leaves the float32 weights unchanged, so val SumR never strictly improves
    cfg = _cfg(tiny_root, tmp_path / "runs", **{"train.epochs": 10, "optim.lr": 1e-12,
                                                "train.early_stop_patience": 2})
    record = run_experiment(cfg, run_dir=tmp_path / "run")
    assert record.best_epoch == 0
    assert record.stopped_early and record.epochs_run == 4         # es_cnt reaches 3 > 2 at epoch 4


def test_hook_exception_propagates(tiny_root, tmp_path):
    class Stop(Exception):
        pass

    def hook(summary: EpochSummary):
        assert "val/SumR" in summary.metrics and summary.epoch == 0
        raise Stop

    with pytest.raises(Stop):
        run_experiment(_cfg(tiny_root, tmp_path / "runs"), hooks=[hook], run_dir=tmp_path / "run")


def test_non_finite_loss_names_term_epoch_and_step(tiny_root, tmp_path):
    cfg = _cfg(tiny_root, tmp_path / "runs")
    prepared = prepare(cfg)
    with torch.no_grad():
        prepared.method.query_proj[1].weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"'loss'.*epoch 0 \(0-based\), step 0"):
        fit(prepared.method, prepared.splits, cfg, run_dir=tmp_path / "run")


def test_val_equal_to_test_is_flagged(tiny_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_root / "tvr", root / "tvr")
    text = root / "tvr" / "TextData"
    shutil.copyfile(text / "tvrval.caption.txt", text / "tvrtest.caption.txt")
    tracker = CollectingTracker()
    record = run_experiment(_cfg(root, tmp_path / "runs", **{"train.epochs": 1}), tracker,
                            run_dir=tmp_path / "run")
    assert record.val_equals_test is True and tracker.tags[Tag.VAL_EQUALS_TEST] == "true"


def test_checkpoint_refuses_other_config(tmp_path):
    state = {"w": torch.arange(3.0)}
    path = save_checkpoint(tmp_path / "best.pt", state, config_hash="a" * 64, epoch=2,
                           metrics={"val/SumR": 1.5})
    payload = load_checkpoint(path, config_hash="a" * 64)
    assert torch.equal(payload["state_dict"]["w"], state["w"]) and payload["epoch"] == 2
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path, config_hash="b" * 64)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pt", config_hash="a" * 64)
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]     # no temporary file left


# -- CLI -------------------------------------------------------------------------------------

def _cli(capsys, *argv):
    code = train_cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_unknown_method(capsys, tiny_root):
    code, _, err = _cli(capsys, "--method", "mean-pol", "--collection", "tvr",
                        "--data-root", str(tiny_root))
    assert code == 2
    assert err.startswith("error: unknown method 'mean-pol'; did you mean mean-pool")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_unknown_set_key(capsys, tiny_root):
    code, _, err = _cli(capsys, "--method", "mean-pool", "--collection", "tvr", "--data-root",
                        str(tiny_root), "--set", "method.temprature=0.1")
    assert code == 2
    assert "unknown config key 'method.temprature'; did you mean temperature?" in err
    assert err.count("\n") == 1


def test_cli_wrong_type_and_malformed_set(capsys, tiny_root):
    code, _, err = _cli(capsys, "--method", "mean-pool", "--collection", "tvr", "--data-root",
                        str(tiny_root), "--set", "train.batch_size=many")
    assert code == 2 and "'train.batch_size'" in err and "many" in err
    code, _, err = _cli(capsys, "--method", "mean-pool", "--collection", "tvr", "--data-root",
                        str(tiny_root), "--set", "train.epochs")
    assert code == 2 and "key=value" in err


def test_cli_bad_data_root_fails_before_training(capsys, tmp_path):
    code, _, err = _cli(capsys, "--method", "mean-pool", "--collection", "tvr",
                        "--data-root", str(tmp_path / "nowhere"))
    assert code == 2 and "nowhere" in err and err.count("\n") == 1


def test_cli_list_methods(capsys):
    code, out, _ = _cli(capsys, "--list-methods")
    assert code == 0
    lines = out.splitlines()
    base = next(i for i, line in enumerate(lines) if line.startswith("mean-pool "))
    assert "minimal baseline" in lines[base]
    assert any(line.startswith("  mean-pool.t2v-only ") for line in lines[base + 1:])


@pytest.mark.slow
def test_cli_trains_and_tracks_in_mlflow(tiny_root, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "record.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.train", "--method", "mean-pool.t2v-only",
         "--collection", "tvr", "--data-root", str(tiny_root), "--epochs", "1", "--seed", "5",
         "--device", "cpu", "--set", "train.batch_size=16", "--json-out", str(out),
         "--tracking-uri", uri, "--runs-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "test R1" in proc.stdout
    record = RunRecord.load(out)
    assert record.variant == "mean-pool.t2v-only" and record.seed == 5 and record.epochs_run == 1
    assert record.config["method"]["v2t_weight"] == 0.0
    from benchmark import tracking
    run = tracking.get_run(uri, record.run_id)
    assert run["run_name"] == "mean-pool.t2v-only-tvr-synthetic-s5" and run["status"] == "FINISHED"
    assert run["tags"]["method"] == "mean-pool" and run["tags"]["synthetic"] == "true"
    assert run["params"]["method.v2t_weight"] == "0.0" and run["params"]["train.epochs"] == "1"
    assert run["metrics"]["test/SumR"] == pytest.approx(record.test["SumR"])
    assert Path(record.run_dir).parent == tmp_path / "runs" / "checkpoints"


def test_anon_peak_sees_an_allocation_and_not_a_mapped_file(tmp_path):
    """The anonymous-RSS peak grows with memory the process allocates, and not with the pages of
    a memory-mapped file it reads (those are page cache, reported only in the plain RSS).

    Both mappings are made with ``mmap`` directly, so the allocator's reuse of memory freed by
    earlier tests cannot hide the growth."""
    import mmap

    from benchmark.memory import AnonPeak, anon_rss_mb

    if not math.isfinite(anon_rss_mb()):
        pytest.skip("no RssAnon in /proc/self/status on this platform")
    size, page = 64 * 2**20, mmap.PAGESIZE
    path = tmp_path / "big.bin"
    with path.open("wb") as handle:
        handle.truncate(size)                                           # a 64 MB file
    with AnonPeak(interval_s=0.001) as mapped, path.open("rb") as handle:
        start = mapped.peak_mb()
        view = mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ)
        touched = sum(view[i] for i in range(0, size, page))           # read every page
        mapped_growth = mapped.peak_mb() - start
        view.close()
    with AnonPeak(interval_s=0.001) as allocated:
        start = allocated.peak_mb()
        block = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)   # 64 MB, private
        for i in range(0, size, page):
            block[i] = 1                                                # write every page
        allocated_growth = allocated.peak_mb() - start
        block.close()
    assert touched == 0
    assert allocated_growth > 48, allocated_growth
    assert mapped_growth < 16, mapped_growth
