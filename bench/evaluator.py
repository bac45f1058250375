"""The evaluator on a TVR-test-sized matrix against the reference's per-query argsort loop.

Scores: a random tie-free 10,895 x 2,179 float32 matrix (TVR test size, docs/datasets.md §0),
each row a random permutation of 0..Nv-1, so both approaches must give identical ranks. The
naive approach restates the reference protocol (docs/methods.md §1.5): one ``np.argsort`` per
query to find the ground-truth rank, then a second per-query pass that sorts again and computes
AP from a 0/1 label list, as MS-SL's ``t2v_map`` does. Two ratios: against that whole protocol
and against its ranking loop alone. ``data_root`` is not read: the
evaluator's cost depends only on the matrix shape.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the resident score matrix; on the
CPU the growth of the peak resident set of a fresh child process over its resident set with
the matrix already allocated (tracemalloc cannot see torch's allocator). Never asserted.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

import numpy as np
import torch

from bench.measure import one_thread, sync
from benchmark.evaluate import evaluate
from benchmark.memory import AnonPeak, anon_rss_mb

NUM_QUERIES = 10_895      # TVR test queries (docs/datasets.md §0)
NUM_VIDEOS = 2_179        # TVR test videos
QUERY_CHUNK = 2048        # the evaluator's default
SMALL_CHUNK = 256         # a second peak-memory reading: memory scales with the chunk
REPEATS = 3               # best-of for the evaluator; the naive loop runs once


def _tie_free_scores(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.broadcast_to(np.arange(NUM_VIDEOS, dtype=np.float32), (NUM_QUERIES, NUM_VIDEOS))
    scores = rng.permuted(base, axis=1)                                   # (Nq, Nv) no ties
    query_video = rng.integers(0, NUM_VIDEOS, size=NUM_QUERIES).astype(np.int64)
    return np.ascontiguousarray(scores), query_video


def naive_reference(scores: np.ndarray, query_video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference protocol's approach, restated: per-query loops (a yardstick, not library code).

    Ranks: one ``np.argsort`` of the errors -S per query and a search for the ground truth in it
    (MS-SL ``eval_q2m``). mAP: a second pass that argsorts again, reorders a Python list of 0/1
    labels and accumulates precision at every relevant position in a Python loop (``t2v_map``).
    """
    nq, nv = scores.shape
    errors = -scores
    ranks = np.zeros(nq, np.int64)
    for i in range(nq):
        order = np.argsort(errors[i])
        ranks[i] = int(np.where(order == query_video[i])[0][0]) + 1
    aps = np.zeros(nq)
    for i in range(nq):
        labels = [0] * nv
        labels[int(query_video[i])] = 1
        ranked = [labels[j] for j in np.argsort(errors[i])]
        hits, total = 0, 0.0
        for position, label in enumerate(ranked, start=1):
            if label:
                hits += 1
                total += hits / position
        aps[i] = total / hits
    return ranks, aps


def naive_rank_loop(scores: np.ndarray, query_video: np.ndarray) -> np.ndarray:
    """Only the ranking half of ``naive_reference`` (argsort per query), for a stricter ratio."""
    ranks = np.zeros(scores.shape[0], np.int64)
    for i in range(scores.shape[0]):
        ranks[i] = int(np.where(np.argsort(-scores[i]) == query_video[i])[0][0]) + 1
    return ranks


def _child_peak_mb(query_chunk: int) -> None:
    """Run in a fresh process: print the evaluator's peak anonymous-memory growth in MB as JSON
    (RssAnon sampled every 2 ms around the evaluate call; NaN where /proc has no RssAnon)."""
    scores = torch.rand(NUM_QUERIES, NUM_VIDEOS)
    query_video = torch.randint(0, NUM_VIDEOS, (NUM_QUERIES,))
    evaluate(scores[:8], query_video[:8])            # import and first-call costs out of the way
    before = anon_rss_mb()
    with AnonPeak(interval_s=0.002) as window:
        evaluate(scores, query_video, query_chunk=query_chunk)
        peak = window.peak_mb()
    print(json.dumps({"peak_mb": max(peak - before, 0.0)}))


def _cpu_peak_mb(query_chunk: int) -> float:
    code = f"from bench.evaluator import _child_peak_mb; _child_peak_mb({query_chunk})"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"])


def run(data_root: pathlib.Path, device: str) -> dict[str, float | str]:
    # One CPU thread while timing: the reference loop is single-threaded numpy, so the ratio
    # compares like with like (and stays meaningful on a shared machine).
    with one_thread():
        return _measure(device)


def _measure(device: str) -> dict[str, float | str]:
    scores_np, query_video = _tie_free_scores()
    start = time.perf_counter()
    scores = torch.from_numpy(scores_np).to(device)
    sync(device)
    transfer_s = time.perf_counter() - start

    evaluate(scores[:64], query_video[:64])                               # warm-up
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
    times = []
    for _ in range(REPEATS):
        sync(device)
        start = time.perf_counter()
        result = evaluate(scores, query_video, query_chunk=QUERY_CHUNK)
        sync(device)
        times.append(time.perf_counter() - start)
    evaluator_s = min(times)
    if device.startswith("cuda"):
        peak_mb = (torch.cuda.max_memory_allocated() - resident) / 2**20
        torch.cuda.reset_peak_memory_stats()
        evaluate(scores, query_video, query_chunk=SMALL_CHUNK)
        small_peak_mb = (torch.cuda.max_memory_allocated() - resident) / 2**20
    else:
        peak_mb = _cpu_peak_mb(QUERY_CHUNK)
        small_peak_mb = _cpu_peak_mb(SMALL_CHUNK)

    start = time.perf_counter()
    rank_only = naive_rank_loop(scores_np, query_video)
    naive_rank_s = time.perf_counter() - start
    start = time.perf_counter()
    naive_rank, naive_ap = naive_reference(scores_np, query_video)
    naive_s = time.perf_counter() - start

    identical = bool(np.array_equal(result.rank, naive_rank)
                     and np.array_equal(rank_only, naive_rank)
                     and np.allclose(result.ap, naive_ap, rtol=1e-12, atol=0)
                     and int(result.ties.max()) == 0)
    return {
        "num_queries": float(NUM_QUERIES),
        "num_videos": float(NUM_VIDEOS),
        "query_chunk": float(QUERY_CHUNK),
        "evaluator_seconds": evaluator_s,
        "naive_rank_loop_seconds": naive_rank_s,
        "naive_reference_seconds": naive_s,
        "speed_ratio_vs_rank_loop": naive_rank_s / evaluator_s,
        "speed_ratio_vs_reference": naive_s / evaluator_s,
        "evaluator_peak_mb": peak_mb,
        f"evaluator_peak_mb_chunk{SMALL_CHUNK}": small_peak_mb,
        "score_matrix_mb": scores_np.nbytes / 2**20,
        "score_transfer_seconds": transfer_s,
        "ranks_identical_to_naive": "yes" if identical else "NO",
        "torch_threads": float(torch.get_num_threads()),
    }
