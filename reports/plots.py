"""Seaborn figures of a report, each saved as PNG and PDF (headless: the Agg backend).

* :func:`mv_figure`: R@1, R@5, R@10, R@100 and SumR per M/V bin, one panel per metric, one
  bar colour per configuration; bins in edge order, each tick labelled with its query count;
  the legend outside on the right.
* :func:`sensitivity_curve`: a metric against one swept knob (e.g. the KRD window size w),
  mean ± std over the runs at each value.
* :func:`sensitivity_heatmap`: mean metric over a grid of two knobs (δ × λ, KD decay ×
  temperature); continuous knobs are cut into a few bins (log-spaced for knobs spanning more
  than a decade), each cell annotated with its run count.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Sequence, cast

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from reports.mv import MV_METRICS  # noqa: E402
from reports.stats import column, columns, short_param  # noqa: E402

METRIC_LABELS = {"R1": "R@1 (%)", "R5": "R@5 (%)", "R10": "R@10 (%)", "R100": "R@100 (%)",
                 "SumR": "SumR", "val/SumR": "validation SumR", "test/SumR": "test SumR"}
FORMATS = ("png", "pdf")
DPI = 150


def save(fig, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf``; close the figure; return the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in FORMATS:
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _wrap(label: str, width: int = 38) -> str:
    """Break long configuration labels at ', ' so a legend stays narrow."""
    if len(label) <= width:
        return label
    parts, line, out = label.split(", "), "", []
    for p in parts:
        candidate = f"{line}, {p}" if line else p
        if len(candidate) > width and line:
            out.append(line + ",")
            line = p
        else:
            line = candidate
    out.append(line)
    return "\n".join(out)


def mv_figure(mv: pd.DataFrame, collection: str, stem: Path, title: str,
              display: Callable[[str, str], str] = lambda row, method: row,
              metrics: Sequence[str] = MV_METRICS,
              row_order: Sequence[str] | None = None) -> list[Path]:
    """Bars of each metric per M/V bin and configuration for one collection; ``row_order``
    (the table's row order) orders the colours and the legend."""
    sub: pd.DataFrame = mv.loc[mv["collection"] == collection].copy()
    if sub.empty:
        raise ValueError(f"no M/V rows for collection {collection!r}")
    bins = sub.drop_duplicates("bin_index").sort_values("bin_index")
    # long labels ("0.049-0.068") go on two lines so neighbouring ticks never overlap
    ticks = [(b.replace("-", "–\n", 1) if len(b) > 7 else b) + f"\n(n={int(n)})"
             for b, n in zip(bins["bin"], bins["n_queries"])]
    if row_order is not None:
        rank = {r: i for i, r in enumerate(row_order)}
        sub = sub.sort_values("row", key=lambda col: col.map(lambda r: rank.get(r, len(rank))),
                              kind="stable")
    sub["label"] = [_wrap(display(r, m)) for r, m in zip(sub["row"], sub["method"])]
    hue_order = list(dict.fromkeys(sub["label"]))
    palette = sns.color_palette("colorblind", n_colors=max(len(hue_order), 3))
    # 2 x 3 panels: R@1 R@5 R@10 / R@100 SumR legend (the legend in the right-hand slot)
    ncols = 3
    nrows = math.ceil((len(metrics) + 1) / ncols)
    width = max(3.6, 0.5 * len(ticks) + 0.07 * len(ticks) * len(hue_order))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.3 * nrows + 0.6),
                             squeeze=False, layout="constrained")
    flat = list(axes.flat)
    for i, (ax, m) in enumerate(zip(flat, metrics)):
        # grouped bars drawn directly (seaborn's barplot re-aggregates every panel: slow)
        pivot = (sub.pivot_table(index="bin_index", columns="label", values=m, aggfunc="mean",
                                 dropna=False)
                 .reindex(index=list(bins["bin_index"]), columns=hue_order))   # (bins, hues)
        step = 0.8 / len(hue_order)
        for j, label in enumerate(hue_order):
            xs = np.arange(len(ticks)) - 0.4 + step * (j + 0.5)
            ax.bar(xs, pivot[label].to_numpy(dtype=float), width=step, color=palette[j],
                   label=label if i == 0 else None, edgecolor="white", linewidth=0.3)
        ax.set_xticks(range(len(ticks)))
        ax.set_xticklabels(ticks, fontsize=8)
        last_row = i + ncols >= len(metrics)
        ax.set_xlabel("M/V bin (moment / video length)" if last_row else "", fontsize=9)
        ax.set_ylabel(METRIC_LABELS.get(m, m), fontsize=9)
        ax.set_title(METRIC_LABELS.get(m, m).replace(" (%)", ""), fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    first = flat[0]
    handles, labels = first.get_legend_handles_labels()
    for ax in flat[len(metrics):]:
        ax.axis("off")
    holder = flat[len(metrics)] if len(flat) > len(metrics) else None
    if holder is not None:
        holder.legend(handles, labels, loc="center left", fontsize=8, frameon=False,
                      title="method", title_fontsize=9)
    else:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                   frameon=False, title="method", title_fontsize=9)
    fig.suptitle(title, fontsize=11)
    return save(fig, stem)


# --------------------------------------------------------------------------- sensitivity
def _numeric(values: pd.Series) -> pd.Series:
    """``values`` parsed as numbers, NaN where a value is not one."""
    return cast(pd.Series, pd.to_numeric(values, errors="coerce"))      # a Series in, a Series out


def discretise(values: pd.Series, max_levels: int = 6,
               n_bins: int = 4) -> pd.Categorical | pd.Series:
    """Ordered categorical levels of a knob: its values when few, else ``n_bins`` bins."""
    values = values.copy()
    numeric = _numeric(values)
    if numeric.notna().sum() != values.notna().sum():          # categorical knob
        cats = sorted(values.dropna().astype(str).unique())
        return pd.Categorical(values.astype(str), categories=cats, ordered=True)
    uniq = np.sort(cast(np.ndarray, numeric.dropna().unique()))   # numpy dtype: an ndarray
    if len(uniq) <= max_levels:
        labels = [f"{v:.3g}" for v in uniq]
        return pd.Categorical(numeric.map(lambda v: f"{v:.3g}" if pd.notna(v) else None),
                              categories=labels, ordered=True)
    lo, hi = float(uniq[0]), float(uniq[-1])
    if lo > 0 and hi / lo > 10:
        edges = np.geomspace(lo, hi, n_bins + 1)
    else:
        edges = np.linspace(lo, hi, n_bins + 1)
    labels = [f"{a:.2g}–{b:.2g}" for a, b in zip(edges[:-1], edges[1:])]
    return cast(pd.Series, pd.cut(numeric, bins=edges, labels=labels, include_lowest=True,
                                  ordered=True))                              # a Series in, a Series out


def sensitivity_curve(frame: pd.DataFrame, param: str, stem: Path, title: str,
                      y: str = "val/SumR") -> list[Path]:
    """``y`` against knob column ``param`` (``param.<key>``): points with mean ± std bars."""
    data = columns(frame, [param, y]).dropna()
    if data.empty:
        raise ValueError(f"no runs with both {param!r} and {y!r}")
    data = data.assign(level=discretise(column(data, param)))
    fig, ax = plt.subplots(figsize=(5.2, 3.6), layout="constrained")
    stats = data.groupby("level", observed=True)[y].agg(["mean", "std", "count"]).reset_index()
    xs = np.arange(len(stats))
    categorical = _numeric(column(data, param)).isna().any()
    ax.errorbar(xs, stats["mean"], yerr=stats["std"].fillna(0.0), marker="o", capsize=3,
                color=sns.color_palette("colorblind")[0],
                linestyle="none" if categorical else "-")     # no line between categories
    position = {level: x for x, level in zip(xs, stats["level"])}
    ax.scatter(column(data, "level").map(position).astype(float), data[y], s=12, alpha=0.35,
               color="black")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{lv}\n(n={int(n)})" for lv, n in zip(stats["level"], stats["count"])],
                       fontsize=8)
    ax.set_xlabel(short_param(param[len("param."):] if param.startswith("param.") else param),
                  fontsize=9)
    ax.set_ylabel(METRIC_LABELS.get(y, y), fontsize=9)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    return save(fig, stem)


def sensitivity_heatmap(frame: pd.DataFrame, px: str, py: str, stem: Path, title: str,
                        value: str = "val/SumR") -> list[Path]:
    """Mean ``value`` over (``px`` level, ``py`` level) cells, annotated ``mean (n)``."""
    data = columns(frame, [px, py, value]).dropna()
    if data.empty:
        raise ValueError(f"no runs with {px!r}, {py!r} and {value!r}")
    data = data.assign(x=discretise(column(data, px)), y=discretise(column(data, py)))
    grid = data.pivot_table(index="y", columns="x", values=value, aggfunc="mean", observed=False)
    count = data.pivot_table(index="y", columns="x", values=value, aggfunc="count",
                             observed=False).reindex_like(grid)
    annot = np.vectorize(lambda m, n: "" if not (isinstance(n, (int, float)) and n > 0)
                         or math.isnan(m) else f"{m:.1f}\n(n={int(n)})")(grid.to_numpy(),
                                                                        count.fillna(0).to_numpy())
    fig, ax = plt.subplots(figsize=(1.3 * grid.shape[1] + 2.6, 0.9 * grid.shape[0] + 1.8),
                           layout="constrained")
    sns.heatmap(grid, annot=annot, fmt="", cmap="viridis", ax=ax, annot_kws={"fontsize": 8},
                cbar_kws={"label": METRIC_LABELS.get(value, value)}, linewidths=0.5,
                linecolor="white")
    ax.set_xlabel(short_param(px[len("param."):]), fontsize=9)
    ax.set_ylabel(short_param(py[len("param."):]), fontsize=9)
    ax.tick_params(labelsize=8)
    ax.tick_params(axis="y", rotation=0)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    return save(fig, stem)
