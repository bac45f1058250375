"""The CUDA path, checked on a GPU (``nox -s gpu``; skipped without CUDA).

* The same weights score the tiny test split on the CPU and on CUDA within 1e-4 for every base
  method (``resolve_device`` keeps CUDA float32 IEEE, without TF32).
* One epoch trains on CUDA in fp32 and in bf16, with finite losses and a CUDA memory peak.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from benchmark.config import load_config
from benchmark.evaluate import evaluate_method_with_scores
from benchmark.experiment import load_eval_split, prepare
from benchmark.registry import get_method
from benchmark.seeding import seed_everything
from benchmark.training.loop import fit, resolve_device

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

BASE_METHODS = ("mean-pool", "ms-sl", "dl-dkd", "dl-dkd++", "kdc-net")
SCORE_TOLERANCE = 1e-4


@pytest.mark.parametrize("name", BASE_METHODS)
def test_cuda_scores_match_cpu_on_the_same_weights(tiny_root, name):
    cfg = load_config(name, "tvr", data_root=tiny_root)
    entry = get_method(name)
    split = load_eval_split(cfg, "test", frozenset(entry.cls.requirements(cfg.method)))
    seed_everything(0)
    method = entry.cls(cfg.method, split.dims)
    cpu, cpu_scores = evaluate_method_with_scores(method, split, query_chunk=64, video_chunk=32,
                                                  device="cpu")
    device = resolve_device("cuda")
    on_cuda = copy.deepcopy(method).to(device)
    gpu, gpu_scores = evaluate_method_with_scores(on_cuda, split, query_chunk=64, video_chunk=32,
                                                  device=device)
    assert set(gpu_scores) == set(cpu_scores)
    for key, want in cpu_scores.items():
        gap = float(np.abs(gpu_scores[key].astype(np.float64) - want).max())
        assert gap <= SCORE_TOLERANCE, f"{name} {key!r}: max |CPU - CUDA| = {gap:.3g}"
    # ranks may differ only where two videos' scores lie within the tolerance: a few queries
    assert (gpu["score"].rank != cpu["score"].rank).mean() <= 0.05


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_one_cuda_epoch_trains(tiny_root, tmp_path, precision):
    cfg = load_config("dl-dkd++", "tvr", data_root=tiny_root,
                      overrides={"train.epochs": 1, "train.batch_size": 16, "device": "cuda",
                                 "train.precision": precision, "tracking.runs_dir": str(tmp_path)})
    prepared = prepare(cfg)
    record = fit(prepared.method, prepared.splits, cfg, identity=prepared.identity,
                 run_dir=tmp_path / "run")
    assert math.isfinite(record.val["SumR"]) and math.isfinite(record.test["SumR"])
    assert record.cuda_peak_mb is not None and record.cuda_peak_mb > 0
