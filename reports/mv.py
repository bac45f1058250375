"""R@k and SumR per moment-to-video ratio (M/V) bin, with bootstrap confidence intervals.

docs/methods.md §11: per-bin R@1/5/10/100 and SumR. Edges: the ones the runs' records and
MLflow metrics used (MLflow param ``eval.mv_edges``, whose default is
``benchmark.mv.DEFAULT_MV_EDGES``), unless the user asks for others (``--mv-edges``); see
:func:`report_edges`. Bins are ``benchmark.mv.assign_bins`` of the saved test ranks' M/V.

Per row (a configuration, see ``reports/stats.py``) with S seeds and a bin of n queries, the
per-query value is v_{q,k} = 100 · mean_s 1[rank_{s,q} <= k] (and SumR_q = sum_k v_{q,k}), so
the bin's value mean_q v_{q,k} equals the mean over seeds of ``EvalResult.by_mv`` (tested).
Its 95 % confidence interval is a percentile bootstrap over the bin's queries
(``N_BOOTSTRAP`` resamples, seeded per bin; the seeds of one query stay together): it covers
the sampling of test queries, the uncertainty that matters for a bin of a few dozen queries.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from benchmark.evaluate import EvalResult
from benchmark.mv import DEFAULT_MV_EDGES, MVEdgesError, assign_bins, bin_labels, validate_edges
from reports.collect import Collected, ReportError
from reports.stats import add_row_keys, groups

MV_METRICS = ("R1", "R5", "R10", "R100", "SumR")
KS = (1, 5, 10, 100)                  # the R@k of MV_METRICS, SumR their sum
N_BOOTSTRAP = 1000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95
BOOTSTRAP_BLOCK = 100                 # resamples drawn at once: memory block × n counts


def parse_edges(text: str) -> tuple[float, ...]:
    """``"0,0.1,0.2,0.4,0.6,1"`` -> validated edges (``benchmark.mv.validate_edges``)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise MVEdgesError(f"--mv-edges {text!r}: expected comma-separated numbers") from None
    return validate_edges(values)


def quantile_edges(mv: np.ndarray, n_bins: int = 5, decimals: int = 3) -> tuple[float, ...]:
    """About equal-count edges (methods.md §11 (a)): 0, the inner quantiles rounded to
    ``decimals`` (readable bin labels), 1; duplicates merged."""
    inner = np.quantile(np.asarray(mv, np.float64), np.linspace(0, 1, n_bins + 1)[1:-1])
    values = np.unique(np.round(np.concatenate([[0.0], inner, [1.0]]), decimals))
    return validate_edges(values)


def report_edges(frame: pd.DataFrame, asked: Sequence[float] | None = None) -> tuple[tuple[float, ...], str]:
    """The M/V edges of the report and a sentence saying where they come from: ``asked`` (the
    user's ``--mv-edges``), else the edges every run recorded (its ``mv_edges`` column), else
    ``DEFAULT_MV_EDGES`` (no run recorded any, or the runs recorded different ones)."""
    if asked is not None:
        return validate_edges(asked), "edges asked for with --mv-edges"
    recorded = {e for e in frame["mv_edges"] if e is not None} if "mv_edges" in frame else set()
    if len(recorded) == 1:
        return next(iter(recorded)), "the edges the runs recorded (MLflow param eval.mv_edges)"
    if not recorded:
        return DEFAULT_MV_EDGES, "the default edges (no run recorded eval.mv_edges)"
    shown = "; ".join(",".join(f"{e:g}" for e in es) for es in sorted(recorded))
    return DEFAULT_MV_EDGES, (f"the default edges: the runs recorded different edges ({shown}); "
                              "pass --mv-edges to choose")


def query_values(runs: Sequence[EvalResult]) -> np.ndarray:
    """Per-query R@k hit rates averaged over the runs (seeds), and their sum.

    v_{q,j} = 100 · mean_s 1[rank_{s,q} <= k_j] for k_j in KS; v_{q,4} = sum_j v_{q,j} (SumR).

    Shapes: S runs of Nq queries each (same ids, same order); returns (Nq, 5) float64.
    """
    ids = runs[0].query_ids
    for r in runs[1:]:
        if not np.array_equal(r.query_ids, ids):
            raise ReportError("the seeds of one configuration rank different test queries; "
                              "their M/V bins cannot be averaged")
    rank = np.stack([r.rank for r in runs])                                   # (S, Nq)
    hits = rank[:, :, None] <= np.asarray(KS)[None, None, :]                  # (S, Nq, 4)
    rk = 100.0 * hits.mean(axis=0)                                            # (Nq, 4)
    return np.concatenate([rk, rk.sum(axis=1, keepdims=True)], axis=1)        # (Nq, 5)


def bootstrap_ci(values: np.ndarray, seed: int | Sequence[int] = BOOTSTRAP_SEED,
                 n_boot: int = N_BOOTSTRAP, level: float = CI_LEVEL,
                 block: int = BOOTSTRAP_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the column means of ``values``, resampling rows.

    Resample b draws n rows with replacement, idx_b; mean*_b = values[idx_b].mean(0); the
    interval is the (1 - level)/2 and (1 + level)/2 quantiles of mean*_b. Resamples are drawn
    ``block`` at a time (memory: block × n counts), no loop over rows. NaN for n = 0.

    Shapes: values (n, m); returns lo (m,), hi (m,).
    """
    values = np.asarray(values, dtype=np.float64)
    n, m = values.shape
    if n == 0:
        return np.full(m, math.nan), np.full(m, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty((n_boot, m))
    for start in range(0, n_boot, block):                      # loop over resample blocks
        k = min(block, n_boot - start)
        idx = rng.integers(0, n, size=(k, n))                  # (k, n)
        # how often each row is drawn: one bincount over the block, then a product
        counts = np.bincount((idx + n * np.arange(k)[:, None]).ravel(),
                             minlength=k * n).reshape(k, n)    # (k, n)
        means[start:start + k] = counts @ values / n           # (k, m)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail], axis=0)    # (m,) each
    return lo, hi


def mv_frame(collected: Collected, edges: Sequence[float] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Long frame: collection, row, method, variant, synthetic, budget, bin, bin_index,
    n_queries, n_seeds, each metric of MV_METRICS (mean over seeds) and its ``<m>_lo`` /
    ``<m>_hi`` bootstrap interval; plus notes (runs without M/V). ``edges`` None: the
    default of :func:`report_edges`."""
    frame = add_row_keys(collected.frame)
    edges = validate_edges(edges) if edges is not None else report_edges(frame)[0]
    labels = bin_labels(edges)
    notes = []
    absent = [r for r in frame["run_id"] if collected.ranks[r].mv is None]
    if absent:
        notes.append(f"M/V breakdown absent for {len(absent)} run(s) (no moments table was "
                     "loaded for their test split)")
    lines = []
    for (collection, row), sub in groups(frame, ["collection", "row"]):
        runs = [collected.ranks[rid] for rid in sub["run_id"] if collected.ranks[rid].mv is not None]
        if not runs:
            continue
        values = query_values(runs)                                           # (Nq, 5)
        bins = assign_bins(np.asarray(runs[0].mv), edges)                     # (Nq,)
        for i, label in enumerate(labels):                                    # loop over bins
            in_bin = values[bins == i]                                        # (n, 5)
            lo, hi = bootstrap_ci(in_bin, seed=(BOOTSTRAP_SEED, i))
            line = {"collection": collection, "row": row, "method": sub["method"].iloc[0],
                    "variant": sub["variant"].iloc[0], "synthetic": bool(sub["synthetic"].any()),
                    "budget": sub["budget"].iloc[0] if "budget" in sub else "",
                    "bin": label, "bin_index": i, "n_queries": len(in_bin),
                    "n_seeds": len(runs)}
            mean = in_bin.mean(axis=0) if len(in_bin) else np.full(len(MV_METRICS), math.nan)
            for j, m in enumerate(MV_METRICS):
                line[m], line[f"{m}_lo"], line[f"{m}_hi"] = float(mean[j]), float(lo[j]), float(hi[j])
            lines.append(line)
    return pd.DataFrame(lines), notes


def mv_markdown(mv: pd.DataFrame, collection: str, title: str, caption: str,
                display=lambda row, method: row) -> str:
    """One Markdown table per metric block: rows = configurations, columns = bins ``label (n)``;
    cells ``mean [lo, hi]`` (the bootstrap interval)."""
    sub: pd.DataFrame = mv.loc[mv["collection"] == collection]
    bins = sub.drop_duplicates("bin_index").sort_values("bin_index")
    headers = [f"{b} (n={int(n)})" for b, n in zip(bins["bin"], bins["n_queries"])]
    lines = [f"### {title}", ""]
    for m in MV_METRICS:
        lines += [f"**{m.replace('R', 'R@', 1) if m != 'SumR' else 'SumR'}**", "",
                  "| Method | " + " | ".join(headers) + " |",
                  "|:---|" + "---:|" * len(headers)]
        for (row, method), g in groups(sub, ["row", "method"]):
            g = g.sort_values("bin_index")
            cells = ["–" if math.isnan(v) else f"{v:.1f} [{lo:.1f}, {hi:.1f}]"
                     for v, lo, hi in zip(g[m], g[f"{m}_lo"], g[f"{m}_hi"])]
            lines.append(f"| {display(row, method)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"*{caption}*", ""]
    return "\n".join(lines)
