"""``python -m benchmark.evaluate``: evaluate a saved checkpoint with the one evaluator.

    python -m benchmark.evaluate --checkpoint PATH --collection C --data-root ROOT \
        [--visual-feature F] [--split test|val] [--method M] [--reference ms-sl|dl-dkd|dl-dkd++] \
        [--set KEY=VALUE ...] [--moments PATH] [--relevance PATH] [--device auto|cpu|cuda] \
        [--json-out OUT.json] [--scores-out OUT.npz] [--tracking-uri URI]

(``benchmark/evaluate.py`` is the evaluator; run as a script it hands over to ``main`` here.)

Two kinds of checkpoint are read, told apart by their top-level keys (never by running them;
``benchmark/reference.py`` reads any checkpoint through an allow-list first):

* **The project's own** (``best.pt`` of a training run: ``state_dict``, ``config_hash``,
  ``epoch``, ``metrics``). Method and config come from the ``config.json`` that the run wrote
  beside it; ``--data-root``, ``--visual-feature``, ``--moments``, ``--relevance``, ``--device``
  and ``--set`` apply on top, then ``load_checkpoint`` checks the config hash. The hash covers
  the settings that determine the weights (``benchmark.config.config_hash``: method, data,
  train, optim, seed). Of those, an evaluation may change only ``EVALUATION_FREE_KEYS``: where
  the data lives and the evaluation-only label files (moments for M/V, dense relevance). They
  are put back to the saved values for the hash check, so a run moved to another machine or
  evaluated with other labels still loads. Anything else under the hash (``method.*``,
  ``train.*``, ``optim.*``, ``seed``, ``data.collection``, ``data.visual_feature``,
  ``data.max_frames``, ...) stops with one line naming the key, its saved and its requested
  value. ``eval.*`` (chunk sizes, M/V edges), ``tracking.*`` and ``device`` are outside the
  hash and may change freely. ``--method``, when given, must name the saved method.
* **A reference checkpoint** (``model``, ``model_cfg``, ``epoch``), or any file with
  ``--reference NAME``. The importer of that base method (``--reference``, else the one
  registered importer that recognises the state dict's keys) converts it: config overrides
  as dotted paths (``method.*``, and ``data.*`` lengths the model was built for) from
  ``model_cfg`` and the tensor shapes, and the state dict under the project's names. The
  config is ``load_config(--method or the base, C, data_root=ROOT, overrides=importer's, then
  --set)``: ``--set`` wins over the importer. ``--method`` may name
  a variant of the importer's base, nothing else.

Either way only the evaluated split is loaded (as a training run loads it: training-only
inputs such as teacher features are not opened; dense relevance labels apply to test), the
method is built from that split's feature sizes, and the state dict is loaded strictly: a
missing or unexpected key, or a shape that does not fit the data (``d_q``, ``d_v``) or the
config, is one line naming them. Scores come from ``evaluate_method`` with the config's chunk
sizes; every number reported is ``benchmark.views.split_view`` of its ranks.

Outputs: a summary line on stdout; ``--json-out`` the record parts of a training run for this
split (``method``, ``variant``, ``collection``, ``synthetic``, ``split``, ``checkpoint``,
``"<split>"``: the score key's record metrics, ``metrics``: the record metrics of every score
key, ``"<split>_by_mv"``: the M/V bins or null), plus ``seed``, ``epoch``, ``reference``,
``n_queries``, ``n_videos`` and the resolved ``config``; ``--scores-out`` an ``.npz`` with
every score key's (Nq, Nv) float32 matrix under its key name, ``query_ids`` (rows) and
``video_ids`` (columns); ``--tracking-uri`` one MLflow run named and tagged as a training run
of this config (``benchmark.experiment.identify``) plus ``evaluation=true`` and
``checkpoint=<path>``, holding the flattened config as params, ``<split>/...`` metrics, and
the JSON, the scores (when written) and ``ranks_<split>.npz`` as artifacts. The store is
contacted before anything is evaluated.

Every bad input (a missing or damaged file, a refused pickle global, an unknown method,
another method's checkpoint, a dims mismatch) is one line on stderr and exit code 2; only
``PRVRBenchError`` is caught, so a bug keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from benchmark.cli import UsageParser, fail, flag_overrides, parse_sets
from benchmark.config import (
    ConfigError,
    ExperimentConfig,
    config_hash,
    config_to_dict,
    flatten,
    load_config,
    load_saved_config,
    with_overrides,
)
from benchmark.data.split import SplitData
from benchmark.errors import PRVRBenchError
from benchmark.evaluate import EvalInputError, EvalResult, evaluate_method, evaluate_method_with_scores
from benchmark.experiment import identify, load_eval_split
from benchmark.interface import PRVRMethod
from benchmark.naming import Tag, flag
from benchmark.record import nan_to_none
from benchmark.reference import (
    is_reference_payload,
    load_state_strict,
    read_checkpoint,
    reference_from_payload,
)
from benchmark.registry import (
    ReferenceImporter,
    ReferenceImportError,
    find_reference_importer,
    get_method,
    get_reference_importer,
    recognising_importers,
)
from benchmark.seeding import seed_everything
from benchmark.training.checkpoint import CheckpointError, check_config_hash
from benchmark.training.loop import resolve_device
from benchmark.views import SplitView, select_metrics, split_view

if TYPE_CHECKING:        # mlflow is imported only when a tracking URI is given
    from benchmark.tracking import MLflowRunTracker

SAVED_CONFIG = "config.json"
#: Settings under the config hash that an evaluation of a saved run may change (module docstring).
EVALUATION_FREE_KEYS = ("data.data_root", "data.moments", "data.relevance")
#: Names in a ``--scores-out`` file besides the score keys.
ID_ARRAYS = ("query_ids", "video_ids")


def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(prog="python -m benchmark.evaluate",
                description="Evaluate a saved checkpoint (this project's best.pt, or a reference "
                            "model.ckpt) on one split with the shared evaluator.")
    p.add_argument("--checkpoint", required=True, help="best.pt of a run (config.json beside it) "
                                                       "or a reference model.ckpt")
    p.add_argument("--collection", required=True, help="collection name, e.g. tvr")
    p.add_argument("--data-root", required=True, help="ROOT holding ROOT/<collection>/ in the MS-SL layout")
    p.add_argument("--visual-feature", help="visual feature directory under FeatureData/")
    p.add_argument("--split", choices=["test", "val"], default="test", help="default: test")
    p.add_argument("--method", help="registered method or variant (default: the checkpoint's)")
    p.add_argument("--reference", metavar="NAME",
                   help="read the checkpoint as this method's reference checkpoint "
                        "(ms-sl, dl-dkd, dl-dkd++; default: recognised from its keys)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override (repeatable)")
    p.add_argument("--moments", help="moments table for the M/V breakdown")
    p.add_argument("--relevance", help="dense relevance labels (test split)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: the config's")
    p.add_argument("--json-out", help="write the evaluation record JSON here")
    p.add_argument("--scores-out", help="write every score matrix, query_ids and video_ids (.npz)")
    p.add_argument("--tracking-uri", help="log one MLflow run of this evaluation")
    return p


# ----------------------------------------------------------------------------------------------
# From a checkpoint to a method with its weights
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadedCheckpoint:
    """A method with a checkpoint's weights, its resolved config and the split to evaluate."""

    path: Path
    cfg: ExperimentConfig
    method: PRVRMethod
    split: SplitData
    epoch: int | None
    reference: str | None          # the importer's base method for a reference checkpoint


def weight_keys_changed(saved: ExperimentConfig, cfg: ExperimentConfig) -> list[str]:
    """Dotted keys whose value in ``cfg`` differs from ``saved`` and changes the config hash,
    ``EVALUATION_FREE_KEYS`` left out; each as ``key (saved -> requested)``."""
    base = config_hash(saved)
    old, new = flatten(saved), flatten(cfg)
    out = []
    for key in sorted(set(old) | set(new)):
        if key in EVALUATION_FREE_KEYS or old.get(key) == new.get(key):
            continue
        if key in new and config_hash(with_overrides(saved, {key: new[key]})) == base:
            continue                                  # eval.*, tracking.*, device: not hashed
        out.append(f"{key} ({old.get(key)!r} -> {new.get(key)!r})")
    return out


def _build(cfg: ExperimentConfig, split_name: str) -> tuple[PRVRMethod, SplitData]:
    """Load the split and build the method for its feature sizes (seeded, as a run does)."""
    entry = get_method(cfg.method_name)
    split = load_eval_split(cfg, split_name, frozenset(entry.cls.requirements(cfg.method)))
    seed_everything(cfg.seed)
    return entry.cls(cfg.method, split.dims), split


def _dims(split: SplitData) -> str:
    return f"query {split.dims.query}-d, video {split.dims.video}-d"


def load_own(args: argparse.Namespace, path: Path, payload: Mapping[str, Any]) -> LoadedCheckpoint:
    """A ``best.pt`` of this project (``payload``, already read through the allow-list),
    configured by the ``config.json`` beside it."""
    saved_file = path.parent / SAVED_CONFIG
    if not saved_file.is_file():
        raise CheckpointError(f"checkpoint {path}: no {SAVED_CONFIG} beside it; a checkpoint of "
                              "this project is evaluated with the config of the run that saved it")
    saved = load_saved_config(saved_file)
    if args.method and args.method != saved.method_name:
        raise ConfigError(f"checkpoint {path} was trained as {saved.method_name!r} (its "
                          f"{SAVED_CONFIG}), not {args.method!r}")
    cfg = load_config(saved.method_name, args.collection, data_root=args.data_root,
                      config_files=[saved_file], overrides=parse_sets(args.sets), **flag_overrides(args))
    changed = weight_keys_changed(saved, cfg)
    if changed:
        raise ConfigError(f"checkpoint {path}: {'; '.join(changed)} would change settings its "
                          f"weights were trained with; only {', '.join(EVALUATION_FREE_KEYS)}, "
                          "eval.*, tracking.* and device may differ from its " + SAVED_CONFIG)
    hashed = with_overrides(cfg, {k: flatten(saved)[k] for k in EVALUATION_FREE_KEYS})
    check_config_hash(payload, path, config_hash(hashed))
    method, split = _build(cfg, args.split)
    load_state_strict(method, payload["state_dict"],
                      f"checkpoint {path} ({cfg.method_name}, data {_dims(split)})")
    return LoadedCheckpoint(path, cfg, method, split, int(payload["epoch"]), None)


def _importer(args: argparse.Namespace, path: Path, state_dict: Mapping[str, Any]) -> ReferenceImporter:
    if not args.reference:
        return find_reference_importer(state_dict)
    importer = get_reference_importer(args.reference)
    if not importer.recognizes(state_dict):
        others = ", ".join(i.base for i in recognising_importers(state_dict)) \
            or "no registered importer"
        raise ReferenceImportError(f"checkpoint {path}: not a {importer.base} reference checkpoint "
                                   f"(its keys are recognised by: {others})")
    return importer


def load_reference(args: argparse.Namespace, path: Path, payload: Mapping[str, Any]) -> LoadedCheckpoint:
    """A checkpoint of the authors' reference code, converted by its method's importer."""
    ref = reference_from_payload(payload, path)
    importer = _importer(args, path, ref.state_dict)
    sets = parse_sets(args.sets)
    method_name = sets.get("method_name") or args.method or importer.base   # as load_config decides
    entry = get_method(method_name)
    if entry.base != importer.base:
        raise ConfigError(f"checkpoint {path} is a {importer.base} reference checkpoint; "
                          f"{method_name!r} is not {importer.base} or one of its variants")
    overrides, state_dict = importer.convert(ref.state_dict, ref.model_cfg)
    try:
        load_config(method_name, args.collection, data_root=args.data_root, overrides=overrides)
    except ConfigError as exc:
        raise ReferenceImportError(f"checkpoint {path}: the {importer.base} importer's config "
                                   f"overrides do not fit {method_name}: {exc}") from None
    layered = {**overrides, **sets}                           # --set wins over the importer
    cfg = load_config(method_name, args.collection, data_root=args.data_root,
                      overrides=layered, **flag_overrides(args))
    method, split = _build(cfg, args.split)
    load_state_strict(method, state_dict, f"reference checkpoint {path} (read as {importer.base} "
                                          f"for {cfg.method_name}, data {_dims(split)})")
    return LoadedCheckpoint(path, cfg, method, split, ref.epoch, importer.base)


def load_any(args: argparse.Namespace) -> LoadedCheckpoint:
    """Read the file through the allow-list, tell the two kinds apart, load the weights."""
    path = Path(args.checkpoint)
    payload = read_checkpoint(path)
    if args.reference or is_reference_payload(payload):
        return load_reference(args, path, payload)
    if "state_dict" in payload and "config_hash" in payload:
        return load_own(args, path, payload)
    raise CheckpointError(f"checkpoint {path}: neither a checkpoint of this project (state_dict, "
                          f"config_hash) nor a reference one (model, model_cfg); top-level keys "
                          f"{sorted(map(str, payload))}")


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------

def evaluation_record(loaded: LoadedCheckpoint, view: SplitView) -> dict[str, Any]:
    """The JSON of ``--json-out`` (module docstring); NaN written as null."""
    cfg, split = loaded.cfg, loaded.split
    entry = get_method(cfg.method_name)
    record: dict[str, Any] = {
        "method": entry.base, "variant": entry.name, "collection": cfg.data.collection,
        "synthetic": bool(split.synthetic), "seed": cfg.seed, "split": view.split,
        "checkpoint": str(loaded.path.resolve()), "reference": loaded.reference,
        "epoch": loaded.epoch, "n_queries": split.num_queries, "n_videos": split.num_videos,
        view.split: view.main,
        "metrics": {key: select_metrics(metrics) for key, metrics in view.per_key.items()},
        f"{view.split}_by_mv": (None if view.by_mv is None
                                else {k: dict(v) for k, v in view.by_mv.items()}),
        "config": config_to_dict(cfg),
    }
    return nan_to_none(record)


def _atomic_write(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(record: Mapping[str, Any], path: str | os.PathLike) -> Path:
    text = json.dumps(record, indent=2, allow_nan=False) + "\n"
    return _atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def write_scores(scores: Mapping[str, np.ndarray], split: SplitData, path: str | os.PathLike) -> Path:
    """Every score matrix as float32 under its key, with the row and column ids (no pickles)."""
    clash = sorted(set(scores) & set(ID_ARRAYS))
    if clash:
        raise EvalInputError(f"score keys {clash} clash with the id arrays of {path}")
    arrays: dict[str, np.ndarray] = {key: np.asarray(m, dtype=np.float32)
                                     for key, m in scores.items()}                  # (Nq, Nv)
    arrays["query_ids"] = np.asarray(split.cap_ids, dtype=np.str_)                  # (Nq,)
    arrays["video_ids"] = np.asarray(split.video_ids, dtype=np.str_)                # (Nv,)
    return _atomic_write(Path(path), lambda handle: np.savez_compressed(handle, allow_pickle=False,
                                                                        **arrays))


def _open_tracker(uri: str, loaded: LoadedCheckpoint) -> MLflowRunTracker:
    from benchmark import tracking

    identity = identify(loaded.cfg, bool(loaded.split.synthetic))
    identity = replace(identity, extra_tags={**identity.extra_tags, Tag.EVALUATION: flag(True),
                                             Tag.CHECKPOINT: str(loaded.path.resolve())})
    return tracking.open_identified_run(uri, identity)


def _log_run(uri: str, loaded: LoadedCheckpoint, view: SplitView, result: EvalResult,
             record: Mapping[str, Any], args: argparse.Namespace) -> str | None:
    """One MLflow run with params, the split's metrics and the files as artifacts; its id."""
    with tempfile.TemporaryDirectory(prefix="prvr-eval-") as tmp:
        files = [Path(args.json_out) if args.json_out else write_json(record, Path(tmp) / "evaluation.json"),
                 result.save(Path(tmp) / f"ranks_{view.split}.npz")]
        if args.scores_out:
            files.append(Path(args.scores_out))
        with _open_tracker(uri, loaded) as tracker:
            tracker.log_params(flatten(loaded.cfg))
            tracker.log_metrics(view.flat(), step=0)
            for path in files:
                tracker.log_artifact(path)
        return tracker.run_id


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.tracking_uri:
            from benchmark import tracking

            tracking.check_reachable(args.tracking_uri)      # before anything is evaluated
        loaded = load_any(args)
        device = resolve_device(loaded.cfg.device)
        loaded.method.to(device)
        chunks = {"query_chunk": loaded.cfg.eval.query_chunk,
                  "video_chunk": loaded.cfg.eval.video_chunk, "device": device}
        scores: dict[str, np.ndarray] | None = None
        if args.scores_out:
            result, scores = evaluate_method_with_scores(loaded.method, loaded.split, **chunks)
        else:
            result = evaluate_method(loaded.method, loaded.split, **chunks)
        view = split_view(result, args.split, loaded.cfg.eval.mv_edges)
        record = evaluation_record(loaded, view)
        if args.json_out:
            write_json(record, args.json_out)
        if scores is not None:
            write_scores(scores, loaded.split, args.scores_out)
        run_id = _log_run(args.tracking_uri, loaded, view, result, record, args) \
            if args.tracking_uri else None
    except PRVRBenchError as exc:
        return fail(str(exc))
    m = view.main
    what = f"reference {loaded.reference} checkpoint" if loaded.reference else "checkpoint"
    print(f"{record['variant']} {what} {loaded.path} on {loaded.cfg.data.collection}"
          f"{' (synthetic)' if record['synthetic'] else ''} {args.split}: R1 {m['R1']:.2f} "
          f"R5 {m['R5']:.2f} R10 {m['R10']:.2f} R100 {m['R100']:.2f} SumR {m['SumR']:.2f} "
          f"(score keys: {', '.join(result.keys)})" + (f"; MLflow run {run_id}" if run_id else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
