"""Config layering (docs/architecture.md §6), config.json round trip and stores."""
from __future__ import annotations

import json
import sys

import pytest

from benchmark import stores
from benchmark.config import (
    ConfigError,
    ExperimentConfig,
    collection_preset,
    config_hash,
    default_config,
    flatten,
    load_config,
    load_saved_config,
    method_preset_layers,
    save_config,
    with_overrides,
)
from benchmark.registry import METHODS, get_method, list_methods, register_method, register_variant

COLLECTIONS = ("tvr", "activitynet", "charades")

PROBE_PRESET = """\
# test probe preset
[default]
seed = 11
[default.train]
epochs = 7
[default.method]
temperature = 0.07
v2t_weight = 0.5
[tvr.method]
temperature = 0.09
[tvr.eval]
video_chunk = 128
"""

PROBE_CODE = """\
from dataclasses import dataclass
from methods.mean_pool import MeanPool, MeanPoolConfig

@dataclass(frozen=True, kw_only=True)
class ProbeConfig(MeanPoolConfig):
    pass

class Probe(MeanPool):
    config_cls = ProbeConfig
"""


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """A throw-away method in its own package with a preset file; unregistered afterwards."""
    pkg = tmp_path / "probe_pkg"
    (pkg / "presets").mkdir(parents=True)
    (pkg / "__init__.py").write_text(PROBE_CODE)
    (pkg / "presets" / "layer-probe.toml").write_text(PROBE_PRESET)
    monkeypatch.syspath_prepend(str(tmp_path))
    list_methods()                                   # plug-ins first, so our names come last
    import probe_pkg
    register_method("layer-probe", probe_pkg.Probe, probe_pkg.ProbeConfig(), "layering probe")
    register_variant("layer-probe.var", "variant delta", {"temperature": 0.11})
    yield "layer-probe"
    for name in ("layer-probe", "layer-probe.var"):
        METHODS._items.pop(name, None)
    sys.modules.pop("probe_pkg", None)


def test_each_layer_wins_in_order(probe, tmp_path):
    base = default_config("layer-probe", "tvr")
    assert base.method.temperature == 0.05 and base.eval.video_chunk == 256 and base.seed == 2018

    charades = load_config("layer-probe", "charades")
    assert charades.data.visual_feature == "i3d_rgb_lgi"         # collections.toml
    assert charades.eval.video_chunk == 512                       # collections.toml beats default
    assert charades.method.temperature == 0.07                    # preset [default]
    assert charades.seed == 11 and charades.train.epochs == 7

    tvr = load_config("layer-probe", "tvr")
    assert tvr.eval.video_chunk == 128                            # method preset beats collections.toml
    assert tvr.method.temperature == 0.09                         # [tvr] beats [default]
    assert tvr.method.v2t_weight == 0.5

    var = load_config("layer-probe.var", "tvr")
    assert var.method.temperature == 0.11                         # variant beats preset
    assert var.method_name == "layer-probe.var"

    user = tmp_path / "user.toml"
    user.write_text("[method]\ntemperature = 0.13\ndropout = 0.3\n[train]\nepochs = 9\n")
    filed = load_config("layer-probe.var", "tvr", config_files=[user])
    assert filed.method.temperature == 0.13 and filed.method.dropout == 0.3   # file beats variant
    assert filed.train.epochs == 9

    top = load_config("layer-probe.var", "tvr", config_files=[user], **{"train.epochs": 4})
    assert top.train.epochs == 4                                  # CLI shortcut beats file

    sets = load_config("layer-probe.var", "tvr", config_files=[user], **{"train.epochs": 4},
                       overrides={"method.temperature": "0.15", "train.epochs": "5"})
    assert sets.method.temperature == 0.15 and sets.train.epochs == 5   # --set beats file, shortcut

    trial = load_config("layer-probe.var", "tvr", config_files=[user],
                        overrides={"method.temperature": "0.15"},
                        trial_overrides={"method.temperature": 0.17})
    assert trial.method.temperature == 0.17                       # trial beats --set
    assert trial.method.dropout == 0.3                            # earlier layers survive


def test_preset_inherits_another_base_file(probe, tmp_path):
    presets = tmp_path / "probe_pkg" / "presets"
    (presets / "layer-child.toml").write_text(
        'inherits = "layer-probe"\n[tvr.method]\nv2t_weight = 0.25\n[default.train]\nepochs = 8\n')
    import probe_pkg
    try:
        register_method("layer-child", probe_pkg.Probe, probe_pkg.ProbeConfig(), "inheriting probe")
        child = load_config("layer-child", "tvr")
        assert child.method.temperature == 0.09 and child.eval.video_chunk == 128   # parent's [tvr]
        assert child.seed == 11                                                    # parent's [default]
        assert child.method.v2t_weight == 0.25                                     # own [tvr]
        assert child.train.epochs == 8               # own [default] beats the whole parent file
        for bad, match in (('"nope"', "must name a registered base method"),
                           ('"layer-probe.var"', "must name a registered base method"),
                           ('"layer-child"', "makes a cycle")):
            (presets / "layer-child.toml").write_text(f"inherits = {bad}\n")
            with pytest.raises(ConfigError, match=match):
                load_config("layer-child", "tvr")
        (presets / "layer-child.toml").write_text("seed = 3\n")
        with pytest.raises(ConfigError, match="top-level key 'seed' is not a table"):
            load_config("layer-child", "tvr")
    finally:
        METHODS._items.pop("layer-child", None)


def _leaf_keys(table, prefix=""):
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _leaf_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_presets_hold_only_differences(collection):
    """No preset value restates what the layers below it already give (dataclass defaults,
    the registered method config, collections.toml, an inherited file)."""
    for entry in (e for e in list_methods() if not e.is_variant):
        cfg = default_config(entry.name, collection)
        layers = [("benchmark/presets/collections.toml", collection_preset(collection))]
        for source, layer in layers + method_preset_layers(entry.name, collection):
            below, cfg = flatten(cfg), with_overrides(cfg, layer)
            above = flatten(cfg)
            for key in _leaf_keys(layer):
                assert above[key] != below[key], \
                    f"{entry.name}: {source} sets {key} = {above[key]!r}, the value it already has"


def test_unknown_key_suggests_and_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"method\.temprature.*temperature"):
        load_config("mean-pool", "tvr", overrides={"method.temprature": "0.1"})
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.learning_rate'"):
        load_config("mean-pool", "tvr", overrides={"optim.learning_rate": "0.1"})
    with pytest.raises(ConfigError, match=r"'train\.epochs'.*abc"):
        load_config("mean-pool", "tvr", overrides={"train.epochs": "abc"})
    with pytest.raises(ConfigError, match=r"'optim\.clip'.*per_tensor"):
        load_config("mean-pool", "tvr", overrides={"optim.clip": "sometimes"})
    with pytest.raises(ConfigError, match=r"train\.epochs must be >= 1"):
        load_config("mean-pool", "tvr", overrides={"train.epochs": "0"})
    with pytest.raises(ConfigError, match=r"temperature must be > 0"):
        load_config("mean-pool", "tvr", overrides={"method.temperature": "-1"})


def test_renamed_keys_point_at_the_new_name(tmp_path, capsys):
    from benchmark.overrides import RENAMED_KEYS, apply_overrides
    from benchmark.train import main

    for old, new in RENAMED_KEYS.items():                       # every layer walks one table
        with pytest.raises(ConfigError, match=rf"'{old}' was renamed to '{new}'; use 'method\.{new}'"):
            load_config("ms-sl", "tvr", overrides={f"method.{old}": "2"})
        with pytest.raises(ConfigError, match=rf"'{old}' was renamed to '{new}'"):
            apply_overrides(get_method("dl-dkd").default_config, {old: 2})   # variant deltas
    user = tmp_path / "old.toml"
    user.write_text("[method]\nhidden = 64\n")
    with pytest.raises(ConfigError, match=r"'hidden' was renamed to 'hidden_size'.*old\.toml"):
        load_config("ms-sl", "tvr", config_files=[user])
    assert main(["--method", "ms-sl", "--collection", "tvr", "--data-root", str(tmp_path),
                 "--set", "method.hidden=64"]) != 0
    assert "'hidden' was renamed to 'hidden_size'" in capsys.readouterr().err
    # where the new name is not a field either, the key is simply unknown
    with pytest.raises(ConfigError, match=r"unknown config key 'method\.heads'"):
        load_config("mean-pool", "tvr", overrides={"method.heads": "2"})


def test_removed_keys_are_refused_by_name(tmp_path):
    cfg = load_config("mean-pool", "tvr", data_root=tmp_path)
    saved = json.loads(save_config(cfg, tmp_path / "config.json").read_text())
    saved["train"]["num_workers"] = 8                            # a config.json from before
    old = tmp_path / "old-config.json"
    old.write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match=r"'train\.num_workers' was removed"):
        load_saved_config(old)
    with pytest.raises(ConfigError, match=r"'train\.num_workers' was removed.*old-config\.json"):
        load_config("mean-pool", "tvr", config_files=[old])
    with pytest.raises(ConfigError, match=r"'train\.num_workers' was removed"):
        load_config("mean-pool", "tvr", overrides={"train.num_workers": "2"})


def test_method_name_and_seed_are_ordinary_override_keys(tmp_path):
    """A sweep space's dict goes to load_config untouched: method_name picks the method class
    (its presets and variant delta included) before the other layers; seed is a plain field."""
    values = {"method_name": "ms-sl.clip-only", "seed": 3, "optim.lr": 1e-4}
    cfg = load_config("mean-pool", "tvr", trial_overrides=values)
    assert cfg == load_config("ms-sl.clip-only", "tvr", seed=3, **{"optim.lr": 1e-4})
    assert cfg.method.margin == 0.1 and cfg.method.frame_weight == 0.0   # ms-sl [tvr] + its delta
    flat = flatten(cfg)
    assert all(flat[key] == value for key, value in values.items())     # Optuna name = MLflow param
    sets = load_config("mean-pool", "tvr", overrides={"method_name": "ms-sl", "method.margin": "0.3"})
    assert sets.method_name == "ms-sl" and sets.method.margin == 0.3
    trial = load_config("mean-pool", "tvr", overrides={"method_name": "ms-sl"},
                        trial_overrides={"method_name": "dl-dkd"})
    assert trial.method_name == "dl-dkd"                                 # the later layer wins
    saved = save_config(load_config("mean-pool", "tvr"), tmp_path / "config.json")
    with pytest.raises(ConfigError, match=r"method_name 'mean-pool' differs"):
        load_config("mean-pool", "tvr", config_files=[saved], trial_overrides={"method_name": "ms-sl"})
    with pytest.raises(KeyError, match="ms-sl"):
        load_config("mean-pool", "tvr", overrides={"method_name": "ms-ls"})


def test_user_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepocs = 3\n")
    with pytest.raises(ConfigError, match=r"epocs.*epochs.*bad\.toml"):
        load_config("mean-pool", "tvr", config_files=[bad])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"method_name": "ms-sl"}))
    with pytest.raises(ConfigError, match=r"method_name 'ms-sl' differs"):
        load_config("mean-pool", "tvr", config_files=[other])
    with pytest.raises(ConfigError, match="not found"):
        load_config("mean-pool", "tvr", config_files=[tmp_path / "missing.toml"])


def test_config_json_round_trip(tmp_path):
    cfg = load_config("mean-pool.t2v-only", "charades", data_root=tmp_path,
                      overrides={"eval.video_chunk": "none", "eval.mv_edges": "0,0.5,1",
                                 "optim.clip": "global", "seed": "3"})
    path = save_config(cfg, tmp_path / "config.json")
    again = load_saved_config(path)
    assert again == cfg
    assert isinstance(again, ExperimentConfig) and again.eval.mv_edges == (0.0, 0.5, 1.0)
    # a saved config.json is also a valid user file, and --data-root still wins over it
    rerun = load_config("mean-pool.t2v-only", "charades", config_files=[path], data_root="/elsewhere")
    assert rerun.method == cfg.method and rerun.seed == 3 and rerun.data.data_root == "/elsewhere"
    assert config_hash(again) == config_hash(cfg)


def test_flatten_and_hash():
    cfg = load_config("mean-pool", "tvr", data_root="/d")
    flat = flatten(cfg)
    assert flat["method.temperature"] == 0.05 and flat["optim.lr"] == 2.5e-4
    assert flat["eval.mv_edges"] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert flat["data.collection"] == "tvr" and flat["method_name"] == "mean-pool"
    # every flattened key is a valid --set key that reproduces the same config
    assert with_overrides(cfg, flat) == cfg
    assert config_hash(with_overrides(cfg, {"eval.query_chunk": 64})) == config_hash(cfg)
    assert config_hash(with_overrides(cfg, {"method.temperature": 0.1})) != config_hash(cfg)


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_every_registered_method_resolves(collection, tmp_path):
    for entry in list_methods():
        cfg = load_config(entry.name, collection, data_root="/d")
        assert type(cfg.method) is type(entry.default_config)
        for key, value in entry.delta.items():          # the variant delta survives the presets
            assert flatten(cfg.method)[key] == (list(value) if isinstance(value, tuple) else value), \
                (entry.name, key)
        path = save_config(cfg, tmp_path / f"{entry.name}.json")
        assert load_saved_config(path) == cfg, entry.name


def test_unknown_method_suggests():
    with pytest.raises(KeyError, match="mean-pool"):
        load_config("mean-pol", "tvr")


def test_stores_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(stores.RUNS_DIR_ENV, raising=False)
    monkeypatch.delenv(stores.MLFLOW_ENV, raising=False)
    monkeypatch.delenv(stores.OPTUNA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert stores.runs_dir() == tmp_path / "runs"
    assert stores.mlflow_uri() == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert stores.optuna_url() == f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}"
    assert stores.mlflow_artifact_root(stores.runs_dir()) == tmp_path / "runs" / "mlartifacts"
    monkeypatch.setenv(stores.RUNS_DIR_ENV, str(tmp_path / "env-runs"))
    assert stores.runs_dir() == tmp_path / "env-runs"
    assert stores.runs_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.setenv(stores.MLFLOW_ENV, "http://env:5000")
    monkeypatch.setenv(stores.OPTUNA_ENV, "postgresql+psycopg2://u:p@h/db")
    assert stores.mlflow_uri() == "http://env:5000"
    assert stores.mlflow_uri("http://flag:1") == "http://flag:1"
    assert stores.optuna_url() == "postgresql+psycopg2://u:p@h/db"
    assert stores.optuna_url("sqlite:///x.db") == "sqlite:///x.db"


def test_redact():
    assert stores.redact("postgresql+psycopg2://bob:s3cr%40t@db.host:5432/optuna") == \
        "postgresql+psycopg2://bob:***@db.host:5432/optuna"
    assert stores.redact("sqlite:///runs/optuna.db") == "sqlite:///runs/optuna.db"
    assert stores.redact("http://host:5000") == "http://host:5000"
