"""Run identity: MLflow experiment, study and run names, and every tag key (docs/architecture.md §7).

This is the only module that spells a tag key or a name format. Writers (the train CLI, the
training loop, the sweep objective and launcher) and readers (reports, tests) import the
constants below; ``benchmark.experiment.identify`` builds the one ``RunIdentity`` of a run.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

_REPO = Path(__file__).resolve().parent.parent


class Tag:
    """MLflow tag keys."""

    METHOD = "method"                  # base method name, e.g. "dl-dkd++"
    VARIANT = "variant"                # full registered name, e.g. "dl-dkd++.hard-targets"
    COLLECTION = "collection"
    SYNTHETIC = "synthetic"            # "true" / "false"
    SEED = "seed"
    GIT_COMMIT = "git_commit"
    GIT_DIRTY = "git_dirty"            # "true" / "false" / "unknown"
    RECONSTRUCTION = "reconstruction"  # "true" on methods rebuilt without public code (kdc-net)
    VAL_EQUALS_TEST = "val_equals_test"
    FAILURE_REASON = "failure_reason"
    # python -m benchmark.evaluate
    EVALUATION = "evaluation"          # "true" on a run that evaluated a saved checkpoint (no training)
    CHECKPOINT = "checkpoint"          # the path of the checkpoint an evaluation run read
    # sweeps
    STUDY = "study"                    # study name, on the parent run and on every trial run
    TRIAL = "trial"                    # trial number
    TRIAL_STATE = "trial_state"        # a TrialStateTag value
    TRIAL_SEEDS = "trial_seeds"        # "0,1,2" on each run of a trial trained on several seeds
    KIND = "kind"                      # KIND_STUDY on a study's parent run
    STUDY_SPEC = "study_spec"          # registered study spec behind a study
    OPTUNA_STORAGE = "optuna_storage"  # redacted storage URL
    BEST_TRIAL = "best_trial"
    BEST_RUN_ID = "best_run_id"


#: ``Tag.KIND`` value of a study's parent run.
KIND_STUDY = "study"


class TrialStateTag:
    """``Tag.TRIAL_STATE`` values (Optuna's state names)."""

    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"


def flag(value: bool) -> str:
    """The tag form of a boolean: "true" / "false"."""
    return "true" if value else "false"


def is_set(tags: Mapping[str, str], key: str) -> bool:
    """Whether boolean tag ``key`` reads "true" (absent reads false)."""
    return tags.get(key, "false") == "true"


def experiment_name(collection: str, synthetic: bool) -> str:
    """One experiment per collection, real and synthetic apart: "tvr", "tvr-synthetic"."""
    return f"{collection}-synthetic" if synthetic else collection


def study_name(spec_name: str, collection: str, synthetic: bool) -> str:
    """``tvr-default-synthetic``, ``kdc-net-krd-tvr-synthetic``, ``kdc-net-krd-tvr``: the spec
    name, the collection unless the spec name starts with it, and ``-synthetic`` on synthetic data."""
    base = spec_name if spec_name.startswith(f"{collection}-") else f"{spec_name}-{collection}"
    return f"{base}-synthetic" if synthetic else base


def study_tags(*, study: str, spec: str, collection: str, synthetic: bool, method: str,
               storage: str) -> dict[str, str]:
    """Tags of a study's MLflow parent run (``storage``: the Optuna URL, password redacted)."""
    return {Tag.STUDY: study, Tag.STUDY_SPEC: spec, Tag.COLLECTION: collection,
            Tag.SYNTHETIC: flag(synthetic), Tag.METHOD: method, Tag.GIT_COMMIT: git_commit(),
            Tag.GIT_DIRTY: git_dirty(), Tag.OPTUNA_STORAGE: storage, Tag.KIND: KIND_STUDY}


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit() -> str:
    """HEAD commit of the source tree, or "unknown" (not a checkout, no git)."""
    out = _git("rev-parse", "HEAD")
    return out.strip() if out and out.strip() else "unknown"


def git_dirty() -> str:
    """"true"/"false" whether tracked files differ from HEAD, or "unknown"."""
    out = _git("status", "--porcelain", "--untracked-files=no")
    if out is None:
        return "unknown"
    return flag(bool(out.strip()))


@dataclass(frozen=True, kw_only=True)
class RunIdentity:
    """Who a run is: built once per run (``benchmark.experiment.identify``) and passed to
    everything that names, tags or files it.

    ``study``/``trial`` are set on sweep trials; ``reconstruction`` marks methods rebuilt
    without public code. ``experiment`` is the MLflow experiment the run belongs to.
    """

    method: str
    variant: str
    collection: str
    synthetic: bool
    seed: int
    experiment: str
    reconstruction: bool = False
    study: str | None = None
    trial: int | None = None
    git_commit: str = "unknown"
    git_dirty: str = "unknown"
    extra_tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def run_name(self) -> str:
        """``<variant>-<collection>[-synthetic]-s<seed>``, prefixed ``t<trial:03d>-`` in a sweep."""
        name = f"{self.variant}-{experiment_name(self.collection, self.synthetic)}-s{self.seed}"
        return f"t{self.trial:03d}-{name}" if self.trial is not None else name

    def tags(self) -> dict[str, str]:
        """The run's tags at creation (a trial starts in ``TrialStateTag.RUNNING``)."""
        tags = {Tag.METHOD: self.method, Tag.VARIANT: self.variant,
                Tag.COLLECTION: self.collection, Tag.SYNTHETIC: flag(self.synthetic),
                Tag.SEED: str(self.seed), Tag.GIT_COMMIT: self.git_commit,
                Tag.GIT_DIRTY: self.git_dirty}
        if self.reconstruction:
            tags[Tag.RECONSTRUCTION] = flag(True)
        if self.study is not None:
            tags[Tag.STUDY] = self.study
        if self.trial is not None:
            tags[Tag.TRIAL] = str(self.trial)
            tags[Tag.TRIAL_STATE] = TrialStateTag.RUNNING
        tags.update({str(k): str(v) for k, v in self.extra_tags.items()})
        return tags

    def run_dir_name(self, run_id: str | None, stamp: str) -> str:
        """Folder name of the run's outputs: its tracker run id, else run name and ``stamp``."""
        return run_id or f"{self.run_name}-{stamp}"
