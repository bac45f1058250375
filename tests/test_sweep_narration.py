"""What a sweep and a training run say while they work (issue 14 item 3, issue 17 item 2), and
the README/CLI promises of issue 14 item 4.

No mocks: real sweeps (spawned workers, SQLite Optuna storage, SQLite MLflow store) and real
training runs in subprocesses whose stdout and stderr go to files, as in a cluster log. No
assertion depends on how long anything takes: the progress interval is set to a nanosecond,
so a line is due at every step.
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from benchmark import console, tracking
from benchmark.console import ConsoleSettingError, TrainingConsole, resolve_progress_seconds
from benchmark.data import prepared
from benchmark.data.synthetic import generate
from sweeps import narration, runner, studies
from sweeps.run import main, studies_markdown

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TAG = re.compile(r"^\[t(\d{3})(?: ([^\]]*))?\] ")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), env.get("PYTHONPATH", "")])
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"})
    env.update(extra)
    return env


def _run_to_files(args: list[str], tmp_path: Path, **env: str) -> tuple[int, list[str], list[str]]:
    """Run ``python ARGS`` with stdout and stderr redirected to files (not a terminal)."""
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with open(out, "w") as fo, open(err, "w") as fe:
        rc = subprocess.run([sys.executable, *args], stdout=fo, stderr=fe, cwd=tmp_path,
                            env=_env(**env), timeout=600).returncode
    return rc, out.read_text().splitlines(), err.read_text().splitlines()


# -- issue 14 item 3: a sweep that says what it is doing -----------------------------------------
@pytest.mark.slow
def test_every_worker_line_names_its_trial_and_outcomes_are_said(tiny_root, tmp_path):
    """Two spawned workers run the 3-trial study of tests/narration_sweep.py (one diverges,
    one completes, one is pruned, all for real); their lines share one stderr file."""
    runs = tmp_path / "runs"
    runs.mkdir()
    # create the MLflow tables here, so the launcher's one-off "creating tables" log lines do
    # not sit among the workers' lines
    tracking.check_reachable(f"sqlite:///{runs}/mlflow.db")
    rc, out, err = _run_to_files(
        ["-c", "import narration_sweep as m; m.main()", str(tiny_root), str(runs), "2"],
        tmp_path, PRVR_PROGRESS_SECONDS="1e-9")
    assert rc == 0, "\n".join(out + err)
    assert err, "the workers printed nothing"

    study = optuna.load_study(study_name="narration-tvr-synthetic",
                              storage=f"sqlite:///{runs}/optuna.db")
    trials = {t.number: t for t in study.get_trials()}
    assert [trials[n].state for n in range(3)] == [TrialState.FAIL, TrialState.COMPLETE,
                                                   TrialState.PRUNED]
    by_trial: dict[int, list[str]] = {n: [] for n in trials}
    for line in err:                           # every worker line, whole, names its trial
        m = TAG.match(line)
        assert m, f"worker line without its trial's tag: {line!r}"
        n = int(m.group(1))
        # ... and the trial's swept values, as the Optuna storage holds them
        assert line.startswith(narration.trial_tag(n, trials[n].params) + " "), line
        by_trial[n].append(line[m.end():])

    for n, lines in by_trial.items():
        assert lines[0].startswith("started: mean-pool seed 0, up to "), lines[0]   # the study seed
        assert "(worker " in lines[0]
        assert any(x.startswith("starting: mean-pool on tvr (synthetic)") for x in lines)
        assert any(re.match(r"step \d+/\d+ \(epoch \d+/\d+, \d+/\d+\)  [\d.]+ samples/s  "
                            r"ETA \S+  loss [-\d.e+]+$", x) for x in lines), lines
        assert re.match(r"sweep [123]/3 finished: \d complete, \d pruned, \d failed; "
                        r"\d running; ", lines[-1]), lines[-1]

    failed = by_trial[0]
    assert any(x.startswith("failed: NonFiniteLossError: mean-pool: non-finite loss")
               for x in failed), failed
    assert f"complete: val/SumR {trials[1].value:.2f}" in by_trial[1]
    pruned = [x for x in by_trial[2] if x.startswith("pruned")]
    assert pruned == [f"pruned after epoch 3: val/SumR {trials[2].intermediate_values[2]:.2f} "
                      "(the pruner's verdict)"]

    summaries = [line for line in err if "finished:" in line]
    assert len(summaries) == 3                 # one running summary after each trial
    last = [line for line in summaries if "sweep 3/3 finished" in line]
    assert len(last) == 1 and last[0].endswith(
        f"sweep 3/3 finished: 1 complete, 1 pruned, 1 failed; 0 running; "
        f"best t001 val/SumR {trials[1].value:.2f} (lr=0.00025)")


def test_a_failing_space_prints_the_failed_line(tiny_root, tmp_path, capfd):
    """A space that raises is a bug, not a divergence: the worker stops with it, but says
    first, under the trial's tag, which trial failed and why."""
    spec = studies.StudySpec(name="narration-raise", method="mean-pool", space=_raising_space,
                             summary="raises", n_trials=1, epochs=1, pruner="none")
    runs = tmp_path / "runs"
    with pytest.raises(ValueError, match="no such knob"):
        runner.run_study(spec, "tvr", data_root=tiny_root, runs_dir=runs, workers=0,
                         storage_url=f"sqlite:///{runs}/optuna.db",
                         tracking_uri=f"sqlite:///{runs}/mlflow.db", log=lambda m: None)
    err = capfd.readouterr().err.splitlines()
    assert "[t000] failed: ValueError: no such knob 'method.nope'" in err
    assert any(line.startswith("[t000] sweep 1/1 finished: 0 complete, 0 pruned, 1 failed")
               for line in err), err
    assert console.line_prefix() == ""          # the tag does not outlive its trial


def _raising_space(trial: optuna.Trial) -> dict:
    raise ValueError("no such knob 'method.nope'")


def test_short_params_and_tag():
    assert narration.trial_tag(3, {}) == "[t003]"
    params = {"method.kd_decay.kind": "exp", "method.kd_decay.base": 0.91234,
              "method.kd_temperature": 0.123456}
    assert narration.trial_tag(3, params) == "[t003 kind=exp base=0.912 kd_temperature=0.123]"
    # two names that end alike keep one more segment each
    assert narration.short_params({"a.lr": 1e-4, "b.lr": 2e-4}) == "a.lr=0.0001 b.lr=0.0002"


def test_generation_says_how_far_it_is_and_writes_the_same_bytes(tmp_path):
    lines: list[str] = []
    root, synthetic = prepared.prepare_data("tvr", None, tmp_path, profile="tvr", scale="tiny",
                                          log=lines.append)
    assert synthetic
    assert any(line.startswith("data: no data root given; generating") for line in lines)
    chunks = [re.search(r"(\d+)/(\d+) chunks", line) for line in lines]
    seen = [(int(m.group(1)), int(m.group(2))) for m in chunks if m]
    assert seen[0][0] == 1 and seen[-1][0] == seen[-1][1] > 1     # the first and the last chunk
    plain = generate("tvr", "tiny", prepared.DATA_SEED, tmp_path / "plain")   # no progress
    files = sorted(p.relative_to(plain) for p in plain.rglob("*") if p.is_file())
    assert files
    for rel in files:
        assert (root / "tvr" / rel).read_bytes() == (plain / rel).read_bytes(), rel


# -- issue 17 item 2: progress you can see in a log --------------------------------------------------
def test_training_log_has_a_start_line_and_progress_lines(tiny_root, tmp_path):
    rc, out, err = _run_to_files(
        ["-m", "benchmark.train", "--method", "mean-pool", "--collection", "tvr", "--data-root",
         str(tiny_root), "--epochs", "2", "--runs-dir", str(tmp_path / "runs")],
        tmp_path, PRVR_PROGRESS_SECONDS="1e-9")
    assert rc == 0, "\n".join(out + err)
    starting = [i for i, line in enumerate(err) if line.startswith("starting: ")]
    assert starting and err[starting[0]].startswith(
        "starting: mean-pool on tvr (synthetic), 2 epoch(s) × 1 steps = 2 steps; progress line")
    progress = [re.match(r"step (\d+)/2 \(epoch (\d)/2, 1/1\)  ([\d.]+) samples/s  ETA (\S+)  "
                         r"loss ([-\d.e+]+)$", line) for line in err]
    steps = [m for m in progress if m]
    assert [int(m.group(1)) for m in steps] == [1, 2]          # a line is due at every step
    assert all(float(m.group(3)) > 0 for m in steps)
    assert steps[-1].group(4) == "0s"                           # nothing left after the last step
    epochs = [re.match(r"epoch (\d)/2  train/loss (\S+)", line) for line in err]
    epoch_loss = [m.group(2) for m in epochs if m]
    # one step per epoch: the current loss of the step is the epoch's mean loss
    assert [m.group(5) for m in steps] == epoch_loss
    assert starting[0] < err.index(next(line for line in err if line.startswith("step 1/2")))


class _CountingLoss:
    """A loss value that counts how often it is read (reading a CUDA tensor syncs)."""

    def __init__(self, value: float) -> None:
        self.value, self.reads = value, 0

    def item(self) -> float:
        self.reads += 1
        return self.value


def test_loss_is_read_only_when_a_line_is_due():
    stream = io.StringIO()
    c = TrainingConsole(1, 1000, "m", stream=stream, progress_seconds=3600.0)
    losses = [_CountingLoss(float(i)) for i in range(1000)]
    c.start_epoch(0)
    for loss in losses:
        c.advance(samples=8, loss=loss)
    assert sum(x.reads for x in losses) == 0          # no line due in an hour: never read
    assert "step 1000/1000" in c.progress_line()      # a due line reads the latest loss once
    assert [x.reads for x in losses[-2:]] == [0, 1]
    assert stream.getvalue().startswith("starting: m, 1 epoch(s) × 1000 steps")


def test_terminal_bar_shows_rate_and_loss():
    stream = io.StringIO()
    with TrainingConsole(1, 4, "m", stream=stream, force_terminal=True) as c:
        assert c.rich
        c.start_epoch(0)
        for _ in range(4):
            c.advance(samples=8, loss=1.5)
        c.end_epoch(0, {"train/loss": 1.5})
    text = stream.getvalue()
    assert "samples/s" in text and "loss 1.5" in text and "ETA" in text
    assert "epoch 1/1  train/loss 1.5" in text


def test_progress_interval_setting(monkeypatch):
    monkeypatch.delenv(console.PROGRESS_ENV, raising=False)
    assert resolve_progress_seconds() == console.DEFAULT_PROGRESS_SECONDS == 30.0
    monkeypatch.setenv(console.PROGRESS_ENV, "2.5")
    assert resolve_progress_seconds() == 2.5
    assert resolve_progress_seconds(7) == 7.0
    for bad in ("soon", "0", "-1", "nan"):
        monkeypatch.setenv(console.PROGRESS_ENV, bad)
        with pytest.raises(ConsoleSettingError, match=console.PROGRESS_ENV):
            resolve_progress_seconds()


def test_plain_lines_carry_the_prefix_in_one_write():
    stream = io.StringIO()
    console.set_line_prefix("[t007 lr=0.001]")
    try:
        console.write_line("hello", stream)
    finally:
        console.set_line_prefix(None)
    assert stream.getvalue() == "[t007 lr=0.001] hello\n"
    console.write_line("bye", stream)
    assert stream.getvalue().endswith("\nbye\n")


# -- issue 14 item 4: CLI and README -----------------------------------------------------------------
@pytest.mark.parametrize("extra", [[], ["--collection", "tvr"], ["--collection", "nowhere"],
                                   ["--workers", "-3", "--data-root", "/nonexistent"],
                                   ["--n-trials", "0", "--storage", "redis://x"]])
def test_unknown_study_is_named_whatever_the_other_flags(extra, capsys):
    assert main(["--study", "nope", *extra]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and captured.out == ""
    assert err[0].startswith("error: unknown study 'nope'; did you mean ")
    suggestion = err[0].split("did you mean ", 1)[1].split("?", 1)[0]
    known = {s.name for s in studies.list_studies()}
    assert suggestion and set(suggestion.split(", ")) <= known


def test_known_study_then_collection_errors(capsys):
    assert main(["--study", "tvr-default"]) == 2
    assert "--collection is required" in capsys.readouterr().err
    assert main(["--study", "tvr-default", "--collection", "nowhere"]) == 2
    assert "unknown collection 'nowhere'" in capsys.readouterr().err


def test_first_line_comes_before_the_store_checks(tmp_path):
    """The first line is printed before the heavy imports and the store checks: here the
    store is unreachable, and the first line is there all the same."""
    rc, out, err = _run_to_files(
        ["-m", "sweeps.run", "--study", "tvr-default", "--collection", "tvr", "--storage",
         "postgresql+psycopg2://u:p@127.0.0.1:9/x", "--runs-dir", str(tmp_path / "runs")],
        tmp_path)
    assert rc == 2
    assert out[0].startswith("sweep: study 'tvr-default' on tvr (dl-dkd++, ")
    assert err[-1].startswith("error: ") and "is not reachable" in err[-1]


def test_readme_study_table_is_the_registry():
    """The README's study table is generated: ``python -m sweeps.run --list --markdown``."""
    readme = (REPO / "README.md").read_text()
    begin, end = "<!-- studies: python -m sweeps.run --list --markdown -->\n", "<!-- /studies -->"
    assert begin in readme and end in readme
    table = readme.split(begin, 1)[1].split(end, 1)[0]
    assert table == studies_markdown(studies.list_studies()), \
        "README study table is stale: paste `python -m sweeps.run --list --markdown`"


def test_every_third_party_import_is_a_declared_dependency():
    """``python -m benchmark.report`` once failed on a missing pandas: every package the code
    imports (pandas for the report included) is a pinned dependency in pyproject.toml, so
    the environment nox builds from it runs every command the README shows. Files under
    benchmark/features/ may also use the pins of the `features` extra."""
    import ast
    import importlib.metadata
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def pinned(deps):
        return {re.split(r"[=<>!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-"): d
                for d in deps}

    pins = pinned(project["dependencies"])
    # benchmark/features/ (python -m benchmark.features) may also use its own extra's pins
    extra_pins = {"benchmark/features/": pins | pinned(project["optional-dependencies"]["features"])}
    assert all("==" in d for d in extra_pins["benchmark/features/"].values()), extra_pins
    dists = importlib.metadata.packages_distributions()
    first_party = {"benchmark", "methods", "sweeps", "reports", "bench"}
    imported: dict[tuple[str, str], str] = {}
    for package in sorted(first_party):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in first_party:
                        imported.setdefault((top, str(path.relative_to(REPO))), top)
    assert "pandas" in imported.values()              # the report's tables need it
    assert "transformers" in imported.values()        # the features extra is checked too

    def allowed(where: str) -> dict[str, str]:
        return next((p for prefix, p in extra_pins.items() if where.startswith(prefix)), pins)

    undeclared = {top: where for (top, where) in imported
                  if not {d.lower().replace("_", "-") for d in dists.get(top, [])} & set(allowed(where))}
    assert not undeclared, f"imported but not pinned in pyproject.toml: {undeclared}"


def test_a_long_step_still_gets_a_line(tmp_path):
    """The ticker thread speaks when a step outlasts the interval. The step here is a wait on
    an event that only the ticker's line releases, so the test waits for the line, not for
    a time."""
    import threading

    class _Signalling(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.waiting = threading.Event()

        def write(self, text: str) -> int:
            if "running for" in text:
                self.waiting.set()
            return super().write(text)

    stream = _Signalling()
    with TrainingConsole(1, 2, "m", stream=stream, progress_seconds=0.01) as c:
        c.start_epoch(0)
        c.advance(samples=4, loss=2.0)
        assert stream.waiting.wait(timeout=120), stream.getvalue()   # step 2 "runs" until then
        c.advance(samples=4, loss=1.0)
    lines = stream.getvalue().splitlines()
    assert any(re.fullmatch(r"step 1/2 \(epoch 1/1, 1/2\): step 2 running for \d+s", x)
               for x in lines), lines
