"""Does a short budget predict the long recipe? (docs/sweeps.md; issue: budgeted runs)

``python -m sweeps.budget_study`` trains a fixed grid of DL-DKD++ (KD decay, temperature)
settings, spread over the ``tvr-default`` space, at three budgets:

* ``short-epoch``: 4 epochs on the epoch clock (the schedules of the first 4 reference epochs);
* ``short-progress``: 4 epochs on the progress clock (the whole 120-epoch curves, compressed);
* ``long-progress``: a long budget (default 16 epochs, 4× the short one) on the progress clock.

Each budget is an ordinary study (grid enqueued, no pruning, every trial on the same seed),
run by ``sweeps.runner`` into one Optuna storage and one MLflow store, so the runs are in the UI
and the report like any sweep's. At the end it ranks the settings by test SumR at each budget
and prints Kendall τ between each short ranking and the long one, with the cost of each budget,
as a markdown table (also written to ``<runs>/budget-study.md`` and ``.json``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from scipy.stats import kendalltau

from benchmark import stores, tracking
from benchmark.errors import PRVRBenchError
from benchmark.interface import ScheduleClock
from sweeps import runner, spaces
from sweeps.studies import StudySpec

#: The grid: (KD decay kind, its parameter, τ), spread over the tvr-default space
#: (sweeps/spaces.py: kinds constant/exp/linear/sigmoid, τ ∈ [0.05, 2] on a log scale).
SETTINGS: tuple[dict[str, Any], ...] = (
    {"method.kd_decay.kind": "constant", "method.kd_temperature": 0.05},
    {"method.kd_decay.kind": "exp", "method.kd_decay.base": 0.8, "method.kd_temperature": 0.2},
    {"method.kd_decay.kind": "exp", "method.kd_decay.base": 0.95, "method.kd_temperature": 1.0},
    {"method.kd_decay.kind": "linear", "method.kd_decay.slope": -0.05, "method.kd_temperature": 0.5},
    {"method.kd_decay.kind": "sigmoid", "method.kd_decay.sigmoid_k": 100.0, "method.kd_temperature": 0.1},
    {"method.kd_decay.kind": "sigmoid", "method.kd_decay.sigmoid_k": 2000.0, "method.kd_temperature": 2.0},
)


@dataclass(frozen=True)
class Budget:
    name: str
    epochs: int
    clock: ScheduleClock


def budgets(short: int, long: int) -> tuple[Budget, ...]:
    return (Budget("short-epoch", short, "epoch"), Budget("short-progress", short, "progress"),
            Budget("long-progress", long, "progress"))


def grid() -> list[dict[str, Any]]:
    return [dict(s) for s in SETTINGS]


def budget_spec(budget: Budget, workers: int) -> StudySpec:
    return StudySpec(name=f"budget-{budget.name}-e{budget.epochs}", method="dl-dkd++",
                     space=spaces.kd_decay_temperature, grid=grid, sampler="random", pruner="none",
                     summary=f"budget study: the fixed grid at {budget.epochs} epochs, "
                             f"{budget.clock} clock", n_trials=len(SETTINGS), workers=workers,
                     epochs=budget.epochs, schedule_clock=budget.clock)


def setting_label(params: dict[str, Any]) -> str:
    kind = params["method.kd_decay.kind"]
    knob = {"exp": "base", "linear": "slope", "sigmoid": "sigmoid_k"}.get(kind)
    inner = f" {knob}={params[f'method.kd_decay.{knob}']:g}" if knob else ""
    return f"{kind}{inner}, τ={params['method.kd_temperature']:g}"


def sumr_by_setting(result: runner.SweepResult, storage_url: str,
                    tracking_uri: str) -> tuple[dict[str, float], float]:
    """({setting label: test SumR of its run}, worker-seconds of its trials) for one budget's
    finished study."""
    study = optuna.load_study(study_name=result.study_name, storage=storage_url)
    wanted = {setting_label(s) for s in SETTINGS}
    out: dict[str, float] = {}
    worker_seconds = 0.0
    for trial in study.get_trials(deepcopy=False):
        label = setting_label(trial.params) if "method.kd_decay.kind" in trial.params else ""
        if label not in wanted or trial.state != optuna.trial.TrialState.COMPLETE:
            continue      # a trial beyond the grid (two launchers raced for the last point)
        run = tracking.get_run(tracking_uri, trial.user_attrs["mlflow_run_id"])
        out[label] = float(run["metrics"]["test/SumR"])
        worker_seconds += float(run["metrics"]["time/trial_seconds"])
    return out, worker_seconds


def ranking_table(scores: dict[str, dict[str, float]], seconds: dict[str, float],
                  long_name: str, seed: int, data: str) -> tuple[str, dict[str, Any]]:
    """Markdown: test SumR per setting and budget, then Kendall τ of each budget vs the long."""
    names = list(scores)
    common = set.intersection(*(set(scores[n]) for n in names))
    labels = sorted(common, key=lambda k: -scores[long_name][k])
    if len(labels) < 2:
        raise PRVRBenchError(f"budget study: only {len(labels)} setting(s) completed in every "
                             "budget; rerun the command to finish the studies")
    absent = {n: sorted(set(scores[n]) - common) for n in names if set(scores[n]) - common}
    lines = ["| setting | " + " | ".join(f"{n} test SumR" for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(f"{scores[n][label]:.2f}" for n in names) + " |")
    lines += ["", "| budget | Kendall τ vs " + long_name + " | p | cost (worker-minutes) |",
              "|---|---:|---:|---:|"]
    taus: dict[str, Any] = {}
    for name in names:
        a = [scores[name][k] for k in labels]
        b = [scores[long_name][k] for k in labels]
        res = kendalltau(a, b)
        tau, p = float(res.statistic), float(res.pvalue)  # pyright: ignore[reportAttributeAccessIssue]
        taus[name] = {"tau": tau, "p": p}
        lines.append(f"| {name} | {tau:.3f} | {p:.3f} | {seconds[name] / 60:.1f} |")
    lines.append("")
    for n, extra in absent.items():
        lines.append(f"Also completed in {n} only (left out of the rankings, which compare the "
                     f"settings every budget completed): {'; '.join(extra)}.")
    lines.append(f"Seed {seed} for every run; data {data}; ranks by test SumR of the checkpoint "
                 "selected on val SumR; cost = the trials' own seconds, summed over workers.")
    return "\n".join(lines), {"scores": scores, "seconds": seconds, "kendall": taus, "seed": seed,
                               "data": data, "compared": labels}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweeps.budget_study",
                                description="Kendall τ of short sweep budgets against a long one")
    p.add_argument("--short-epochs", type=int, default=4)
    p.add_argument("--long-epochs", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data-root", default=None, help="default: the cached synthetic small TVR")
    p.add_argument("--runs-dir", default="runs/budget-study")
    p.add_argument("--budgets", default=None, metavar="NAME,...",
                   help="run these budgets, in this order (default: all, short first); a second "
                        "launcher on the same runs dir may take them in another order")
    args = p.parse_args(argv)
    chosen = budgets(args.short_epochs, args.long_epochs)
    if args.budgets:
        by_name = {b.name: b for b in chosen}
        unknown = [n for n in args.budgets.split(",") if n not in by_name]
        if unknown:
            p.error(f"unknown budget(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
        chosen = tuple(by_name[n] for n in args.budgets.split(","))
    runs = stores.runs_dir(args.runs_dir)
    storage_url, tracking_uri = stores.optuna_url(None, runs), stores.mlflow_uri(None, runs)
    scores: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    data = ""
    try:
        for budget in chosen:
            t0 = time.perf_counter()
            result = runner.run_study(budget_spec(budget, args.workers), "tvr",
                                      data_root=args.data_root, storage_url=storage_url,
                                      tracking_uri=tracking_uri, seed=args.seed, runs_dir=runs,
                                      log=lambda m: print(m, flush=True))
            wall = time.perf_counter() - t0
            data = f"{result.data_root} ({'synthetic' if result.synthetic else 'real'})"
            scores[budget.name], seconds[budget.name] = sumr_by_setting(result, storage_url,
                                                                        tracking_uri)
            print(f"budget {budget.name}: {wall / 60:.1f} min wall (this call), "
                  f"{seconds[budget.name] / 60:.1f} worker-min in its trials", flush=True)
    except PRVRBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(scores) < len(budgets(args.short_epochs, args.long_epochs)):
        print(f"ran {', '.join(scores)}; rerun without --budgets for the table", flush=True)
        return 0
    table, summary = ranking_table(scores, seconds, "long-progress", args.seed, data)
    (Path(runs) / "budget-study.md").write_text(table + "\n")
    (Path(runs) / "budget-study.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
