"""Epoch time against the FLOP bound, per method, on small synthetic TVR (issue 17, item 4).

* **Throughput**: the best of several dense float32 matmuls (``MATMUL_SIZES``, each the best of
  ``MATMUL_REPEATS``) on this machine's cores with torch's default thread count, in GFLOP/s,
  measured before and after the methods; the higher of the two is the machine's (a job on the
  same cores lowers a reading, never raises it).
* **Training FLOPs per epoch**: ``torch.utils.flop_counter.FlopCounterMode`` over the forward
  (``compute_loss``) and backward of the first ``COUNT_STEPS`` steps of an epoch, scaled by
  steps per epoch (on small TVR, 4 steps: the whole epoch is counted). The counter counts the
  matmul class (mm, bmm, addmm, baddbmm, convolution, attention); elementwise work, the
  optimiser and data handling have no FLOPs in it: they are what the profile shows.
* **Epoch time**: one epoch of the one training loop in a fresh child (``bench.epochs``).
  ``flop_bound_seconds`` = FLOPs ÷ throughput, ``epoch_vs_bound`` = epoch time ÷ bound,
  ``achieved_gflops`` = FLOPs ÷ epoch time.
* **Where the rest goes**: one more epoch of ``fit`` under ``torch.profiler`` in another child
  (the profiler slows it: read the shares, not the seconds). Self time of every op is grouped
  by what it belongs to: ``compute_loss`` and backward split into matmul, elementwise and
  other ops and autograd bookkeeping, plus the Python and dispatch time around them
  (``fwd_bwd_python``); the optimiser step; and the rest of the epoch (collate, moving the
  batch, the loop's own work: ``data_loop``). Validation is timed apart (``val_eval_seconds``);
  it is not in the epoch time. The top ops by self time are printed.

Reproduce: ``python -m bench --only flops`` (or ``nox -s bench -- --only flops``); it prints
the Markdown table of docs/benchmarks.md. Never asserted.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import torch

from bench.epochs import RESULT, measure_method
from bench.measure import sync

METHODS = ("mean-pool", "ms-sl", "dl-dkd", "dl-dkd++", "kdc-net")
MATMUL_SIZES, MATMUL_REPEATS = (1024, 2048, 4096), 4
COUNT_STEPS = 4
TOP_OPS = 8
#: ops whose self time is dense matrix work (the FLOPs the counter counts)
MATMUL_OPS = frozenset({"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addbmm",
                        "aten::mv", "aten::addmv", "aten::dot", "aten::vdot", "aten::matmul",
                        "aten::linear", "aten::einsum", "aten::convolution", "aten::_convolution",
                        "aten::mkldnn_convolution", "aten::convolution_backward",
                        "aten::_scaled_dot_product_flash_attention_for_cpu",
                        "aten::_scaled_dot_product_efficient_attention"})
#: ops that are pointwise arithmetic, activations, reductions and their backward kernels
ELEMENTWISE_WORDS = ("add", "sub", "mul", "div", "exp", "log", "relu", "softmax", "norm", "sqrt",
                     "rsqrt", "pow", "clamp", "where", "max", "min", "sum", "mean", "neg", "abs",
                     "sigmoid", "tanh", "gelu", "dropout", "fill", "masked", "eq", "ne", "gt",
                     "lt", "ge", "le", "threshold", "reciprocal", "erf", "sign", "lerp", "amax")
FORWARD, BACKWARD = "bench::compute_loss", "bench::backward"
OPTIMIZER_PREFIX = "Optimizer."            # torch labels every optimiser step and zero_grad


def matmul_gflops(device: str) -> float:
    """The best float32 matmul throughput over ``MATMUL_SIZES`` (GFLOP/s, 2·n³ per product)."""
    best = 0.0
    g = torch.Generator().manual_seed(0)
    for n in MATMUL_SIZES:
        a = torch.randn(n, n, generator=g).to(device)
        b = torch.randn(n, n, generator=g).to(device)
        torch.mm(a, b)                                       # warm-up (thread pool, caches)
        for _ in range(MATMUL_REPEATS):
            sync(device)
            start = time.perf_counter()
            torch.mm(a, b)
            sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def category(name: str) -> str:
    """The group of one profiled op: matmul, elementwise, autograd or other."""
    if name in MATMUL_OPS:
        return "matmul"
    if name.startswith("autograd::") or "Backward" in name or name.startswith("torch::autograd"):
        return "autograd"
    base = name.removeprefix("aten::").lstrip("_")
    if name.startswith("aten::") and any(word in base for word in ELEMENTWISE_WORDS):
        return "elementwise"
    return "other"


def _phase(event) -> str | None:
    """The outermost labelled range around ``event``: forward, backward, optimizer or None."""
    found = None
    parent = event
    while parent is not None:
        if parent.name == FORWARD:
            found = "forward"
        elif parent.name == BACKWARD:
            found = "backward"
        elif parent.name.startswith(OPTIMIZER_PREFIX):
            found = "optimizer"
        parent = parent.cpu_parent
    return found


def _labelled(fn, label: str):
    def wrapper(*args, **kwargs):
        with torch.profiler.record_function(label):
            return fn(*args, **kwargs)
    return wrapper


def breakdown(events, epoch_seconds: float, device: str) -> tuple[dict[str, float], list]:
    """Shares of the profiled epoch (fractions of ``epoch_seconds``) and the top ops.

    Ops are those up to the end of the last optimiser step (what follows is validation and
    test); label ranges give the phase, names the kind of op."""
    cuda = device.startswith("cuda")
    ranges = [e for e in events if e.name in (FORWARD, BACKWARD) or e.name.startswith(OPTIMIZER_PREFIX)]
    if not ranges:
        raise RuntimeError("the profiled epoch has no labelled compute_loss/backward/optimizer range")
    end = max(e.time_range.end for e in ranges if e.name.startswith(OPTIMIZER_PREFIX))
    totals = defaultdict(float)      # seconds
    for e in ranges:
        key = ("forward" if e.name == FORWARD else "backward" if e.name == BACKWARD else "optimizer")
        totals[key] += e.cpu_time_total / 1e6
    self_time = defaultdict(float)
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.time_range.start > end or e.name in (FORWARD, BACKWARD) or e.name.startswith(OPTIMIZER_PREFIX):
            continue
        seconds = (e.self_device_time_total if cuda else e.self_cpu_time_total) / 1e6
        phase = _phase(e)
        if phase in ("forward", "backward"):
            self_time[category(e.name)] += seconds
            per_op[e.name] += seconds
        elif phase is None:
            self_time["data_loop_ops"] += seconds
            per_op[e.name] += seconds
    fwd_bwd = totals["forward"] + totals["backward"]
    ops = sum(self_time[k] for k in ("matmul", "elementwise", "other", "autograd"))
    shares = {
        "matmul": self_time["matmul"], "elementwise": self_time["elementwise"],
        "other_ops": self_time["other"], "autograd": self_time["autograd"],
        "fwd_bwd_python": max(fwd_bwd - ops, 0.0) if not cuda else 0.0,
        "optimizer": totals["optimizer"],
        "data_loop": max(epoch_seconds - fwd_bwd - totals["optimizer"], 0.0),
    }
    out = {f"share_{k}": round(v / epoch_seconds, 4) for k, v in shares.items()}
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:TOP_OPS]
    return out, [(name, round(s, 3), category(name)) for name, s in top]


def _count_and_profile(name: str, data_root: str, device: str, runs_dir: str) -> dict:
    """Run in the child: one profiled epoch of ``fit``, then the FLOPs of ``COUNT_STEPS`` steps."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from benchmark.config import load_config
    from benchmark.data.loaders import steps_per_epoch, train_batches
    from benchmark.experiment import prepare
    from benchmark.interface import Progress
    from benchmark.training.loop import fit

    cfg = load_config(name, "tvr", data_root=data_root,
                      overrides={"train.epochs": 1, "device": device, "tracking.runs_dir": runs_dir})
    prepared = prepare(cfg)
    method, train = prepared.method, prepared.splits["train"]
    method.compute_loss = _labelled(method.compute_loss, FORWARD)  # type: ignore[method-assign]
    backward = torch.Tensor.backward
    torch.Tensor.backward = _labelled(backward, BACKWARD)          # this child only
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    try:
        with profile(activities=activities) as prof:
            record = fit(method, prepared.splits, cfg, identity=prepared.identity)
    finally:
        torch.Tensor.backward = backward
    shares, top = breakdown(prof.events(), record.epoch_seconds, device)

    steps = steps_per_epoch(train, cfg.train.batch_size)
    counted = 0
    method.train()
    generator = torch.Generator().manual_seed(cfg.seed)
    with FlopCounterMode(display=False) as counter:
        for batch in train_batches(train, cfg.train.batch_size, generator, sort_by=method.batch_sort):
            progress = Progress(epoch=0, num_epochs=1, step=counted, steps_per_epoch=steps)
            method.compute_loss(batch.to(device), progress)["loss"].backward()
            method.zero_grad(set_to_none=True)
            counted += 1
            if counted == COUNT_STEPS:
                break
    flops = counter.get_total_flops() * steps / counted
    return {"train_gflop_per_epoch": flops / 1e9, "flop_steps_counted": counted,
            "steps_per_epoch": steps, "profiled_epoch_seconds": record.epoch_seconds,
            **shares, "top_ops": top}


def measure_flops(name: str, data_root: pathlib.Path, device: str) -> dict:
    """FLOPs per epoch and the profile of ``name``, in a fresh child process."""
    with tempfile.TemporaryDirectory(prefix="bench-flops-") as runs:
        proc = subprocess.run([sys.executable, "-m", "bench.flops", name, str(data_root), device, runs],
                              capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"FLOP count of {name} failed in the bench child:\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)][-1]
    return json.loads(line[len(RESULT):])


SHARES = ("matmul", "elementwise", "other_ops", "autograd", "fwd_bwd_python", "optimizer", "data_loop")


def table(gflops: float, rows: dict[str, dict]) -> str:
    """The Markdown table of docs/benchmarks.md."""
    head = ("| method | epoch s | val s | GFLOP / epoch | bound s | epoch ÷ bound | GFLOP/s | "
            + " | ".join(SHARES) + " |")
    lines = [f"matmul throughput: {gflops:.1f} GFLOP/s (float32, {torch.get_num_threads()} threads)",
             "", head, "|" + "---|" * (7 + len(SHARES))]
    for name, r in rows.items():
        shares = " | ".join(f"{100 * r[f'share_{k}']:.0f} %" for k in SHARES)
        lines.append(f"| {name} | {r['epoch_seconds']:.2f} | {r['val_eval_seconds']:.2f} | "
                     f"{r['train_gflop_per_epoch']:.1f} | {r['flop_bound_seconds']:.2f} | "
                     f"**{r['epoch_vs_bound']:.1f}×** | {r['achieved_gflops']:.3g} | {shares} |")
    for name, r in rows.items():
        ops = ", ".join(f"{op} {s:.2f} s ({kind})" for op, s, kind in r["top_ops"])
        lines.append(f"* {name} top ops (profiled epoch): {ops}")
    return "\n".join(lines)


def run(data_root: pathlib.Path, device: str) -> dict[str, float | str]:
    before = matmul_gflops(device)
    measured = {name: (measure_method(name, data_root, device), measure_flops(name, data_root, device))
                for name in METHODS}
    after = matmul_gflops(device)
    gflops = max(before, after)
    out: dict[str, float | str] = {"device": device, "matmul_gflops": round(gflops, 2),
                                   "matmul_gflops_before": round(before, 2),
                                   "matmul_gflops_after": round(after, 2),
                                   "threads": float(torch.get_num_threads())}
    rows: dict[str, dict] = {}
    for name, (timed, counted) in measured.items():
        bound = counted["train_gflop_per_epoch"] / gflops
        rows[name] = {**counted, "epoch_seconds": timed["epoch_seconds"],
                      "val_eval_seconds": timed["val_eval_seconds"], "flop_bound_seconds": bound,
                      "epoch_vs_bound": timed["epoch_seconds"] / bound,
                      "achieved_gflops": counted["train_gflop_per_epoch"] / timed["epoch_seconds"]}
        prefix = name.replace("-", "_").replace("+", "p")
        for key, value in rows[name].items():
            if isinstance(value, (int, float)):
                out[f"{prefix}_{key}"] = round(float(value), 4)
        if "cuda_peak_mb" in timed:
            out[f"{prefix}_cuda_peak_mb"] = round(timed["cuda_peak_mb"], 1)
    print(table(gflops, rows), flush=True)
    return out


if __name__ == "__main__":
    _name, _root, _device, _runs = sys.argv[1:5]
    print(RESULT + json.dumps(_count_and_profile(_name, _root, _device, _runs)), flush=True)
