"""One run from a resolved config: registry entry → splits → identity → method → ``fit``.

Every input check happens before training starts: ``load_split`` validates files, keys,
shapes and values of all three splits (docs/architecture.md §5), and the method is built from
the dimensions it read. ``identify`` builds the run's one ``RunIdentity`` (names, tags), which
the train CLI, the sweep objective and the training loop all receive instead of rebuilding it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

from benchmark import naming, stores
from benchmark.config import ConfigError, ExperimentConfig
from benchmark.data.errors import DataError
from benchmark.data.manifest import CheckManifest
from benchmark.data.split import CacheBudget, LoadProgress, SplitData, load_split
from benchmark.interface import PRVRMethod
from benchmark.memory import bound_heap
from benchmark.naming import RunIdentity
from benchmark.record import RunRecord
from benchmark.registry import MethodEntry, get_method
from benchmark.seeding import seed_everything
from benchmark.tracker import RunTracker

if TYPE_CHECKING:        # the loop and its console are imported when a run starts (run_experiment)
    from benchmark.console import LoadDisplay, TrainingConsole
    from benchmark.training.loop import Hook

#: Teacher features are training inputs only (the CLIP text file has no test split, §1.1), and
#: so is DL-DKD++'s resampling of student frames to the teacher length (§1.3 step 4 happens in
#: the reference's training dataset; its evaluation datasets read no CLIP file). Evaluating
#: without it keeps val/test independent of teacher files that real data packages lack. The
#: teacher alignment rule ("teacher_first_n") only matters where teacher frames are read.
TRAIN_ONLY_REQUIREMENTS = frozenset({"teacher", "teacher_length", "teacher_first_n"})


@dataclass(frozen=True)
class Prepared:
    entry: MethodEntry
    splits: Mapping[str, SplitData]
    method: PRVRMethod
    identity: RunIdentity


def identify(cfg: ExperimentConfig, synthetic: bool, *, study: str | None = None,
             trial: int | None = None) -> RunIdentity:
    """The identity of a run of ``cfg`` on real or ``synthetic`` data (a sweep trial when
    ``study``/``trial`` are given). The experiment is ``tracking.experiment`` when set, else
    one per collection, synthetic apart."""
    entry = get_method(cfg.method_name)
    experiment = cfg.tracking.experiment or naming.experiment_name(cfg.data.collection, synthetic)
    return RunIdentity(method=entry.base, variant=entry.name, collection=cfg.data.collection,
                       synthetic=bool(synthetic), seed=cfg.seed, experiment=experiment,
                       reconstruction=entry.reconstruction, study=study, trial=trial,
                       git_commit=naming.git_commit(), git_dirty=naming.git_dirty())


def load_splits(cfg: ExperimentConfig, requires: frozenset[str]) -> dict[str, SplitData]:
    """train/val/test ``SplitData``; ``requires`` opens optional inputs (teacher: train only).
    Dense relevance labels apply to the test split (docs/datasets.md). The three splits share
    ``data.memory_budget`` (first come, first served: train, val, test)."""
    d = cfg.data
    if d.bound_heap:                     # freed batches and tensors leave the resident set
        bound_heap()
    budget = CacheBudget(d.memory_budget_bytes)
    with _load_progress() as progress:
        splits = {split: _load_one(cfg, split, requires, budget, progress)
                  for split in ("train", "val", "test")}
    dims = {s: (sd.dims.query, sd.dims.video) for s, sd in splits.items()}
    if len(set(dims.values())) != 1:
        raise DataError(d.data_root, f"feature dimensions (query, video) differ between the "
                        f"splits of {d.collection!r}: {dims}")
    return splits


def load_eval_split(cfg: ExperimentConfig, split: str, requires: frozenset[str]) -> SplitData:
    """One evaluation split ("val" or "test") exactly as ``load_splits`` loads it for a run:
    training-only requirements dropped, dense relevance labels on "test" only."""
    if split not in ("val", "test"):
        raise ConfigError(f"evaluation split must be 'val' or 'test', got {split!r}")
    with _load_progress() as progress:
        return _load_one(cfg, split, requires, CacheBudget(cfg.data.memory_budget_bytes), progress)


def _load_progress() -> LoadDisplay:
    from benchmark.console import LoadDisplay

    return LoadDisplay()


def _load_one(cfg: ExperimentConfig, split: str, requires: frozenset[str], budget: CacheBudget,
              progress: LoadProgress) -> SplitData:
    d = cfg.data
    if not d.data_root:
        raise ConfigError("data.data_root is not set: pass --data-root ROOT")
    req = requires if split == "train" else requires - TRAIN_ONLY_REQUIREMENTS
    return load_split(d.data_root, d.collection, split, requires=req,
                      relevance=d.relevance if split == "test" else None,
                      visual_feature=d.visual_feature, moments=d.moments,
                      max_frames=d.max_frames, max_query_tokens=d.max_query_tokens,
                      num_clips=d.num_clips, memory_budget_bytes=budget,
                      manifest=CheckManifest(stores.check_manifest(cfg.tracking.runs_dir)),
                      progress=progress)


def prepare(cfg: ExperimentConfig, identity: RunIdentity | None = None) -> Prepared:
    """Resolve the method, load and check every split, build the method (seeded init).

    ``identity`` (a sweep trial's, built before its data is read) must agree with the data
    on being synthetic; without it the identity is built from the loaded splits."""
    entry = get_method(cfg.method_name)
    splits = load_splits(cfg, frozenset(entry.cls.requirements(cfg.method)))
    synthetic = bool(splits["train"].synthetic)
    if identity is None:
        identity = identify(cfg, synthetic)
    elif identity.synthetic != synthetic:
        raise ConfigError(f"run {identity.run_name!r} is named synthetic={identity.synthetic} "
                          f"but the data under {cfg.data.data_root} is "
                          f"{'synthetic' if synthetic else 'real'}")
    seed_everything(cfg.seed)                 # parameter initialisation is part of the seed
    method = entry.cls(cfg.method, splits["train"].dims)
    return Prepared(entry, splits, method, identity)


def run_experiment(cfg: ExperimentConfig, tracker: RunTracker | None = None,
                   hooks: Iterable[Hook] = (), *, identity: RunIdentity | None = None,
                   run_dir: str | Path | None = None,
                   console: TrainingConsole | None = None, resume: bool = False) -> RunRecord:
    """Prepare, then train with the shared loop and return the run record (``resume``:
    continue the run in ``run_dir`` from its last.ckpt)."""
    from benchmark.training.loop import fit

    prepared = prepare(cfg, identity)
    return fit(prepared.method, prepared.splits, cfg, tracker, hooks,
               identity=prepared.identity, run_dir=run_dir, console=console, resume=resume)
