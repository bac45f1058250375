"""Registered studies: what a named sweep trains, over which space, on which budget.

A :class:`StudySpec` is plain data plus a space function; ``python -m sweeps.run --study NAME``
looks it up here. The Optuna study name is ``<spec name>-<collection>`` with ``-synthetic``
added on generated data, so real and synthetic studies never share trials.

``tvr-default`` is the main job (``nox -s sweep-tvr``): DL-DKD++ KD decay × τ on the synthetic
``small`` TVR profile, sized to finish on 2 CPU cores in about 10-15 minutes with pruning on.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

import optuna

from benchmark.errors import PRVRBenchError
from benchmark.interface import ScheduleClock
from benchmark.registry import Registry
from sweeps import spaces

Objective = Literal["val/SumR"]


class StudySpecError(PRVRBenchError, ValueError):
    """A study spec's fields do not fit together; the message names the study and field."""


@dataclass(frozen=True, kw_only=True)
class StudySpec:
    """One named sweep (docs/architecture.md §8)."""

    name: str
    method: str                               # registered method/variant of every trial
    space: Callable[[optuna.Trial], dict[str, Any]]
    summary: str
    n_trials: int = 20
    workers: int = 1                          # default worker processes (0: in-process)
    epochs: int | None = None                 # train.epochs override (None: the preset's)
    # how the trials' schedules read time (benchmark.interface.Progress): "progress" makes a
    # short trial traverse the recipe's whole KD/α/β/hard-negative curves (docs/sweeps.md)
    schedule_clock: ScheduleClock = "progress"
    seed: int = 0                             # study seed: every trial trains on it
    seeds: tuple[int, ...] = ()               # several seeds per trial (value: their mean)
    seed_per_trial: bool = False              # True: trial seed = seed + trial number (draws)
    overrides: Mapping[str, Any] = field(default_factory=dict)   # fixed, before the space's
    objective: Objective = "val/SumR"
    direction: Literal["maximize", "minimize"] = "maximize"
    pruner: Literal["median", "halving", "threshold", "none"] = "median"
    pruner_warmup_epochs: int = 1             # never prune before this many reports
    pruner_startup_trials: int = 2            # median pruner: trials completed before pruning
    pruner_threshold: float | None = None     # threshold pruner: prune below this value
    sampler: Literal["tpe", "random"] = "tpe"
    grid: Callable[[], list[dict[str, Any]]] | None = None   # enqueued once at creation
    profile: str | None = None                # synthetic profile (default: the collection's)
    scale: str = "small"                      # synthetic scale generated when no data root

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise StudySpecError(f"study {self.name!r}: n_trials must be >= 1")
        if self.workers < 0:
            raise StudySpecError(f"study {self.name!r}: workers must be >= 0 (0: in-process)")
        if self.epochs is not None and self.epochs < 1:
            raise StudySpecError(f"study {self.name!r}: epochs must be >= 1")
        if self.seeds and self.seed_per_trial:
            raise StudySpecError(f"study {self.name!r}: seeds and seed_per_trial exclude each other")
        if len(set(self.seeds)) != len(self.seeds):
            raise StudySpecError(f"study {self.name!r}: seeds repeat: {self.seeds}")

    def replace(self, **changes: Any) -> "StudySpec":
        return dataclasses.replace(self, **changes)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        """Pruning on the per-epoch objective (reported once per validation)."""
        if self.pruner == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=self.pruner_startup_trials,
                                               n_warmup_steps=self.pruner_warmup_epochs)
        if self.pruner == "threshold":
            if self.pruner_threshold is None:
                raise StudySpecError(f"study {self.name!r}: pruner 'threshold' needs pruner_threshold")
            if self.direction == "maximize":
                return optuna.pruners.ThresholdPruner(lower=self.pruner_threshold,
                                                      n_warmup_steps=self.pruner_warmup_epochs)
            return optuna.pruners.ThresholdPruner(upper=self.pruner_threshold,
                                                  n_warmup_steps=self.pruner_warmup_epochs)
        if self.pruner == "halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, self.pruner_warmup_epochs))
        return optuna.pruners.NopPruner()

    def make_sampler(self, seed: int | None) -> optuna.samplers.BaseSampler:
        """Each worker gets its own sampler; ``seed`` differs per worker so they do not
        propose the same point."""
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, self.n_trials))


STUDIES: Registry[StudySpec] = Registry("study")


def register_study(spec: StudySpec) -> StudySpec:
    return STUDIES.add(spec.name, spec)


def get_study(name: str) -> StudySpec:
    return STUDIES.get(name)


def list_studies() -> list[StudySpec]:
    return [STUDIES.get(n) for n in STUDIES.names()]


def comparison_grid() -> list[dict[str, Any]]:
    """Every registered comparison method × seed, in table order (unregistered ones skipped)."""
    from benchmark.registry import METHODS, load_plugins

    load_plugins()
    return [{"method_name": m, "seed": s}
            for m in spaces.COMPARISON_METHODS if m in METHODS
            for s in spaces.COMPARISON_SEEDS]


# The default budget of `nox -s sweep-<collection>`: 8 trials × ≤ 4 epochs of DL-DKD++ on the
# synthetic small profile, 2 workers of one thread each (2 cores); the median pruner may stop a
# trial after its 2nd epoch once 2 trials completed. A full 4-epoch trial costs ≈ 225 CPU-s
# (measured: ≈ 10 s data loading, ≈ 50 s per epoch with validation, ≈ 15 s test), so the
# study needs ≈ 1200-1800 worker-seconds: 10-15 minutes on 2 cores (docs/sweeps.md).
# The progress clock makes each 4-epoch trial run DL-DKD++'s whole 120-epoch KD/α/β curves;
# every trial trains on the study seed, so trials differ only in their knobs (docs/sweeps.md,
# "Does a short budget predict the long recipe?").
for _collection in ("tvr", "activitynet", "charades"):
    register_study(StudySpec(
        name=f"{_collection}-default",
        method="dl-dkd++",
        space=spaces.kd_decay_temperature,
        summary=f"main job on {_collection}: DL-DKD++ KD decay × soft-target temperature, "
                "4-epoch trials on the progress clock (the recipe's whole schedules), one shared "
                "seed (--seeds for several), pruning",
        n_trials=8, workers=2, epochs=4, pruner="median", pruner_warmup_epochs=1,
        pruner_startup_trials=2))

register_study(StudySpec(
    name="dl-dkd++-kd-decay-temperature",
    method="dl-dkd++",
    space=spaces.kd_decay_temperature,
    summary="DL-DKD++ KD decay kind/parameter × soft-target temperature τ (log scale)",
    n_trials=40, workers=2, pruner="median", pruner_warmup_epochs=5, pruner_startup_trials=5))

register_study(StudySpec(
    name="dl-dkd++-wide",
    method="dl-dkd++",
    space=spaces.dl_dkd_pp_wide,
    summary="DL-DKD++ KD decay × τ × α₀/β₀ × learning rate × fusion weight",
    n_trials=60, workers=2, pruner="halving", pruner_warmup_epochs=5))

register_study(StudySpec(
    name="kdc-net-krd",
    method="kdc-net",
    space=spaces.krd,
    summary="KDC-Net KRD window (fraction of the video, odd minimum) × δ × λ (docs/methods.md §9.3.6)",
    n_trials=40, workers=2, pruner="median", pruner_warmup_epochs=5,
    pruner_startup_trials=5))

register_study(StudySpec(
    name="method-comparison",
    method="mean-pool",   # replaced per trial by the enqueued method_name
    space=spaces.method_comparison,
    summary="each method and its main variants at their defaults, over 3 seeds (grid)",
    schedule_clock="epoch",   # the full recipes, on the reference's clock (parity)
    n_trials=len(spaces.COMPARISON_METHODS) * len(spaces.COMPARISON_SEEDS), workers=2,
    pruner="none", sampler="random", grid=comparison_grid))
