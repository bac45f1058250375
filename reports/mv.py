"""R@k and SumR per moment-to-video ratio (M/V) bin, from stored per-query ranks.

docs/methods.md §11: per-bin R@1/5/10/100 and SumR with configurable edges. Each run's bins
are ``EvalResult.by_mv(edges)`` of its saved test ranks, the one M/V implementation (the
training loop's record and logged metrics are views of the same function). Per row (a
configuration, see ``reports/stats.py``) the per-run bin values are averaged over seeds;
``n_queries`` is the bin's query count (the same test set for every seed).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from benchmark.mv import bin_labels, validate_edges
from reports.collect import Collected
from reports.stats import add_row_keys, groups

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
    for (collection, row), sub in groups(frame, ["collection", "row"]):
        per_run = [collected.ranks[rid].by_mv(edges) for rid in sub["run_id"]
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
    sub: pd.DataFrame = mv.loc[mv["collection"] == collection]
    bins = sub.drop_duplicates("bin_index").sort_values("bin_index")
    headers = [f"{b} (n={int(n)})" for b, n in zip(bins["bin"], bins["n_queries"])]
    lines = [f"### {title}", ""]
    for m in MV_METRICS:
        lines += [f"**{m.replace('R', 'R@', 1) if m != 'SumR' else 'SumR'}**", "",
                  "| Method | " + " | ".join(headers) + " |",
                  "|:---|" + "---:|" * len(headers)]
        for (row, method), g in groups(sub, ["row", "method"]):
            vals = g.sort_values("bin_index")[m]
            cells = ["–" if math.isnan(v) else f"{v:.1f}" for v in vals]
            lines.append(f"| {display(row, method)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"*{caption}*", ""]
    return "\n".join(lines)
