"""``train.precision`` (benchmark/precision.py): fp32 unchanged, bf16 autocast for the forward
pass with losses and evaluation in float32.

fp32 staying bit for bit what it was is pinned by the golden runs of tests/test_schedule_clock.py.
"""
from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from benchmark.config import (
    ConfigError,
    TrainConfig,
    config_hash,
    config_to_dict,
    load_config,
    with_overrides,
)
from benchmark.experiment import prepare
from benchmark.precision import float32_loss, forward_autocast
from benchmark.training.loop import fit

COMMON = {"train.epochs": 1, "train.batch_size": 16, "seed": 0, "device": "cpu"}


# -- config ------------------------------------------------------------------------------------

def test_precision_defaults_to_fp32_and_unknown_values_name_the_key():
    assert load_config("ms-sl", "tvr").train.precision == "fp32"
    assert load_config("ms-sl", "tvr", overrides={"train.precision": "bf16"}).train.precision == "bf16"
    with pytest.raises(ConfigError, match=r"train\.precision.*expected one of 'fp32', 'bf16', got 'fp16'"):
        load_config("ms-sl", "tvr", overrides={"train.precision": "fp16"})
    with pytest.raises(ConfigError, match=r"train\.precision must be one of 'fp32', 'bf16', got 'half'"):
        TrainConfig(precision="half")  # type: ignore[arg-type]


def test_precision_enters_the_config_hash_only_when_not_fp32():
    cfg = load_config("dl-dkd++", "tvr")
    # fp32: the hash of the config as it was before the key existed (old checkpoints load)
    d = config_to_dict(cfg)
    before = {k: d[k] for k in ("method_name", "method", "data", "train", "optim", "seed")}
    before["train"] = {k: v for k, v in before["train"].items()
                       if k not in ("precision", "schedule_clock", "reference_epochs")}
    before["data"] = {k: v for k, v in before["data"].items()       # nor did the memory settings
                      if k not in ("memory_budget", "bound_heap")}
    assert config_hash(cfg) == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
    assert config_hash(with_overrides(cfg, {"train.precision": "bf16"})) != config_hash(cfg)


# -- the float32 guard ----------------------------------------------------------------------------

@float32_loss
def _seen(x: torch.Tensor, *, y: torch.Tensor) -> tuple[torch.dtype, torch.dtype, bool, torch.Tensor]:
    return x.dtype, y.dtype, torch.is_autocast_enabled("cpu"), x


def test_float32_loss_casts_under_autocast_and_is_transparent_without():
    x = torch.randn(3, 3)
    y = torch.arange(3)
    dtype_x, dtype_y, autocast_on, same = _seen(x, y=y)
    assert (dtype_x, dtype_y, autocast_on) == (torch.float32, torch.int64, False)
    assert same is x                                    # untouched: fp32 runs are unchanged
    with forward_autocast("bf16", "cpu")():
        h = x @ x                                       # bf16 under autocast
        assert h.dtype == torch.bfloat16
        dtype_x, dtype_y, autocast_on, _ = _seen(h, y=y)
    assert (dtype_x, dtype_y, autocast_on) == (torch.float32, torch.int64, False)


def test_forward_autocast_fp32_is_a_no_op_and_rejects_unknown_precisions():
    with forward_autocast("fp32", "cpu")():
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        forward_autocast("fp16", "cpu")  # type: ignore[arg-type]


# -- bf16 training on the CPU -----------------------------------------------------------------------

def _train(root, tmp_path, method: str, precision: str):
    cfg = load_config(method, "tvr", data_root=root,
                      overrides={**COMMON, "train.precision": precision,
                                 "tracking.runs_dir": str(tmp_path)})
    prepared = prepare(cfg)
    model = prepared.method
    seen: list[tuple[bool, bool, torch.dtype]] = []     # (training, autocast on, loss dtype)
    compute_loss, score = model.compute_loss, model.score

    def recording_loss(batch, progress):
        out = compute_loss(batch, progress)
        seen.append((True, torch.is_autocast_enabled("cpu"), out["loss"].dtype))
        return out

    def recording_score(q, v):
        if not model.training:                          # the evaluator's calls
            seen.append((False, torch.is_autocast_enabled("cpu"), torch.float32))
        return score(q, v)

    model.compute_loss = recording_loss  # type: ignore[method-assign]
    model.score = recording_score  # type: ignore[method-assign]
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    outputs: list[tuple[bool, torch.dtype]] = []       # (training, dtype) of one Linear's output
    linear.register_forward_hook(lambda module, args, out: outputs.append((module.training, out.dtype)))
    epochs: list[dict[str, float]] = []
    record = fit(model, prepared.splits, cfg, hooks=[lambda s: epochs.append(dict(s.metrics))],
                 identity=prepared.identity, run_dir=tmp_path / precision)
    return record, epochs[0], seen, outputs


# measured on tiny TVR (1 thread): every loss term within 0.5 %, SumR within 4 points
@pytest.mark.parametrize("method", ["mean-pool", "dl-dkd++", "kdc-net"])
def test_bf16_trains_one_epoch_close_to_fp32(tiny_root, tmp_path, method):
    fp32, fp32_epoch, _, fp32_outputs = _train(tiny_root, tmp_path, method, "fp32")
    bf16, bf16_epoch, seen, outputs = _train(tiny_root, tmp_path, method, "bf16")
    assert {dtype for _, dtype in fp32_outputs} == {torch.float32}
    # the forward pass in bfloat16, the loss in float32, evaluation in float32
    assert {dtype for training, dtype in outputs if training} == {torch.bfloat16}
    assert {dtype for training, dtype in outputs if not training} == {torch.float32}
    train_steps = [s for s in seen if s[0]]
    assert train_steps and all(on and dtype == torch.float32 for _, on, dtype in train_steps)
    assert all(not on for training, on, _ in seen if not training)
    losses = {k: v for k, v in bf16_epoch.items() if k.startswith("train/loss")}
    assert losses and all(math.isfinite(v) for v in losses.values())
    for key, value in losses.items():
        assert value == pytest.approx(fp32_epoch[key], rel=0.02, abs=0.01), key
    for split in ("val", "test"):
        got, want = getattr(bf16, split), getattr(fp32, split)
        assert math.isfinite(got["SumR"])
        assert got["SumR"] == pytest.approx(want["SumR"], abs=12.0), split
