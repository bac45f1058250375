"""Exact resume (issue 17 item 3; benchmark/training/resume.py).

The main test kills a real ``python -m benchmark.train`` with SIGKILL in the middle of an epoch
(once last.ckpt of the epoch before exists and the process has spent CPU time in the next one,
both read from the file system) and resumes it with ``--resume``: the record's val/test metrics
and the best checkpoint must equal those of an uninterrupted run bit for bit (CPU, one thread in
every process). The other tests crash a run in-process with a real exception from a hook (hooks
run after last.ckpt is written) and resume it, and check every refusal of the CLI.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from benchmark import tracking
from benchmark.config import config_hash, load_config
from benchmark.experiment import run_experiment
from benchmark.record import RunRecord
from benchmark.train import main
from benchmark.training.resume import LAST_CHECKPOINT, ResumeError, check_resumable, read_last
from sweeps import objective as obj
from sweeps import runner
from sweeps.studies import StudySpec

REPO = Path(__file__).resolve().parents[1]
#: ms-sl has dropout, hard negatives (from epoch 1 here) and the full reference optimiser.
KILLED = ["--method", "ms-sl", "--collection", "tvr", "--epochs", "3", "--seed", "0",
          "--device", "cpu", "--set", "train.batch_size=16",
          "--set", "method.hard_negative_start_epoch=1"]
KILL_EPOCH = 2                    # killed while training epoch 2 (0-based): last.ckpt says 2 done
CPU_TICKS_INTO_EPOCH = 20         # 0.2 s of CPU after last.ckpt of epoch 1 appeared


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0",
               MLFLOW_DISABLE_TELEMETRY="true", PYTHONPATH=str(REPO))
    return env


def _command(root: Path, runs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "benchmark.train", *KILLED, "--data-root", str(root),
            "--runs-dir", str(runs), *extra]


def _cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _epochs_done(last: Path) -> int:
    return int(read_last(last)["loop"]["epochs_done"])


def _kill_during_epoch(proc: subprocess.Popen, checkpoints: Path, epoch: int) -> Path:
    """SIGKILL ``proc`` once a last.ckpt under ``checkpoints`` records ``epoch`` epochs done
    and the process has spent CPU_TICKS_INTO_EPOCH ticks since; return its run directory."""
    seen_mtime, ticks_at_checkpoint, last = None, None, None
    while proc.poll() is None:
        time.sleep(0.02)                                  # poll interval, not a synchronisation
        found = sorted(checkpoints.glob(f"*/{LAST_CHECKPOINT}"))
        if not found:
            continue
        last = found[0]
        mtime = last.stat().st_mtime_ns
        if ticks_at_checkpoint is None and mtime != seen_mtime:
            seen_mtime = mtime
            if _epochs_done(last) == epoch:
                ticks_at_checkpoint = _cpu_ticks(proc.pid)
        if ticks_at_checkpoint is not None and \
                _cpu_ticks(proc.pid) - ticks_at_checkpoint >= CPU_TICKS_INTO_EPOCH:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed: {proc.returncode}"
    assert last is not None
    return last.parent


def _state_dicts_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tiny_root, tmp_path):
    env = _env()
    mlflow = f"sqlite:///{tmp_path / 'mlflow.db'}"
    whole_json, resumed_json = tmp_path / "whole.json", tmp_path / "resumed.json"
    # the uninterrupted run and the one to kill run side by side (one thread each)
    whole = subprocess.Popen(_command(tiny_root, tmp_path / "whole", "--json-out", str(whole_json)),
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = subprocess.Popen(_command(tiny_root, tmp_path / "killed", "--tracking-uri", mlflow),
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = _kill_during_epoch(victim, tmp_path / "killed" / "checkpoints", KILL_EPOCH)
    assert _epochs_done(run_dir / LAST_CHECKPOINT) == KILL_EPOCH      # died inside epoch 2
    assert not (run_dir / "record.json").exists()
    run_id = read_last(run_dir / LAST_CHECKPOINT)["loop"]["run_id"]
    assert run_id and tracking.get_run(mlflow, run_id)["status"] == "RUNNING"

    resumed = subprocess.run(_command(tiny_root, tmp_path / "killed", "--tracking-uri", mlflow,
                                      "--resume", str(run_dir), "--json-out", str(resumed_json)),
                             env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run_dir} after epoch {KILL_EPOCH} of 3" in resumed.stderr
    out, _ = whole.communicate()
    assert whole.returncode == 0, out

    want, got = RunRecord.load(whole_json), RunRecord.load(resumed_json)
    assert got.val == want.val and got.test == want.test and got.secondary == want.secondary
    assert (got.best_epoch, got.epochs_run, got.stopped_early) == \
        (want.best_epoch, want.epochs_run, want.stopped_early)
    want_best = torch.load(Path(want.run_dir or "") / "best.pt", weights_only=True)
    got_best = torch.load(run_dir / "best.pt", weights_only=True)
    assert got_best["epoch"] == want_best["epoch"] == want.best_epoch
    _state_dicts_equal(got_best["state_dict"], want_best["state_dict"])
    assert not (run_dir / LAST_CHECKPOINT).exists()          # a finished run keeps no last.ckpt
    # the same MLflow run continued: every epoch logged once, the run finished
    assert got.run_id == run_id
    assert [s for s, _ in tracking.metric_history(mlflow, run_id, "val/SumR")] == [0, 1, 2]
    assert tracking.get_run(mlflow, run_id)["status"] == "FINISHED"


# -- in-process crashes: a hook raises after last.ckpt of an epoch is written ----------------------

class Crash(Exception):
    """Stands for the process dying between two epochs."""


def _crash_after(epoch: int):
    def hook(summary) -> None:
        if summary.epoch == epoch:
            raise Crash(f"crash after epoch {epoch}")
    return hook


def _cfg(root: Path, runs: Path, method: str = "mean-pool", **sets):
    overrides = {"device": "cpu", "tracking.runs_dir": str(runs), "train.epochs": 3,
                 "train.batch_size": 16, "seed": 0, **sets}
    return load_config(method, "tvr", data_root=root, overrides=overrides)


def _crash_and_resume(cfg, run_dir: Path, epoch: int) -> RunRecord:
    with pytest.raises(Crash):
        run_experiment(cfg, hooks=[_crash_after(epoch)], run_dir=run_dir)
    assert _epochs_done(run_dir / LAST_CHECKPOINT) == epoch + 1
    return run_experiment(cfg, run_dir=run_dir, resume=True)


def _same_run(got: RunRecord, want: RunRecord) -> None:
    assert got.val == want.val and got.test == want.test
    assert (got.best_epoch, got.epochs_run, got.stopped_early) == \
        (want.best_epoch, want.epochs_run, want.stopped_early)
    _state_dicts_equal(torch.load(Path(got.run_dir or "") / "best.pt", weights_only=True)["state_dict"],
                       torch.load(Path(want.run_dir or "") / "best.pt", weights_only=True)["state_dict"])


def test_progress_clock_resumes_exactly(tiny_root, tmp_path):
    cfg = _cfg(tiny_root, tmp_path, "ms-sl", **{"train.epochs": 2, "train.schedule_clock": "progress"})
    want = run_experiment(cfg, run_dir=tmp_path / "whole")
    got = _crash_and_resume(cfg, tmp_path / "crashed", epoch=0)
    _same_run(got, want)


@pytest.mark.parametrize("crash_epoch", [1, 3])    # 3: the epoch that stops the run
def test_early_stop_state_survives_a_resume(tiny_root, tmp_path, crash_epoch):
    # lr 1e-12 leaves the weights unchanged: val SumR never strictly improves after epoch 0,
    # so es_cnt reaches 3 > patience 2 at epoch 3 (4 epochs run of 10)
    cfg = _cfg(tiny_root, tmp_path, **{"train.epochs": 10, "optim.lr": 1e-12,
                                       "train.early_stop_patience": 2})
    want = run_experiment(cfg, run_dir=tmp_path / "whole")
    assert want.stopped_early and want.epochs_run == 4
    got = _crash_and_resume(cfg, tmp_path / "crashed", epoch=crash_epoch)
    _same_run(got, want)


# -- the CLI's refusals ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crashed_run(tiny_root, tmp_path_factory) -> tuple[Path, Path]:
    """(runs dir, run dir) of a mean-pool run of the CLI's default config that crashed after
    epoch 0 of 2, with its last.ckpt."""
    runs = tmp_path_factory.mktemp("crashed")
    cfg = _cfg(tiny_root, runs, **{"train.epochs": 2, "seed": 5})
    run_dir = runs / "checkpoints" / "crashed-run"
    with pytest.raises(Crash):
        run_experiment(cfg, hooks=[_crash_after(0)], run_dir=run_dir)
    return runs, run_dir


def _cli(capsys, root: Path, runs: Path, *extra: str) -> tuple[int, str]:
    code = main(["--method", "mean-pool", "--collection", "tvr", "--data-root", str(root),
                 "--device", "cpu", "--epochs", "2", "--runs-dir", str(runs),
                 "--set", "train.batch_size=16", *extra])
    return code, capsys.readouterr().err


def test_resume_refuses_another_config(capsys, tiny_root, crashed_run):
    runs, run_dir = crashed_run
    code, err = _cli(capsys, tiny_root, runs, "--seed", "6", "--resume", str(run_dir))
    assert code == 2
    assert str(run_dir / LAST_CHECKPOINT) in err and "config hash" in err


def test_resume_refuses_missing_damaged_and_finished(capsys, tiny_root, tmp_path, crashed_run):
    runs, run_dir = crashed_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / LAST_CHECKPOINT).write_bytes((run_dir / LAST_CHECKPOINT).read_bytes()[:1000])
    code, err = _cli(capsys, tiny_root, runs, "--seed", "5", "--resume", str(copy))
    assert code == 2 and str(copy / LAST_CHECKPOINT) in err and "cannot read" in err

    (copy / LAST_CHECKPOINT).unlink()
    code, err = _cli(capsys, tiny_root, runs, "--seed", "5", "--resume", str(copy))
    assert code == 2 and str(copy / LAST_CHECKPOINT) in err and "not found" in err

    shutil.copy(run_dir / LAST_CHECKPOINT, copy / LAST_CHECKPOINT)
    (copy / "record.json").write_text("{}")
    code, err = _cli(capsys, tiny_root, runs, "--seed", "5", "--resume", str(copy))
    assert code == 2 and "is finished" in err and str(copy / "record.json") in err

    code, err = _cli(capsys, tiny_root, tmp_path / "empty", "--seed", "5", "--resume", "auto")
    assert code == 2 and "no unfinished run" in err


def test_resume_auto_finds_the_run_and_finishes_it(capsys, tiny_root, tmp_path, crashed_run):
    runs, run_dir = crashed_run
    copy_runs = tmp_path / "runs"
    shutil.copytree(runs, copy_runs)
    json_out = tmp_path / "record.json"
    mlflow = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, err = _cli(capsys, tiny_root, copy_runs, "--seed", "5", "--resume", "auto",
                     "--json-out", str(json_out), "--tracking-uri", mlflow)
    assert code == 0, err
    resumed_dir = copy_runs / "checkpoints" / run_dir.name
    assert f"resuming {resumed_dir} after epoch 1 of 2" in err
    assert "was not tracked in MLflow; the resumed epochs go to a new MLflow run" in err
    record = RunRecord.load(json_out)
    assert record.run_dir == str(resumed_dir) and record.epochs_run == 2
    assert record.run_id is not None
    assert [s for s, _ in tracking.metric_history(mlflow, record.run_id, "val/SumR")] == [1]
    want = run_experiment(_cfg(tiny_root, tmp_path, **{"train.epochs": 2, "seed": 5}),
                          run_dir=tmp_path / "whole")
    assert record.val == want.val and record.test == want.test
    with pytest.raises(ResumeError, match="is finished"):       # once finished, never again
        check_resumable(resumed_dir, config_hash(_cfg(tiny_root, copy_runs,
                                                       **{"train.epochs": 2, "seed": 5})))


def test_last_checkpoint_holds_what_the_record_needs(tiny_root, tmp_path, crashed_run):
    _, run_dir = crashed_run
    payload = read_last(run_dir / LAST_CHECKPOINT)
    assert set(payload) == {"format", "config_hash", "model", "optimizer", "rng", "loop"}
    assert set(payload["rng"]) == {"python", "numpy", "torch", "cuda", "shuffle"}
    loop = payload["loop"]
    assert (loop["epochs_done"], loop["step"], loop["es_cnt"], loop["best_epoch"]) == (1, 3, 0, 0)
    assert len(loop["epoch_times"]) == 1 and len(loop["eval_times"]) == 1
    assert loop["best_val"]["per_key"]["score"]["rank"].dtype == torch.int64


# -- sweeps: a killed trial is continued by a new trial from its last epoch ------------------------

def space_fixed_lr(trial: optuna.Trial) -> dict:
    """Every trial the same config (module level: spawned workers unpickle it by name)."""
    return {"optim.lr": trial.suggest_float("optim.lr", 5e-4, 5e-4)}


def _sweep_trials(url: str, name: str) -> list:
    study = optuna.load_study(study_name=name, storage=url)
    return sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)


@pytest.mark.slow
def test_sigkilled_sweep_trial_is_resumed_from_its_last_epoch(tiny_root, tmp_path):
    """Trial 0 runs whole; trial 1 (same config, same seed) is SIGKILLed mid-way with its
    worker; the rerun enqueues trial 2, which resumes trial 1's run directory and ends with
    trial 0's value, record and best checkpoint exactly."""
    epochs = 4
    spec = StudySpec(name="resumed", method="mean-pool", space=space_fixed_lr, summary="test",
                     n_trials=2, epochs=epochs, pruner="none",
                     overrides={"train.batch_size": 16, "device": "cpu",
                                "train.early_stop_patience": 100})
    url, mlflow = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    kw = dict(data_root=tiny_root, storage_url=url, tracking_uri=mlflow,
              runs_dir=tmp_path / "runs", workers=1, log=lambda line: None)
    box: dict = {}

    def first_launch():
        try:
            runner.run_study(spec, "tvr", **kw)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            box["error"] = exc

    launcher = threading.Thread(target=first_launch)
    launcher.start()
    victim, last = None, None
    while launcher.is_alive() and victim is None:
        time.sleep(0.02)                                  # poll interval, not a synchronisation
        try:
            trials = _sweep_trials(url, "resumed-tvr-synthetic")
        except KeyError:
            continue
        running = [t for t in trials if t.number == 1 and t.state == TrialState.RUNNING
                   and obj.ATTR_RUN_DIRS in t.user_attrs]
        if running:
            last = Path(next(iter(running[0].user_attrs[obj.ATTR_RUN_DIRS].values()))) / LAST_CHECKPOINT
            if last.is_file() and _epochs_done(last) >= 1:
                victim = running[0]
                os.kill(int(victim.user_attrs[obj.ATTR_PID]), signal.SIGKILL)
    launcher.join()
    assert victim is not None and last is not None, f"never saw trial 1 after an epoch: {box}"
    assert isinstance(box.get("error"), runner.WorkersDiedError), box
    killed_at = _epochs_done(last)
    assert 1 <= killed_at < epochs and not (last.parent / "record.json").exists()   # mid-way

    runner.run_study(spec, "tvr", **kw)                                         # the rerun
    t0, t1, t2 = _sweep_trials(url, "resumed-tvr-synthetic")
    assert [t.state for t in (t0, t1, t2)] == [TrialState.COMPLETE, TrialState.FAIL,
                                               TrialState.COMPLETE]
    assert t1.user_attrs[obj.ATTR_OUTCOME] == "stale"
    assert "is gone; resumed as trial 2" in t1.user_attrs[obj.ATTR_FAIL_REASON]
    assert t1.user_attrs[obj.ATTR_RESUMED_AS] == 2 and t2.user_attrs[obj.ATTR_RESUME_OF] == 1
    assert t2.user_attrs[obj.ATTR_RUN_DIRS] == t1.user_attrs[obj.ATTR_RUN_DIRS]
    assert list(t2.user_attrs[obj.ATTR_RESUMED_EPOCHS].values()) == [killed_at]
    assert sorted(t2.intermediate_values) == list(range(epochs))     # the whole curve, once
    assert t2.value == t0.value
    want = RunRecord.load(Path(next(iter(t0.user_attrs[obj.ATTR_RUN_DIRS].values()))) / "record.json")
    got = RunRecord.load(last.parent / "record.json")
    assert got.val == want.val and got.test == want.test and got.epochs_run == epochs
    _state_dicts_equal(torch.load(last.parent / "best.pt", weights_only=True)["state_dict"],
                       torch.load(Path(want.run_dir or "") / "best.pt", weights_only=True)["state_dict"])
    # MLflow: the killed run FAILED; the resumed run says what it continues and has the rest
    old_run, new_run = t1.user_attrs[obj.ATTR_RUN_ID], t2.user_attrs[obj.ATTR_RUN_ID]
    assert tracking.get_run(mlflow, old_run)["status"] == "FAILED"
    resumed = tracking.get_run(mlflow, new_run)
    assert resumed["status"] == "FINISHED" and resumed["tags"][obj.TAG_RESUMED_FROM] == old_run
    assert [s for s, _ in tracking.metric_history(mlflow, new_run, "val/SumR")] == \
        list(range(killed_at, epochs))
