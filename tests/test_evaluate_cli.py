"""``python -m benchmark.evaluate`` and the safe checkpoint reader, on real files only.

Reference checkpoints are written the way the reference code writes them (a torch zip pickle
holding an ``easydict.EasyDict``, with a stand-in easydict module present only while saving).
Crafted files check that nothing in a checkpoint runs.
"""
from __future__ import annotations

import codecs
import os
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pytest
import torch

from benchmark.config import load_config
from benchmark.data.split import load_split
from benchmark.evaluate import evaluate, evaluate_method, evaluate_method_with_scores
from benchmark.experiment import run_experiment
from benchmark.reference import UnsafeCheckpointError, load_reference_checkpoint, read_checkpoint
from benchmark.registry import ReferenceImportError, get_method
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
