"""Search spaces as plain code: ``space(trial) -> {dotted ExperimentConfig path: value}``.

Define-by-run (Optuna's ``trial.suggest_*``), so conditional knobs (the parameters of the
chosen KD decay kind) are ordinary ``if`` statements. The Optuna parameter names *are* the
dotted config paths, so an Optuna parameter, an MLflow param and a ``--set`` key are the same
string (docs/architecture.md §7). That includes the two top-level paths ``method_name`` (the
registered method or variant the trial trains; ``load_config`` picks the method class from it
before the other layers) and ``seed`` (the run seed; objective.py adds nothing to it).

Ranges: docs/methods.md §5.3 (KD decay kinds and their script parameters), §5.3 KD
temperature τ = 0.2, §6 α₀ = β₀ = 0.8, §9.3.6 (KRD w, δ, λ), §13 (suggested switch set).
"""
from __future__ import annotations

from typing import Any, Callable

import optuna

from benchmark.registry import Registry

Space = Callable[[optuna.Trial], dict[str, Any]]
SPACES: Registry[Space] = Registry("search space")


def register_space(name: str) -> Callable[[Space], Space]:
    def deco(fn: Space) -> Space:
        SPACES.add(name, fn)
        return fn
    return deco


def get_space(name: str) -> Space:
    return SPACES.get(name)


# KD decay kinds searched (docs/methods.md §5.3 decay_way 0-3; the rising kinds 4-8 are
# ablation variants, not a continuum worth searching).
KD_DECAY_KINDS = ("constant", "exp", "linear", "sigmoid")
KRD_WINDOWS = (1, 3, 5, 7, 9)                 # §9.3.6: odd sizes only


def suggest_kd_decay(trial: optuna.Trial, prefix: str = "method.kd_decay") -> dict[str, Any]:
    """KD decay schedule kind and the parameter of that kind (conditional)."""
    kind = trial.suggest_categorical(f"{prefix}.kind", KD_DECAY_KINDS)
    out: dict[str, Any] = {f"{prefix}.kind": kind}
    if kind == "exp":
        # ref: exponential_k 0.95; 0.8 halves the weight every ~3 epochs, 0.99 barely decays
        out[f"{prefix}.base"] = trial.suggest_float(f"{prefix}.base", 0.8, 0.99)
    elif kind == "linear":
        # ref: linear_k -0.01 (reaches the 0.05 floor at e=95)
        out[f"{prefix}.slope"] = trial.suggest_float(f"{prefix}.slope", -0.05, -0.005)
    elif kind == "sigmoid":
        # ref: sigmoid_k 800 (w drops to 0.6 at e=50); log scale, the curve moves with log k
        out[f"{prefix}.sigmoid_k"] = trial.suggest_float(f"{prefix}.sigmoid_k", 100.0, 2000.0,
                                                         log=True)
    return out


def suggest_temperature(trial: optuna.Trial, key: str = "method.kd_temperature") -> dict[str, Any]:
    """Soft-target temperature τ on a log scale around the reference 0.2."""
    return {key: trial.suggest_float(key, 0.05, 2.0, log=True)}


@register_space("kd-decay-temperature")
def kd_decay_temperature(trial: optuna.Trial) -> dict[str, Any]:
    """DL-DKD++ KD decay (kind and parameter) × soft-target temperature τ."""
    return {**suggest_kd_decay(trial), **suggest_temperature(trial)}


@register_space("krd")
def krd(trial: optuna.Trial) -> dict[str, Any]:
    """KDC-Net KRD window × selection margin δ × mixing weight λ (§9.3.6). The window is a
    fraction f of each video's valid frames (w = max(w_min, 2⌊f·n/2⌋ + 1)) with an odd minimum
    w_min in frames; f = 0 is the fixed window w_min."""
    return {
        "method.krd.window_fraction": trial.suggest_float("method.krd.window_fraction", 0.0, 0.2),
        "method.krd.window": trial.suggest_categorical("method.krd.window", KRD_WINDOWS),
        "method.krd.delta": trial.suggest_float("method.krd.delta", 0.0, 0.5),
        "method.krd.lam": trial.suggest_float("method.krd.lam", 0.0, 1.0),
    }


@register_space("dl-dkd++-wide")
def dl_dkd_pp_wide(trial: optuna.Trial) -> dict[str, Any]:
    """KD decay × τ plus α₀/β₀ (soft-target partitions), learning rate and fusion weight."""
    out = kd_decay_temperature(trial)
    # ref: alpha 0.8 and belta 0.8 (DL-DKD++ scripts, §6.7)
    out["method.alpha0"] = trial.suggest_float("method.alpha0", 0.5, 1.0)
    out["method.beta0"] = trial.suggest_float("method.beta0", 0.5, 1.0)
    out["optim.lr"] = trial.suggest_float("optim.lr", 5e-5, 1e-3, log=True)
    # inference fusion S = w·S^B + (1-w)·S^A, ref w = 0.7 (§5.4)
    out["method.fusion_inherit"] = trial.suggest_float("method.fusion_inherit", 0.0, 1.0)
    return out


@register_space("lr")
def lr(trial: optuna.Trial) -> dict[str, Any]:
    """Learning rate only (log scale around the reference 2.5e-4); any method."""
    return {"optim.lr": trial.suggest_float("optim.lr", 5e-5, 1e-3, log=True)}


#: Methods and main variants of the comparison study, in table order; those not registered in
#: this installation are left out when the grid is built (studies.py).
COMPARISON_METHODS = (
    "mean-pool", "ms-sl", "dl-dkd", "dl-dkd++", "dl-dkd++.hard-targets", "kdc-net",
    "kdc-net.no-hsa", "kdc-net.no-dta", "kdc-net.no-krd",
)
COMPARISON_SEEDS = (0, 1, 2)


@register_space("method-comparison")
def method_comparison(trial: optuna.Trial) -> dict[str, Any]:
    """Which method or variant, and which seed; every config value at its default.

    The comparison study enqueues the full grid, so these suggestions return the enqueued
    values; the categorical choices only give Optuna the distributions."""
    return {
        "method_name": trial.suggest_categorical("method_name", COMPARISON_METHODS),
        "seed": trial.suggest_categorical("seed", COMPARISON_SEEDS),
    }
