"""ExperimentConfig: one frozen, typed config per run, built in layers (docs/architecture.md §6).

Layers, applied in this order, each through :func:`benchmark.overrides.apply_overrides` (which
rejects unknown keys with suggestions and wrong types naming the key):

1. dataclass defaults (the reference code defaults; the method section starts from the *base*
   method's registered default config);
2. ``benchmark/presets/collections.toml``, the table of the collection;
3. ``methods/presets/<base>.toml`` next to the method class: the layers of the file it names in
   ``inherits`` (if any), then its ``[default]``, then its ``[<collection>]``. Presets hold only
   what differs from the layers below (tests/test_config.py checks it);
4. the variant's delta (paths relative to the method config, so applied under ``method.``);
5. user files (``--config a.toml`` or a saved ``config.json``), in the order given;
6. top-level keyword shortcuts of :func:`load_config` (CLI flags such as ``--epochs``), then the
   ``--set`` overrides;
7. a sweep trial's overrides.

``method_name`` chooses the method class, so it is settled before any layer applies: the
argument, unless ``--set`` or a sweep trial's overrides hold a ``method_name`` key (the later
layer wins; a search space can thus choose the method like any other config path). A config
file that names another method, or another ``data.collection``, is an error: files are
identity-checked. ``data_root`` given as an argument wins over a file's (a saved config.json
rerun on another machine keeps its data where it is).
"""
from __future__ import annotations

import hashlib
import importlib.resources
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from benchmark.interface import MethodConfig, ScheduleClock
from benchmark.memory import parse_bytes
from benchmark.mv import DEFAULT_MV_EDGES
from benchmark.overrides import ConfigError, apply_overrides, to_jsonable
from benchmark.overrides import flatten as _flatten
from benchmark.precision import PRECISIONS, Precision
from benchmark.registry import METHODS, get_method


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the data is and how it is cut (docs/methods.md §1.3)."""

    data_root: str | None = None          # ROOT of the MS-SL layout; required to run
    collection: str = "tvr"
    visual_feature: str | None = None     # None: the collection's default (benchmark/data/layout.py)
    moments: str | None = None            # moments table; None: <c>_moments.jsonl or the built-in one
    relevance: str | None = None          # dense relevance labels for multi-positive evaluation
    max_frames: int = 128                 # ref: max_ctx_l
    max_query_tokens: int = 30            # ref: max_desc_l
    num_clips: int = 32                   # ref: map_size
    # preprocessed features a run keeps in RAM, all splits together (bytes, or "1GiB", "512MiB");
    # the rest is read from the memmap/HDF5 files per batch. Never changes a result.
    memory_budget: int | str = "256MiB"
    # glibc's mmap threshold fixed at 1 MiB (benchmark/memory.py::bound_heap): freed tensors leave
    # the resident set (about 1.3 GB less on full TVR) at a cost in step time from fresh page
    # faults (dl-dkd++ on small TVR: 21.8 -> 32.6 s per epoch). Off by default; on for
    # full-size collections on a small machine (bench --scale full). Never changes a result.
    bound_heap: bool = False

    def __post_init__(self) -> None:
        for name in ("max_frames", "max_query_tokens", "num_clips"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        try:
            parse_bytes(self.memory_budget)
        except ValueError as exc:
            raise ConfigError(f"data.memory_budget: {exc}") from None

    @property
    def memory_budget_bytes(self) -> int:
        return parse_bytes(self.memory_budget)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Epoch loop settings (docs/methods.md §1.4, §3.5)."""

    epochs: int = 100                     # ref: n_epoch 100 (ms-sl config.py)
    batch_size: int = 128                 # ref: bsz 128 videos
    early_stop_patience: int = 10         # ref: max_es_cnt 10; stop when es_cnt > patience
    val_every: int = 1                    # validate every N epochs (ref: every epoch)
    # how schedules (KD weight, α/β, hard-negative start, patience) read time: "epoch" = the
    # reference's absolute epochs; "progress" = the run's step fraction × reference_epochs
    schedule_clock: ScheduleClock = "epoch"
    reference_epochs: int | None = None   # E_ref; None: the recipe's train.epochs (load_config)
    # PAPER-VS-CODE §3.5: the reference trains under detect_anomaly (slow, same numbers)
    detect_anomaly: bool = False
    # "fp32": everything float32 (the reference); "bf16": compute_loss's forward under bfloat16
    # autocast, losses, backward, optimiser and evaluation float32 (benchmark/precision.py)
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if self.early_stop_patience < 0:
            raise ConfigError("train.early_stop_patience must be >= 0")
        if self.val_every < 1:
            raise ConfigError("train.val_every must be >= 1")
        if self.reference_epochs is not None and self.reference_epochs < 1:
            raise ConfigError(f"train.reference_epochs must be >= 1, got {self.reference_epochs}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision must be one of {', '.join(map(repr, PRECISIONS))}, "
                              f"got {self.precision!r}")


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """The reference BertAdam and warmup_linear schedule (docs/methods.md §3.5)."""

    lr: float = 2.5e-4                    # ref: ms-sl / dl-dkd config.py
    warmup_proportion: float = 0.01       # ref: lr_warmup_proportion
    weight_decay: float = 0.01            # used only with weight_decay_source="config"
    weight_decay_source: Literal["reference", "config"] = "reference"  # ref hard-codes 0.01, ignores --wd
    clip: Literal["per_tensor", "global"] = "per_tensor"   # ref clips each tensor separately
    max_grad_norm: float = 1.0            # ref: BertAdam max_grad_norm; <= 0 switches clipping off
    bias_correction: bool = False         # ref: BertAdam has none
    beta1: float = 0.9                    # ref: BertAdam b1 (docs/methods.md §3.5)
    beta2: float = 0.999                  # ref: BertAdam b2
    eps: float = 1e-6                     # ref: BertAdam e

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_proportion < 1:
            raise ConfigError(f"optim.warmup_proportion must be in [0, 1), got {self.warmup_proportion}")
        if self.weight_decay < 0:
            raise ConfigError("optim.weight_decay must be >= 0")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Evaluator chunking and the M/V bins (docs/architecture.md §4)."""

    # 512 queries: encoding a query block costs the method about 0.5 MB per query (kdc-net,
    # both branches), so 2048 put about 1 GB on top of a full-TVR evaluation; multiples of 16
    # keep every score bit as it was (the GEMM tail rows stay the same rows)
    query_chunk: int = 512
    video_chunk: int | None = 256         # None: score all videos of a query chunk at once
    mv_edges: tuple[float, ...] = DEFAULT_MV_EDGES       # the one default (benchmark/mv.py)

    def __post_init__(self) -> None:
        if self.query_chunk < 1:
            raise ConfigError("eval.query_chunk must be >= 1")
        if self.video_chunk is not None and self.video_chunk < 1:
            raise ConfigError("eval.video_chunk must be >= 1 or none")
        edges = self.mv_edges
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ConfigError(f"eval.mv_edges must be strictly increasing with >= 2 edges, got {edges}")


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    """Where runs go (docs/architecture.md §9; resolved by benchmark/stores.py)."""

    tracking_uri: str | None = None       # None: no MLflow run unless the CLI asks for one
    runs_dir: str | None = None           # None: $PRVR_RUNS_DIR, else ./runs
    experiment: str | None = None         # None: naming.experiment_name(collection, synthetic)


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """Everything one run needs; saved as config.json and logged flattened as params."""

    method_name: str                      # registered name, e.g. "dl-dkd++.hard-targets"
    method: MethodConfig                  # that method's own dataclass
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 2018                      # ref: ms-sl / dl-dkd seed 2018
    device: Literal["auto", "cpu", "cuda"] = "auto"


# ---------------------------------------------------------------------------- layer sources

def _read_toml(path: Path | Any, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path}: invalid TOML: {exc}") from None


def collection_preset(collection: str) -> dict[str, Any]:
    """Table ``[<collection>]`` of benchmark/presets/collections.toml ({} when absent)."""
    res = importlib.resources.files("benchmark") / "presets" / "collections.toml"
    if not res.is_file():
        return {}
    return dict(_read_toml(res, "collection presets").get(collection, {}))


def _preset_file(base: str):
    """methods/presets/<base>.toml, found through importlib.resources of the package holding
    the method class (so a plug-in package ships its own presets)."""
    cls = get_method(base).cls
    package = cls.__module__.rpartition(".")[0] or cls.__module__
    return importlib.resources.files(package) / "presets" / f"{base}.toml"


def _preset_table_layers(base: str, collection: str, chain: tuple[str, ...] = ()
                         ) -> list[tuple[str, dict[str, Any]]]:
    """The layers of ``base``'s preset file: first those of the file it ``inherits`` (whole
    file), then its own ``[default]`` and ``[<collection>]``."""
    res = _preset_file(base)
    if not res.is_file():
        return []
    table = _read_toml(res, "method preset")
    for key, value in table.items():
        if key != "inherits" and not isinstance(value, dict):
            raise ConfigError(f"method preset {res}: top-level key {key!r} is not a table; "
                              "only 'inherits' may stand outside [default] and [<collection>]")
    layers: list[tuple[str, dict[str, Any]]] = []
    parent = table.get("inherits")
    if parent is not None:
        if not isinstance(parent, str) or parent not in METHODS or get_method(parent).is_variant:
            raise ConfigError(f"method preset {res}: inherits = {parent!r} must name a registered "
                              "base method")
        if parent in chain + (base,):
            raise ConfigError(f"method preset {res}: inherits = {parent!r} makes a cycle "
                              f"({' -> '.join(chain + (base, parent))})")
        if not _preset_file(parent).is_file():
            raise ConfigError(f"method preset {res}: inherits = {parent!r}, which has no preset file")
        layers += _preset_table_layers(parent, collection, chain + (base,))
    for section in ("default", collection):
        if section in table:
            layers.append((f"{res} [{section}]", dict(table[section])))
    return layers


def method_preset_layers(method_name: str, collection: str) -> list[tuple[str, dict[str, Any]]]:
    """``(source, table)`` layers of methods/presets/<base>.toml: the inherited file's layers,
    then ``[default]``, then ``[<collection>]``. A missing file is no preset."""
    return _preset_table_layers(get_method(method_name).base, collection)


def read_user_file(path: str | Path) -> dict[str, Any]:
    """A user config file: TOML (a nested table of the ExperimentConfig) or a saved config.json."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {path}: invalid JSON: {exc}") from None
    return _read_toml(path, "config file")


def _apply(cfg: ExperimentConfig, layer: Mapping[str, Any], source: str) -> ExperimentConfig:
    try:
        return apply_overrides(cfg, dict(layer))
    except ConfigError as exc:
        raise ConfigError(f"{exc} (from {source})") from None


def _check_identity(layer: Mapping[str, Any], method_name: str, collection: str, source: str) -> dict:
    layer = dict(layer)
    named = layer.pop("method_name", method_name)
    if named != method_name:
        raise ConfigError(f"{source}: method_name {named!r} differs from the requested method "
                          f"{method_name!r}")
    data = layer.get("data")
    coll = (data.get("collection") if isinstance(data, Mapping) else None) or layer.get("data.collection")
    if coll is not None and coll != collection:
        raise ConfigError(f"{source}: data.collection {coll!r} differs from the requested "
                          f"collection {collection!r}")
    return layer


# ---------------------------------------------------------------------------- public API

def default_config(method_name: str, collection: str) -> ExperimentConfig:
    """Layer 1: dataclass defaults with the base method's registered config."""
    entry = get_method(method_name)
    base = get_method(entry.base)
    return ExperimentConfig(method_name=method_name, method=base.default_config,
                            data=DataConfig(collection=collection))


def load_config(method_name: str, collection: str, *, data_root: str | Path | None = None,
                config_files: Sequence[str | Path] = (), overrides: Mapping[str, Any] | None = None,
                trial_overrides: Mapping[str, Any] | None = None, **top: Any) -> ExperimentConfig:
    """Resolve the config of one run through the layers of the module docstring.

    ``top`` holds top-level shortcuts applied just before ``overrides`` (dotted keys allowed,
    e.g. ``seed=3`` or ``**{"train.epochs": 2}``). A ``method_name`` key in ``overrides`` or
    ``trial_overrides`` replaces the ``method_name`` argument. Raises ConfigError (unknown method
    or key, wrong type, invalid value) naming the key and the layer it came from.
    """
    overrides, trial_overrides = dict(overrides or {}), dict(trial_overrides or {})
    for layer in (overrides, trial_overrides):
        method_name = layer.pop("method_name", method_name)
    if not isinstance(method_name, str):
        raise ConfigError(f"config key 'method_name': expected a registered method name, got "
                          f"{method_name!r}")
    entry = get_method(method_name)
    cfg = default_config(method_name, collection)
    cfg = _apply(cfg, collection_preset(collection), f"benchmark/presets/collections.toml [{collection}]")
    for source, layer in method_preset_layers(method_name, collection):
        cfg = _apply(cfg, _check_identity(layer, method_name, collection, source), source)
    if entry.delta:
        cfg = _apply(cfg, {f"method.{k}": v for k, v in entry.delta.items()},
                     f"variant {entry.name!r}")
    if cfg.train.reference_epochs is None:    # E_ref: the recipe's epochs, before any budget
        cfg = _apply(cfg, {"train.reference_epochs": cfg.train.epochs}, "the recipe")
    for path in config_files:
        layer = _check_identity(read_user_file(path), method_name, collection, str(path))
        cfg = _apply(cfg, layer, str(path))
    if data_root is not None:
        cfg = _apply(cfg, {"data.data_root": str(data_root)}, "--data-root")
    if top:
        cfg = _apply(cfg, top, "arguments")
    if overrides:
        cfg = _apply(cfg, _check_identity(overrides, method_name, collection, "--set"), "--set")
    if trial_overrides:
        cfg = _apply(cfg, trial_overrides, "trial overrides")
    return cfg


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    return to_jsonable(cfg)


def save_config(cfg: ExperimentConfig, path: str | Path) -> Path:
    """Write the resolved config as JSON (every leaf), enough for an exact rerun."""
    path = Path(path)
    path.write_text(json.dumps(config_to_dict(cfg), indent=2, sort_keys=True) + "\n")
    return path


def config_from_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    """Rebuild a config from its JSON form: registry defaults of ``method_name``, then every leaf."""
    data = dict(data)
    if "method_name" not in data or "data" not in data:
        raise ConfigError("saved config lacks 'method_name' or 'data'")
    collection = data["data"].get("collection", "tvr")
    cfg = default_config(data["method_name"], collection)
    data.pop("method_name")
    return _apply(cfg, data, "saved config")


def load_saved_config(path: str | Path) -> ExperimentConfig:
    """Read a config.json written by :func:`save_config`."""
    return config_from_dict(read_user_file(Path(path)))


def flatten(cfg: ExperimentConfig) -> dict[str, Any]:
    """{dotted key: leaf} for MLflow params; keys equal the ``--set`` keys."""
    return _flatten(cfg)


def config_hash(cfg: ExperimentConfig) -> str:
    """sha256 of the settings that determine trained weights (method, data, train, optim, seed);
    chunk sizes, tracking, device and the memory settings (``data.memory_budget``,
    ``data.bound_heap``) are excluded, and so are the clock fields while the clock
    is "epoch" and the precision while it is "fp32" (they change nothing then, and hashes of
    runs from before them stay valid). Checkpoints carry it."""
    d = config_to_dict(cfg)
    keep = {k: d[k] for k in ("method_name", "method", "data", "train", "optim", "seed")}
    drop = set()
    if cfg.train.schedule_clock == "epoch":   # E_ref moves nothing on the epoch clock, and
        drop |= {"schedule_clock", "reference_epochs"}   # hashes stay as before it
    if cfg.train.precision == "fp32":         # likewise: runs from before the setting were fp32
        drop.add("precision")
    keep["train"] = {k: v for k, v in keep["train"].items() if k not in drop}
    # where data and freed memory live never changes a weight: a resume may change them
    keep["data"] = {k: v for k, v in keep["data"].items() if k not in ("memory_budget", "bound_heap")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()


def with_overrides(cfg: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """Apply dotted overrides to a resolved config (tests, benches)."""
    return _apply(cfg, overrides, "overrides")


__all__ = ["DataConfig", "TrainConfig", "OptimConfig", "EvalConfig", "TrackingConfig",
           "ExperimentConfig", "ConfigError", "load_config", "save_config", "load_saved_config",
           "config_from_dict", "config_to_dict", "flatten", "config_hash", "with_overrides",
           "default_config", "collection_preset", "method_preset_layers"]
