"""bench/flops.py's bookkeeping on a toy step (its timings are never asserted): the op groups,
the phase each profiled op falls in, and the table it prints."""
from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

from bench import flops


def test_ops_fall_in_the_groups_the_table_names():
    assert flops.category("aten::mm") == "matmul"
    assert flops.category("aten::convolution_backward") == "matmul"
    assert flops.category("aten::softmax") == "elementwise"
    assert flops.category("aten::add_") == "elementwise"
    assert flops.category("autograd::engine::evaluate_function: MmBackward0") == "autograd"
    assert flops.category("aten::index") == "other"


def test_breakdown_splits_a_profiled_step_by_phase():
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    forward = flops._labelled(lambda x: model(x).square().mean(), flops.FORWARD)
    x = torch.randn(256, 64)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(3):
            x = x + 0                                   # "data" outside every labelled range
            loss = forward(x)
            flops._labelled(loss.backward, flops.BACKWARD)()
            optimizer.step()                            # torch labels it "Optimizer.step#SGD.step"
            optimizer.zero_grad()
        wall = time.perf_counter() - start
    shares, top = flops.breakdown(prof.events(), epoch_seconds=wall, device="cpu")
    assert set(shares) == {f"share_{k}" for k in flops.SHARES}
    assert shares["share_matmul"] > 0 and shares["share_optimizer"] > 0
    assert all(0.0 <= v <= 1.0 for v in shares.values())
    assert top and {kind for _, _, kind in top} <= {"matmul", "elementwise", "other", "autograd"}


def test_matmul_throughput_is_positive_and_the_table_names_every_method(monkeypatch):
    monkeypatch.setattr(flops, "MATMUL_SIZES", (64,))
    assert flops.matmul_gflops("cpu") > 0
    row = {"epoch_seconds": 2.0, "val_eval_seconds": 0.5, "train_gflop_per_epoch": 10.0,
           "flop_bound_seconds": 0.1, "epoch_vs_bound": 20.0, "achieved_gflops": 5.0,
           "top_ops": [["aten::mm", 0.2, "matmul"]], **{f"share_{k}": 0.1 for k in flops.SHARES}}
    text = flops.table(100.0, {"mean-pool": row, "ms-sl": row})
    assert "| mean-pool | 2.00 | 0.50 | 10.0 | 0.10 | **20.0×** | 5 |" in text
    assert "* ms-sl top ops" in text
