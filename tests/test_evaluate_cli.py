"""``python -m benchmark.evaluate`` and the safe checkpoint reader, on real files only.

A tiny mean-pool run is trained once (tests/conftest.py's collection); evaluating its best.pt
must give the record's metrics exactly. Reference checkpoints are written the way the reference
code writes them (a torch zip pickle holding an ``easydict.EasyDict``, with a stand-in easydict
module present only while saving) and read through an importer registered by the test, so the
core's import path is checked without the method packages' importers. Crafted files check that
nothing in a checkpoint runs and that every bad input is one line with exit code 2.
"""
from __future__ import annotations

import codecs
import json
import os
import shutil
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pytest
import torch

from benchmark import evaluate_cli
from benchmark.config import load_config, load_saved_config
from benchmark.data.split import load_split
from benchmark.evaluate import EvalResult, evaluate, evaluate_method, evaluate_method_with_scores
from benchmark.experiment import run_experiment
from benchmark.naming import Tag
from benchmark.reference import UnsafeCheckpointError, load_reference_checkpoint, read_checkpoint
from benchmark.registry import (
    REFERENCE_IMPORTERS,
    ReferenceImporter,
    ReferenceImportError,
    get_method,
    load_plugins,
)
from benchmark.training.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "reference-checkpoints"
REFERENCE_METHODS = ("ms-sl", "dl-dkd", "dl-dkd++")
# the training run's chunk sizes (small, so chunking is exercised); the CLI reads them from config.json
CHUNKS = {"eval.query_chunk": 7, "eval.video_chunk": 5}


# ------------------------------------------------------------------------------------------------
# Fixtures: one trained run; reference-style files
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tiny_root, tmp_path_factory):
    """A 2-epoch mean-pool run: (run dir, record, data root)."""
    base = tmp_path_factory.mktemp("evaluate-cli")
    cfg = load_config("mean-pool", "tvr", data_root=tiny_root, overrides={
        "device": "cpu", "tracking.runs_dir": str(base / "runs"), "train.epochs": 2,
        "optim.lr": 1e-3, "train.batch_size": 16, **CHUNKS})
    record = run_experiment(cfg, run_dir=base / "run")
    return base / "run", record, tiny_root


def _cli(capsys, *argv: Any) -> tuple[int, str, str]:
    code = evaluate_cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line_error(code: int, err: str) -> str:
    """The one error line; the data load's progress lines (``data: ...``) may precede it."""
    assert code == 2, err
    err = "".join(line for line in err.splitlines(keepends=True) if not line.startswith("data: "))
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _save_with_easydict(path: Path, payload_of, monkeypatch) -> None:
    """``torch.save`` a payload holding an ``easydict.EasyDict`` as the reference code does,
    with a stand-in ``easydict`` module importable only while saving (it is not installed)."""
    module = types.ModuleType("easydict")

    class EasyDict(dict):                      # items mirrored as attributes, as easydict does
        def __init__(self, d: Mapping[str, Any]) -> None:
            super().__init__()
            for key, value in d.items():
                setattr(self, key, value)

        def __setattr__(self, name: str, value: Any) -> None:
            super().__setattr__(name, value)
            self[name] = value

    EasyDict.__module__, EasyDict.__qualname__ = "easydict", "EasyDict"
    setattr(module, "EasyDict", EasyDict)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "easydict", module)
        torch.save(payload_of(EasyDict), path)
    assert "easydict" not in sys.modules


REF_PREFIX = {"query_proj.": "txt_net.", "video_proj.": "vid_net."}   # project -> "reference" names


def _rename(state: Mapping[str, torch.Tensor], mapping: Mapping[str, str]) -> OrderedDict:
    out = OrderedDict()
    for key, value in state.items():
        prefix = next((p for p in mapping if key.startswith(p)), None)
        if prefix is None:
            raise ReferenceImportError(f"cannot place reference key {key!r}")
        out[mapping[prefix] + key[len(prefix):]] = value
    return out


def _convert(state: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> tuple[dict, dict]:
    """The test's importer for mean-pool: sizes from model_cfg and the shapes, keys renamed."""
    overrides = {"method.hidden_size": int(model_cfg["hidden"]),
                 "method.joint_size": int(state["txt_net.3.weight"].shape[0])}
    return overrides, _rename(state, {v: k for k, v in REF_PREFIX.items()})


MEAN_POOL_IMPORTER = ReferenceImporter(
    base="mean-pool", recognizes=lambda sd: any(k.startswith("txt_net.") for k in sd),
    convert=_convert)
# another method's importer that recognises nothing of the mean-pool files
OTHER_IMPORTER = ReferenceImporter(
    base="ms-sl", recognizes=lambda sd: any(k.startswith("clip_encoder.") for k in sd),
    convert=lambda sd, cfg: ({}, dict(sd)))


@pytest.fixture
def importers(monkeypatch):
    """Only the test's importers are registered while a test runs (the registry has no removal;
    the method packages' own importers are put back afterwards)."""
    load_plugins()
    monkeypatch.setattr(REFERENCE_IMPORTERS, "_items",
                        {"mean-pool": MEAN_POOL_IMPORTER, "ms-sl": OTHER_IMPORTER})


def _reference_file(run, path: Path, monkeypatch, extra: Mapping[str, torch.Tensor] = ()) -> Path:
    run_dir, record, _ = run
    state = torch.load(run_dir / "best.pt", weights_only=True)["state_dict"]
    renamed = _rename(state, REF_PREFIX)
    renamed.update(dict(extra))
    hidden = record.config["method"]["hidden_size"]
    _save_with_easydict(path, lambda EasyDict: {
        "model": renamed, "model_cfg": EasyDict({"hidden": hidden, "input_drop": 0.1,
                                                 "device": [0], "n_heads": 4}),
        "epoch": 3}, monkeypatch)
    return path


# ------------------------------------------------------------------------------------------------
# The project's own checkpoints
# ------------------------------------------------------------------------------------------------

def test_own_checkpoint_reproduces_the_record_exactly(run, tmp_path, capsys):
    run_dir, record, data_root = run
    out, scores_out = tmp_path / "eval.json", tmp_path / "scores.npz"
    code, stdout, err = _cli(capsys, "--checkpoint", run_dir / "best.pt", "--collection", "tvr",
                             "--data-root", data_root, "--json-out", out, "--scores-out", scores_out)
    assert code == 0, err
    assert "mean-pool checkpoint" in stdout and "SumR" in stdout
    got = json.loads(out.read_text())
    saved = record.to_dict()
    assert got["test"] == saved["test"] and got["metrics"] == {"score": saved["test"]}
    assert got["test_by_mv"] == saved["test_by_mv"] and got["test_by_mv"] is not None
    assert (got["method"], got["variant"], got["collection"], got["synthetic"], got["split"]) == (
        "mean-pool", "mean-pool", "tvr", True, "test")
    assert got["checkpoint"] == str((run_dir / "best.pt").resolve()) and got["reference"] is None
    assert got["epoch"] == record.best_epoch and got["seed"] == record.seed
    assert got["config"]["eval"]["query_chunk"] == 7            # chunk sizes of the saved config

    # the exported matrix ranks to the run's stored per-query ranks
    ranks = EvalResult.load(run_dir / "ranks_test.npz")
    split = load_split(data_root, "tvr", "test", visual_feature="i3d_resnet")
    with np.load(scores_out, allow_pickle=False) as data:
        assert sorted(data.files) == ["query_ids", "score", "video_ids"]
        matrix = data["score"]
        assert matrix.dtype == np.float32 and matrix.shape == (split.num_queries, split.num_videos)
        assert list(data["query_ids"]) == split.cap_ids and list(data["video_ids"]) == split.video_ids
    again = evaluate({"score": matrix}, split.query_video, query_ids=split.cap_ids, mv=split.mv)
    for name in ("rank", "ties", "ap"):
        assert np.array_equal(getattr(again["score"], name), getattr(ranks["score"], name))


def test_own_checkpoint_val_split_gives_the_selected_epochs_val_metrics(run, tmp_path, capsys):
    run_dir, record, data_root = run
    out = tmp_path / "val.json"
    code, _, err = _cli(capsys, "--checkpoint", run_dir / "best.pt", "--collection", "tvr",
                        "--data-root", data_root, "--split", "val", "--json-out", out)
    assert code == 0, err
    got = json.loads(out.read_text())
    assert got["split"] == "val" and got["val"] == record.to_dict()["val"]
    assert "val_by_mv" in got and "test" not in got


def test_location_labels_and_chunks_may_change_without_failing_the_hash(run, tmp_path, capsys):
    """data_root (another path to the same files), the moments table and eval.* are outside
    what the weights depend on; the metrics stay exactly the record's."""
    run_dir, record, data_root = run
    elsewhere = tmp_path / "mounted-elsewhere"
    elsewhere.symlink_to(data_root, target_is_directory=True)
    moments = tmp_path / "moments.jsonl"
    shutil.copy(data_root / "tvr" / "TextData" / "tvr_moments.jsonl", moments)
    out = tmp_path / "eval.json"
    code, _, err = _cli(capsys, "--checkpoint", run_dir / "best.pt", "--collection", "tvr",
                        "--data-root", elsewhere, "--moments", moments, "--set", "eval.query_chunk=3",
                        "--set", "eval.video_chunk=none", "--device", "cpu", "--json-out", out)
    assert code == 0, err
    got = json.loads(out.read_text())
    assert got["test"] == record.to_dict()["test"]
    assert got["config"]["data"]["data_root"] == str(elsewhere)


@pytest.mark.parametrize("extra, named", [
    (("--set", "method.hidden_size=96"), "method.hidden_size (384 -> 96)"),
    (("--set", "seed=7"), "seed"),
    (("--set", "data.max_frames=64"), "data.max_frames"),
    (("--set", "train.epochs=5"), "train.epochs"),
])
def test_settings_the_weights_depend_on_are_refused(run, capsys, extra, named):
    run_dir, _, data_root = run
    code, _, err = _cli(capsys, "--checkpoint", run_dir / "best.pt", "--collection", "tvr",
                        "--data-root", data_root, *extra)
    err = _one_line_error(code, err)
    assert named in err and "only data.data_root" in err


def test_another_collection_or_method_is_refused(run, capsys):
    run_dir, _, data_root = run
    code, _, err = _cli(capsys, "--checkpoint", run_dir / "best.pt", "--collection", "charades",
                        "--data-root", data_root)
    assert "data.collection 'tvr' differs" in _one_line_error(code, err)
    code, _, err = _cli(capsys, "--checkpoint", run_dir / "best.pt", "--collection", "tvr",
                        "--data-root", data_root, "--method", "ms-sl")
    assert "trained as 'mean-pool'" in _one_line_error(code, err)


def test_a_checkpoint_that_does_not_belong_to_its_config_is_refused(run, tmp_path, capsys):
    run_dir, _, data_root = run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    saved = json.loads((copy / "config.json").read_text())
    saved["optim"]["lr"] = 0.5                                   # edited after training
    (copy / "config.json").write_text(json.dumps(saved))
    code, _, err = _cli(capsys, "--checkpoint", copy / "best.pt", "--collection", "tvr",
                        "--data-root", data_root)
    assert "config hash" in _one_line_error(code, err)
    (copy / "config.json").unlink()
    code, _, err = _cli(capsys, "--checkpoint", copy / "best.pt", "--collection", "tvr",
                        "--data-root", data_root)
    assert "no config.json beside it" in _one_line_error(code, err)
    code, _, err = _cli(capsys, "--checkpoint", tmp_path / "nowhere.pt", "--collection", "tvr",
                        "--data-root", data_root)
    assert "nowhere.pt: not found" in _one_line_error(code, err)


def test_truncated_and_non_zip_files_are_one_line_errors(run, tmp_path, capsys):
    run_dir, _, data_root = run
    data = (run_dir / "best.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    not_zip = tmp_path / "notes.pt"
    not_zip.write_text("not a checkpoint\n")
    shutil.copy(run_dir / "config.json", tmp_path / "config.json")
    for path, named in ((truncated, "truncated or damaged"), (not_zip, "not a torch zip checkpoint")):
        code, _, err = _cli(capsys, "--checkpoint", path, "--collection", "tvr",
                            "--data-root", data_root)
        err = _one_line_error(code, err)
        assert str(path) in err and named in err


@pytest.mark.slow
def test_module_entry_point_and_mlflow_run(run, tmp_path):
    """A real ``python -m benchmark.evaluate`` process: exact metrics, one MLflow run tagged as
    an evaluation, with the split's metrics and the files as artifacts."""
    run_dir, record, data_root = run
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "eval.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.evaluate", "--checkpoint", str(run_dir / "best.pt"),
         "--collection", "tvr", "--data-root", str(data_root), "--json-out", str(out),
         "--tracking-uri", uri],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())
    assert got["test"] == record.to_dict()["test"]
    run_id = proc.stdout.strip().rsplit("MLflow run ", 1)[1]

    from benchmark import tracking
    logged = tracking.get_run(uri, run_id)
    tags = logged["tags"]
    assert tags[Tag.EVALUATION] == "true" and tags[Tag.CHECKPOINT] == str((run_dir / "best.pt").resolve())
    assert tags[Tag.VARIANT] == "mean-pool" and tags[Tag.SYNTHETIC] == "true"
    assert logged["run_name"] == f"mean-pool-tvr-synthetic-s{record.seed}"
    assert logged["status"] == "FINISHED" and logged["params"]["method.hidden_size"] == "384"
    assert logged["metrics"]["test/SumR"] == pytest.approx(record.test["SumR"], abs=0)
    assert any(k.startswith("test_mv/") for k in logged["metrics"])
    local = tracking.download_artifact(uri, run_id, "eval.json", tmp_path / "artifacts")
    assert json.loads(local.read_text()) == got
    tracking.download_artifact(uri, run_id, "ranks_test.npz", tmp_path / "artifacts")


# ------------------------------------------------------------------------------------------------
# Reference checkpoints (through the test's importer)
# ------------------------------------------------------------------------------------------------

def test_reference_checkpoint_is_read_without_easydict(run, tmp_path, monkeypatch):
    path = _reference_file(run, tmp_path / "model.ckpt", monkeypatch)
    ref = load_reference_checkpoint(path)
    assert "easydict" not in sys.modules
    assert type(ref.model_cfg) is dict and ref.model_cfg["hidden"] == 384 and ref.epoch == 3
    assert ref.model_cfg["device"] == [0] and set(ref.model_cfg) == {"hidden", "input_drop",
                                                                     "device", "n_heads"}
    assert all(k.startswith(("txt_net.", "vid_net.")) for k in ref.state_dict)
    assert all(isinstance(v, torch.Tensor) for v in ref.state_dict.values())


@pytest.mark.parametrize("by_name", [True, False], ids=["--reference", "recognised"])
def test_reference_checkpoint_evaluates_to_the_same_metrics(run, tmp_path, monkeypatch, capsys,
                                                            importers, by_name):
    run_dir, record, data_root = run
    path = _reference_file(run, tmp_path / "model.ckpt", monkeypatch)
    out, scores_out = tmp_path / "eval.json", tmp_path / "scores.npz"
    code, stdout, err = _cli(capsys, "--checkpoint", path, "--collection", "tvr",
                             "--data-root", data_root, "--json-out", out, "--scores-out", scores_out,
                             *(("--reference", "mean-pool") if by_name else ()),
                             *(f"--set={k}={v}" for k, v in CHUNKS.items()))
    assert code == 0, err
    assert "reference mean-pool checkpoint" in stdout
    got = json.loads(out.read_text())
    assert got["test"] == record.to_dict()["test"] and got["reference"] == "mean-pool"
    assert got["epoch"] == 3 and got["config"]["method"]["hidden_size"] == 384
    ranks = EvalResult.load(run_dir / "ranks_test.npz")
    with np.load(scores_out, allow_pickle=False) as data:
        matrix = data["score"]
    assert matrix.shape == (ranks.n_queries, 16)
    split = load_split(data_root, "tvr", "test", visual_feature="i3d_resnet")
    assert np.array_equal(evaluate(matrix, split.query_video).rank, ranks.rank)


def test_reference_checkpoint_of_another_method_is_refused(run, tmp_path, monkeypatch, capsys,
                                                           importers):
    _, _, data_root = run
    path = _reference_file(run, tmp_path / "model.ckpt", monkeypatch)
    code, _, err = _cli(capsys, "--checkpoint", path, "--collection", "tvr",
                        "--data-root", data_root, "--reference", "ms-sl")
    assert "not a ms-sl reference checkpoint (its keys are recognised by: mean-pool)" in \
        _one_line_error(code, err)
    code, _, err = _cli(capsys, "--checkpoint", path, "--collection", "tvr",
                        "--data-root", data_root, "--method", "dl-dkd")
    assert "is a mean-pool reference checkpoint; 'dl-dkd' is not" in _one_line_error(code, err)
    code, _, err = _cli(capsys, "--checkpoint", path, "--collection", "tvr",
                        "--data-root", data_root, "--method", "mean-pol")
    assert "unknown method 'mean-pol'; did you mean mean-pool" in _one_line_error(code, err)
    # the project's own checkpoint read as a reference one
    code, _, err = _cli(capsys, "--checkpoint", run[0] / "best.pt", "--collection", "tvr",
                        "--data-root", data_root, "--reference", "mean-pool")
    assert "not a reference checkpoint" in _one_line_error(code, err)


def test_reference_checkpoint_with_dims_of_other_data_is_refused(run, tmp_path, monkeypatch, capsys,
                                                                 importers, tiny_root_for):
    """Weights for 768-d queries and 3072-d videos against 1024-d data: the keys and both
    shapes are named, and nothing is evaluated."""
    path = _reference_file(run, tmp_path / "model.ckpt", monkeypatch)
    code, _, err = _cli(capsys, "--checkpoint", path, "--collection", "charades",
                        "--data-root", tiny_root_for("charades"))
    err = _one_line_error(code, err)
    assert "shape mismatch" in err and "query_proj.1.weight (384, 768) vs (384, 1024)" in err
    assert "video_proj.1.weight (384, 3072) vs (384, 1024)" in err and "video 1024-d" in err


def test_reference_checkpoint_with_an_unexpected_key_is_refused(run, tmp_path, monkeypatch, capsys,
                                                                importers):
    _, _, data_root = run
    path = _reference_file(run, tmp_path / "model.ckpt", monkeypatch,
                           extra={"txt_net.9.weight": torch.zeros(2, 2)})
    code, _, err = _cli(capsys, "--checkpoint", path, "--collection", "tvr", "--data-root", data_root)
    assert "unexpected 1 key(s): query_proj.9.weight" in _one_line_error(code, err)


# ------------------------------------------------------------------------------------------------
# Nothing in a checkpoint runs
# ------------------------------------------------------------------------------------------------

class _RunsACommand:
    """Pickles as a call of ``os.system``: loading it with plain pickle would run the command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _crafted(tmp_path: Path, layout: str, protocol: int) -> tuple[Path, Path]:
    """A checkpoint whose unpickling would run ``touch <marker>``; (file, marker)."""
    marker = tmp_path / "ran"
    evil = _RunsACommand(f"touch {marker}")
    payload = ({"model": {"w": torch.zeros(1)}, "model_cfg": evil, "epoch": 1} if layout == "reference"
               else {"state_dict": {"w": evil}, "config_hash": "x", "epoch": 0, "metrics": {}})
    path = tmp_path / "crafted.ckpt"
    torch.save(payload, path, pickle_protocol=protocol)
    return path, marker


@pytest.mark.parametrize("protocol", [2, 4])                 # GLOBAL and STACK_GLOBAL opcodes
@pytest.mark.parametrize("layout", ["reference", "own"])
def test_crafted_pickle_is_refused_and_does_not_run(tmp_path, protocol, layout):
    path, marker = _crafted(tmp_path, layout, protocol)
    with pytest.raises(UnsafeCheckpointError, match=rf"refused global {os.system.__module__}\.system"):
        read_checkpoint(path)
    assert not marker.exists()
    # control: the file is really hostile; an unrestricted load runs the (harmless) command
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("layout", ["reference", "own"])
def test_crafted_pickle_is_one_line_from_the_cli(run, tmp_path, capsys, layout):
    path, marker = _crafted(tmp_path, layout, 2)
    code, _, err = _cli(capsys, "--checkpoint", path, "--collection", "tvr", "--data-root", run[2])
    err = _one_line_error(code, err)
    assert f"refused global {os.system.__module__}.system" in err and str(path) in err
    assert not marker.exists()


def test_only_latin1_bytes_pass_through_codecs(tmp_path):
    """``_codecs.encode`` is allowed only as protocol 2 spells ``bytes``."""
    path = tmp_path / "bytes.ckpt"
    torch.save({"blob": b"\x00\xffraw"}, path, pickle_protocol=2)
    assert read_checkpoint(path)["blob"] == b"\x00\xffraw"

    class Rot13:
        def __reduce__(self):
            return (codecs.encode, ("text", "rot13"))

    torch.save({"x": Rot13()}, path, pickle_protocol=2)
    with pytest.raises(UnsafeCheckpointError, match="rot13"):
        read_checkpoint(path)


# ------------------------------------------------------------------------------------------------
# The scoring path and the shared reference files
# ------------------------------------------------------------------------------------------------

def test_scores_come_from_the_evaluators_own_blocks(tiny_root):
    """Every score key of a multi-key method (ms-sl: score, clip, frame), chunked: the kept
    matrices rank exactly to ``evaluate_method``'s ranks."""
    cfg = load_config("ms-sl", "tvr", data_root=tiny_root, overrides={"method.hidden_size": 16})
    entry = get_method("ms-sl")
    split = load_split(tiny_root, "tvr", "test", requires=entry.cls.requirements(cfg.method))
    torch.manual_seed(0)
    method = entry.cls(cfg.method, split.dims)
    plain = evaluate_method(method, split, query_chunk=7, video_chunk=5)
    result, scores = evaluate_method_with_scores(method, split, query_chunk=7, video_chunk=5)
    assert set(scores) == set(plain.keys) == {"score", "clip", "frame"}
    again = evaluate(scores, split.query_video)
    for key in plain.keys:
        assert scores[key].shape == (split.num_queries, split.num_videos)
        for name in ("rank", "ties", "ap"):
            assert np.array_equal(getattr(result[key], name), getattr(plain[key], name))
            assert np.array_equal(getattr(again[key], name), getattr(plain[key], name))


@pytest.mark.parametrize("name", REFERENCE_METHODS)
def test_shared_reference_checkpoints_read_safely(name, tmp_path):
    path = SHARED / name / "model.ckpt"
    if not path.is_file():
        pytest.skip(f"{path} absent (the shared reference-checkpoint fixtures are not mounted)")
    ref = load_reference_checkpoint(path)
    assert "easydict" not in sys.modules and type(ref.model_cfg) is dict
    assert ref.model_cfg["visual_input_size"] == 96 and ref.model_cfg["query_input_size"] == 64
    assert isinstance(ref.epoch, int) and ref.state_dict
    assert all(v.dtype == torch.float32 for v in ref.state_dict.values())
    data = path.read_bytes()
    truncated = tmp_path / "model.ckpt"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointError, match="truncated or damaged") as caught:
        load_reference_checkpoint(truncated)
    assert str(truncated) in str(caught.value) and "\n" not in str(caught.value)


def test_saved_config_roundtrip_is_what_the_cli_resolves(run):
    """The CLI's config of an unchanged evaluation is the saved one (no key would change the hash)."""
    run_dir, _, data_root = run
    saved = load_saved_config(run_dir / "config.json")
    cfg = load_config(saved.method_name, "tvr", data_root=data_root,
                      config_files=[run_dir / "config.json"])
    assert evaluate_cli.weight_keys_changed(saved, cfg) == []
