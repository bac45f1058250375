"""R@k and SumR per moment-to-video ratio (M/V) bin, recomputed from stored per-query ranks.

docs/methods.md §11: per-bin R@1/5/10/100 and SumR with configurable edges. Bins come from
``benchmark.mv.assign_bins`` (right-closed, M/V = 0 in no bin), so the numbers equal
``EvalResult.by_mv(edges)`` on the same edges; here they are computed for all bins at once
with ``np.bincount`` instead of one mask per bin:

    hits_{b,K} = #{i in bin b : rank_i <= K},  R@K_b = 100 · hits_{b,K} / n_b.

Per row (a configuration, see ``reports/stats.py``) the per-run bin values are averaged over
seeds; ``n_queries`` is the bin's query count (the same test set for every seed).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from benchmark.evaluate import RECALL_KS, EvalResult
from benchmark.mv import assign_bins, bin_labels, validate_edges
from reports.collect import Collected
from reports.stats import add_row_keys

MV_METRICS = ("R1", "R5", "R10", "R100", "SumR")
DEFAULT_REPORT_EDGES = (0.0, 0.1, 0.2, 0.4, 0.6, 1.0)      # docs/methods.md §11 (b)


def parse_edges(text: str) -> tuple[float, ...]:
    """``"0,0.1,0.2,0.4,0.6,1"`` -> validated edges (``benchmark.mv.validate_edges``)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        from benchmark.mv import MVEdgesError
        raise MVEdgesError(f"--mv-edges {text!r}: expected comma-separated numbers") from None
    return validate_edges(values)


def quantile_edges(mv: np.ndarray, n_bins: int = 5, decimals: int = 3) -> tuple[float, ...]:
    """About equal-count edges (methods.md §11 (a)): 0, the inner quantiles rounded to
    ``decimals`` (readable bin labels), 1; duplicates merged."""
    inner = np.quantile(np.asarray(mv, np.float64), np.linspace(0, 1, n_bins + 1)[1:-1])
    values = np.unique(np.round(np.concatenate([[0.0], inner, [1.0]]), decimals))
    return validate_edges(values)


def bin_metrics(result: EvalResult, edges: Sequence[float] | None = None,
                key: str | None = None) -> dict[str, dict[str, float]]:
    """``{bin label: {R1, R5, R10, R100, SumR, n_queries}}`` for one run (all bins present;
    an empty bin has n_queries 0 and NaN metrics), in edge order."""
    if result.mv is None:
        raise ValueError("M/V breakdown absent: the run's ranks hold no M/V values")
    labels = bin_labels(edges)
    nb = len(labels)
    rank = result[key or result.primary_key].rank                       # (Nq,)
    bins = assign_bins(result.mv, edges)                                 # (Nq,) in [-1, nb)
    inside = bins >= 0
    b = bins[inside]
    n = np.bincount(b, minlength=nb).astype(np.float64)                  # (nb,)
    out: dict[str, dict[str, float]] = {label: {} for label in labels}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in RECALL_KS:
            hits = np.bincount(b, weights=(rank[inside] <= k).astype(np.float64), minlength=nb)
            recall = np.where(n > 0, 100.0 * hits / np.where(n > 0, n, 1.0), np.nan)   # (nb,)
            for i, label in enumerate(labels):
                out[label][f"R{k}"] = float(recall[i])
    for i, label in enumerate(labels):
        row = out[label]
        row["SumR"] = sum(row[f"R{k}"] for k in RECALL_KS)
        row["n_queries"] = int(n[i])
    return out


def mv_frame(collected: Collected, edges: Sequence[float] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Long frame: collection, row, method, variant, synthetic, bin, bin_index, n_queries,
    n_seeds, and the mean over seeds of each metric in MV_METRICS; plus notes (runs without M/V)."""
    edges = validate_edges(edges if edges is not None else DEFAULT_REPORT_EDGES)
    labels = bin_labels(edges)
    frame = add_row_keys(collected.frame)
    notes = []
    absent = [r for r in frame["run_id"] if collected.ranks[r].mv is None]
    if absent:
        notes.append(f"M/V breakdown absent for {len(absent)} run(s) (no moments table was "
                     "loaded for their test split)")
    lines = []
    for (collection, row), sub in frame.groupby(["collection", "row"], sort=False):
        per_run = [bin_metrics(collected.ranks[rid], edges) for rid in sub["run_id"]
                   if collected.ranks[rid].mv is not None]
        if not per_run:
            continue
        for i, label in enumerate(labels):
            line = {"collection": collection, "row": row, "method": sub["method"].iloc[0],
                    "variant": sub["variant"].iloc[0], "synthetic": bool(sub["synthetic"].any()),
                    "bin": label, "bin_index": i, "n_queries": per_run[0][label]["n_queries"],
                    "n_seeds": len(per_run)}
            for m in MV_METRICS:
                vals = [p[label][m] for p in per_run if not math.isnan(p[label][m])]
                line[m] = float(np.mean(vals)) if vals else math.nan
            lines.append(line)
    return pd.DataFrame(lines), notes


def mv_markdown(mv: pd.DataFrame, collection: str, title: str, caption: str,
                display=lambda row, method: row) -> str:
    """One Markdown table per metric block: rows = configurations, columns = bins ``label (n)``."""
    sub = mv[mv["collection"] == collection]
    bins = sub.drop_duplicates("bin_index").sort_values("bin_index")
    headers = [f"{b} (n={int(n)})" for b, n in zip(bins["bin"], bins["n_queries"])]
    lines = [f"### {title}", ""]
    for m in MV_METRICS:
        lines += [f"**{m.replace('R', 'R@', 1) if m != 'SumR' else 'SumR'}**", "",
                  "| Method | " + " | ".join(headers) + " |",
                  "|:---|" + "---:|" * len(headers)]
        for (row, method), g in sub.groupby(["row", "method"], sort=False):
            vals = g.sort_values("bin_index")[m]
            cells = ["–" if math.isnan(v) else f"{v:.1f}" for v in vals]
            lines.append(f"| {display(row, method)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"*{caption}*", ""]
    return "\n".join(lines)
