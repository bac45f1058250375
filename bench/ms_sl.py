"""ms-sl training and evaluation speed and memory on small synthetic TVR.

Training: one epoch of ms-sl with its preset recipe through the one training loop
(``bench.epochs``, a fresh child process): seconds per epoch, validation seconds, peak memory.
No naive comparator is timed for training: the reference-style loss is a test oracle
(tests/test_ms_sl.py), not a second copy of the method kept here.

Evaluation, ours against a naive approach on the same weights (seed 2018, untrained) and the
test split: ours is ``benchmark.evaluate.evaluate_method`` (encodings keep clip states; the
528 proposal scores come from 32 per-clip dot products, chunked). The naive approach follows
the reference's evaluation pattern (docs/methods.md §4; C-MSSL ``method/model.py``): padded
frames and tokens projected, the proposals built by 31 ``avg_pool1d`` calls, all proposals and
frame maps of every test video kept at once, queries scored in batches of 50 (the reference's
eval batch size), ranked by the same evaluator. Its SumR must equal ours.

Each evaluation runs in a fresh child process so that its peak memory is its own: on CUDA
``torch.cuda.max_memory_allocated``; on the CPU the peak resident set of the child (including
the loaded split), reported with the resident set before the phase. Wall seconds and process
CPU seconds are both reported: on a shared CPU the CPU-time ratio is the steadier one. Never
asserted.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from bench.epochs import flatten_measured, measure_methods
from bench.measure import peak_mb, reset_peak, sync
from benchmark.data.split import load_split
from benchmark.evaluate import evaluate, evaluate_method
from benchmark.memory import peak_rss_mb
from benchmark.registry import get_method

NAIVE_QUERY_BATCH = 50     # ref: eval batch size of the reference's evaluation


def _pooled_proposals(clips: torch.Tensor) -> torch.Tensor:
    """The reference's proposals: the clips, then one ``avg_pool1d`` per window length k = 2..N.
    Shapes: clips (B, N, D) -> (B, N(N+1)/2, D)."""
    pool_in = clips.transpose(1, 2)                                           # (B, D, N)
    maps = [clips] + [F.avg_pool1d(pool_in, k, stride=1).transpose(1, 2)
                      for k in range(2, clips.shape[1] + 1)]
    return torch.cat(maps, dim=1)                                             # (B, P, D)


def _naive_scores(model, split, device: str) -> torch.Tensor:
    """Reference-style evaluation: every test video's proposals and frame maps resident, queries
    scored 50 at a time, each pair guided by its own key clip. Shapes: -> (Nq, Nv) on the CPU."""
    model.query_encoder.pack_valid = False          # ref: padded tokens are projected too
    model.frame_encoder.pack_valid = False          # ref: and padded frames
    with torch.no_grad():
        videos = split.video_batch(np.arange(split.num_videos)).to(device)
        clips = model.clip_encoder(videos.clips, None)                        # (Nv, N, D)
        frames = model.frame_encoder(videos.frames, videos.frame_mask)         # (Nv, T, D)
        props = _pooled_proposals(clips)                                       # (Nv, P, D)
        props_n = F.normalize(props, dim=-1)
        key, value = model.key_map(frames), model.value_map(frames)            # (Nv, T, D)
        index = torch.arange(split.num_videos, device=device).unsqueeze(1)     # (Nv, 1)
        blocks = []
        for qs in range(0, split.num_queries, NAIVE_QUERY_BATCH):
            rows = np.arange(qs, min(qs + NAIVE_QUERY_BATCH, split.num_queries))
            qb = split.query_batch(rows).to(device)
            query = model.query_encoder(qb.tokens, qb.mask)                    # (q, D)
            cos = torch.matmul(props_n, F.normalize(query, dim=-1).t()).permute(2, 1, 0)  # (q, P, Nv)
            clip_score, idx = cos.max(dim=1)                                   # (q, Nv)
            guide = props[index, idx.t()]                                      # (Nv, q, D)
            s = torch.bmm(key, guide.transpose(2, 1))                          # (Nv, T, q)
            s = s.masked_fill(videos.frame_mask.unsqueeze(-1).eq(0), -1e9)
            att = torch.bmm(s.softmax(dim=1).transpose(1, 2), value)           # (Nv, q, D)
            frame_score = (F.normalize(att, dim=-1)
                           * F.normalize(query, dim=-1).unsqueeze(0)).sum(-1).t()  # (q, Nv)
            blocks.append(model.config.clip_weight * clip_score
                          + model.config.frame_weight * frame_score)
        return torch.cat(blocks).cpu()


def _phase_eval(data_root: str, device: str, naive: bool) -> dict:
    """Run in a child: build untrained ms-sl (seed 2018), score the test split, time it."""
    entry = get_method("ms-sl")
    test = load_split(pathlib.Path(data_root), "tvr", "test", requires=frozenset({"clips"}))
    torch.manual_seed(2018)
    model = entry.cls(entry.default_config, test.dims).to(device).eval()
    reset_peak(device)
    rss_before = peak_rss_mb()
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    if naive:
        result = evaluate(_naive_scores(model, test, device).numpy(), test.query_video)
    else:
        result = evaluate_method(model, test, query_chunk=2048, video_chunk=256, device=device)
    sync(device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {"eval_seconds": seconds, "eval_cpu_seconds": cpu_seconds, "rss_before_mb": rss_before,
            "SumR": float(result.metrics()["SumR"]), "peak_mb": peak_mb(device)}


def _child_eval(data_root: pathlib.Path, device: str, naive: bool) -> dict:
    code = (f"import json; from bench import ms_sl; "
            f"print('RESULT' + json.dumps(ms_sl._phase_eval({str(data_root)!r}, {device!r}, {naive})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ms_sl bench evaluation (naive={naive}) failed:\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def run(data_root: pathlib.Path, device: str) -> dict[str, float | str]:
    """One training epoch of ms-sl; evaluation seconds and peak memory, ours vs naive."""
    data_root = pathlib.Path(data_root)
    out: dict[str, float | str] = {**flatten_measured(measure_methods(("ms-sl",), data_root, device))}
    ours = _child_eval(data_root, device, naive=False)
    naive = _child_eval(data_root, device, naive=True)
    unit = "alloc" if device.startswith("cuda") else "anon"
    out.update({
        "eval_seconds": ours["eval_seconds"],
        "eval_seconds_naive": naive["eval_seconds"],
        "eval_speedup_vs_naive": naive["eval_seconds"] / ours["eval_seconds"],
        "eval_cpu_seconds": ours["eval_cpu_seconds"],
        "eval_cpu_seconds_naive": naive["eval_cpu_seconds"],
        "eval_cpu_speedup_vs_naive": naive["eval_cpu_seconds"] / ours["eval_cpu_seconds"],
        f"eval_peak_{unit}_mb": ours["peak_mb"],
        f"eval_peak_{unit}_mb_naive": naive["peak_mb"],
        "eval_rss_before_mb": ours["rss_before_mb"],
        "eval_sumr": ours["SumR"],
        "eval_sumr_naive": naive["SumR"],
        "device": device,
    })
    return out
