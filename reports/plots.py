"""Seaborn figures of a report, each saved as PNG and PDF (headless: the Agg backend).

* :func:`mv_figure`: R@1, R@5, R@10, R@100 and SumR per M/V bin, one panel per metric, one
  bar colour per configuration, each bar with its 95 % bootstrap interval (reports/mv.py);
  bins in edge order, each tick labelled with its query count n; the legend in a free panel.
* :func:`sensitivity_points`: a metric against one swept knob (e.g. the KRD window size w),
  one point per configuration (mean and 95 % t-interval where seeds repeat), never joined by
  a line; colour shows the other knobs; a log axis for log-scaled knobs.
* :func:`sensitivity_heatmap`: mean metric over a grid of two knobs (δ × λ, KD decay ×
  temperature); continuous knobs are cut into a few bins (log-spaced for log-scaled knobs);
  every cell shows its mean and run count, an empty cell says "no run".
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Sequence, cast

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402
import matplotlib.colors  # noqa: E402
import matplotlib.patches  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from reports.mv import MV_METRICS  # noqa: E402
from reports.stats import column, columns, groups, seed_interval, short_param  # noqa: E402

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
        bounds = [sub.pivot_table(index="bin_index", columns="label", values=f"{m}_{side}",
                                  aggfunc="mean", dropna=False)
                  .reindex(index=list(bins["bin_index"]), columns=hue_order)
                  for side in ("lo", "hi")]                                    # (bins, hues) each
        step = 0.8 / len(hue_order)
        for j, label in enumerate(hue_order):
            xs = np.arange(len(ticks)) - 0.4 + step * (j + 0.5)
            mean = pivot[label].to_numpy(dtype=float)
            lo, hi = (b[label].to_numpy(dtype=float) for b in bounds)
            ax.bar(xs, mean, width=step, color=palette[j],
                   label=label if i == 0 else None, edgecolor="white", linewidth=0.3)
            ax.errorbar(xs, mean, yerr=np.stack([mean - lo, hi - mean]), fmt="none",
                        ecolor="black", elinewidth=0.7, capsize=1.5)
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


def discretise(values: pd.Series, max_levels: int = 6, n_bins: int = 4,
               log: bool = False) -> pd.Categorical | pd.Series:
    """Ordered categorical levels of a knob: its values when few, else ``n_bins`` bins,
    log-spaced for a log-scaled knob (``log``)."""
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
    if log and lo > 0:
        edges = np.geomspace(lo, hi, n_bins + 1)
    else:
        edges = np.linspace(lo, hi, n_bins + 1)
    labels = [f"{a:.2g}–{b:.2g}" for a, b in zip(edges[:-1], edges[1:])]
    return cast(pd.Series, pd.cut(numeric, bins=edges, labels=labels, include_lowest=True,
                                  ordered=True))                              # a Series in, a Series out


def _is_continuous(values: pd.Series, max_levels: int = 6) -> bool:
    """A numeric knob with a fractional value or more than ``max_levels`` distinct values; a
    string knob or a few whole numbers (the KRD window) is categorical."""
    numeric = _numeric(values).dropna()
    if len(numeric) != values.notna().sum():
        return False
    return bool((numeric != numeric.round()).any() or numeric.nunique() > max_levels)


def _knob_name(param: str) -> str:
    return short_param(param[len("param."):] if param.startswith("param.") else param)


def sensitivity_points(frame: pd.DataFrame, param: str, stem: Path, title: str, *,
                       log: bool = False, log_knobs: frozenset[str] = frozenset(),
                       y: str = "val/SumR") -> list[Path]:
    """:func:`sensitivity_figure` saved as ``stem.png`` and ``stem.pdf``."""
    return save(sensitivity_figure(frame, param, title, log=log, log_knobs=log_knobs, y=y), stem)


def sensitivity_figure(frame: pd.DataFrame, param: str, title: str, *, log: bool = False,
                       log_knobs: frozenset[str] = frozenset(), y: str = "val/SumR"):
    """``y`` against knob column ``param``: one point per configuration (``row`` column of
    ``reports.stats.add_row_keys``), never joined by a line.

    A configuration with several seeds is drawn as its mean with a 95 % Student-t bar, its
    seeds as small dots; with one seed, as that run. The other knobs that vary are shown by
    colour: their categorical combination (decay kind), else the first continuous one on a
    colour scale (log-normalised when in ``log_knobs``); any further varying knob is named
    under the title as not encoded. ``log``: a log x axis (the knob's Optuna distribution has
    log=True).
    """
    data = columns(frame, ["row", param, y] + [c for c in frame.columns
                                               if c.startswith("param.") and c != param])
    data = data.loc[column(data, param).notna() & column(data, y).notna()]
    if data.empty:
        raise ValueError(f"no runs with both {param!r} and {y!r}")
    others = [c for c in data.columns if c.startswith("param.") and c != param
              and column(data, c).astype(str).nunique(dropna=False) > 1]
    categorical = [c for c in others if not _is_continuous(column(data, c))]
    # the continuous knob set in most runs first (a conditional knob is missing in the others)
    continuous = sorted((c for c in others if c not in categorical),
                        key=lambda c: (-int(column(data, c).notna().sum()), c))
    colour_cont = continuous[0] if continuous and not categorical else None
    unencoded = continuous[1:] if colour_cont else continuous
    points = []
    for (row,), sub in groups(data, ["row"]):                   # loop over configurations
        ys = column(sub, y).to_numpy(dtype=float)
        first = sub.iloc[0]
        points.append({"row": row, "x": first[param], "mean": float(ys.mean()), "n": len(ys),
                       "ci": seed_interval(ys),
                       "hue": ", ".join(f"{_knob_name(c)}={_fmt(first[c])}" for c in categorical),
                       "shade": _numeric(pd.Series([first[colour_cont]])).iloc[0]
                       if colour_cont else math.nan})
    mean = np.array([p["mean"] for p in points])                          # (C,)
    n = np.array([p["n"] for p in points])                                # (C,)
    ci = np.array([p["ci"] for p in points])                              # (C,)
    hue = [str(p["hue"]) for p in points]
    hues = list(dict.fromkeys(hue))
    numeric_x = not bool(_numeric(column(data, param)).isna().any())
    fig, ax = plt.subplots(figsize=(6.0, 3.9), layout="constrained")
    if numeric_x:
        xpos = np.array([float(p["x"]) for p in points])                  # (C,)
        seed_x = column(data, param).to_numpy(dtype=float)                # (runs,)
    else:
        # the configurations of one level side by side, spread over ±0.3 around its tick
        levels = sorted(column(data, param).astype(str).unique())
        level = np.array([levels.index(str(p["x"])) for p in points])    # (C,)
        slot = np.array([int((level[:i] == level[i]).sum()) for i in range(len(points))])
        size = np.bincount(level, minlength=len(levels))[level]           # (C,)
        xpos = level + np.where(size > 1, 0.6 * (slot / np.maximum(size - 1, 1) - 0.5), 0.0)
        where = {p["row"]: x for p, x in zip(points, xpos)}
        seed_x = np.array([where[r] for r in column(data, "row")])
        ax.set_xticks(range(len(levels)))
        ax.set_xticklabels(levels, fontsize=8)
        ax.set_xlim(-0.5, len(levels) - 0.5)
    ax.scatter(seed_x, column(data, y).to_numpy(dtype=float), s=9, color="0.55", alpha=0.6,
               zorder=1, label="seed" if (n > 1).any() else None)
    if colour_cont is not None:
        shade = np.array([p["shade"] for p in points], dtype=float)       # (C,)
        unset = np.isnan(shade)              # a conditional knob that this configuration lacks
        norm = (matplotlib.colors.LogNorm() if colour_cont in log_knobs
                and (shade[~unset] > 0).all() else matplotlib.colors.Normalize())
        sc = ax.scatter(xpos[~unset], mean[~unset], c=shade[~unset], cmap="viridis", norm=norm,
                        s=36, edgecolor="black", linewidth=0.4, zorder=3)
        fig.colorbar(sc, ax=ax, label=_knob_name(colour_cont))
        if unset.any():
            ax.scatter(xpos[unset], mean[unset], s=36, color="white", edgecolor="black",
                       linewidth=0.6, zorder=3, label=f"{_knob_name(colour_cont)} not set")
    else:
        palette = sns.color_palette("colorblind", n_colors=max(len(hues), 3))
        for h, colour in zip(hues, palette):
            mine = np.array([v == h for v in hue])
            ax.scatter(xpos[mine], mean[mine], s=36, color=colour, edgecolor="black",
                       linewidth=0.4, zorder=3, label=h or None)
    repeated = n > 1
    if repeated.any():
        ax.errorbar(xpos[repeated], mean[repeated], yerr=ci[repeated], fmt="none",
                    ecolor="black", elinewidth=0.8, capsize=3, zorder=2)
    if log and numeric_x:
        ax.set_xscale("log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, frameon=False, loc="best")
    ax.set_xlabel(_knob_name(param) + (" (log scale)" if log and numeric_x else ""), fontsize=9)
    ax.set_ylabel(METRIC_LABELS.get(y, y), fontsize=9)
    ax.grid(alpha=0.3)
    sub = f"\n{len(points)} configurations, {int(n.sum())} runs"
    if unencoded:
        sub += "; also vary, not shown: " + ", ".join(_knob_name(c) for c in unencoded)
    ax.set_title(title + sub, fontsize=9)
    return fig


def _fmt(value) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def sensitivity_heatmap(frame: pd.DataFrame, px: str, py: str, stem: Path, title: str,
                        value: str = "val/SumR",
                        log_knobs: frozenset[str] = frozenset()) -> list[Path]:
    """:func:`heatmap_figure` saved as ``stem.png`` and ``stem.pdf``."""
    return save(heatmap_figure(frame, px, py, title, value, log_knobs), stem)


def heatmap_figure(frame: pd.DataFrame, px: str, py: str, title: str, value: str = "val/SumR",
                   log_knobs: frozenset[str] = frozenset()):
    """Mean ``value`` over (``px`` level, ``py`` level) cells; every cell is annotated: the mean
    and its run count ``n``, or "no run" over a hatched empty cell. Continuous knobs are cut
    into a few bins, log-spaced for knobs in ``log_knobs``."""
    data = columns(frame, [px, py, value]).dropna()
    if data.empty:
        raise ValueError(f"no runs with {px!r}, {py!r} and {value!r}")
    data = data.assign(x=discretise(column(data, px), log=px in log_knobs),
                       y=discretise(column(data, py), log=py in log_knobs))
    grid = data.pivot_table(index="y", columns="x", values=value, aggfunc="mean", observed=False,
                            dropna=False)
    count = (data.pivot_table(index="y", columns="x", values=value, aggfunc="count",
                              observed=False, dropna=False)
             .reindex_like(grid).fillna(0).to_numpy(dtype=int))               # (ny, nx)
    means = grid.to_numpy(dtype=float)                                        # (ny, nx)
    annot = np.where(count > 0, np.char.add(np.char.add(np.char.mod("%.1f", means), "\nn="),
                                            count.astype(str)), "")
    fig, ax = plt.subplots(figsize=(1.3 * grid.shape[1] + 2.6, 0.9 * grid.shape[0] + 1.8),
                           layout="constrained")
    sns.heatmap(grid, annot=annot, fmt="", cmap="viridis", ax=ax, annot_kws={"fontsize": 8},
                cbar_kws={"label": METRIC_LABELS.get(value, value) + " (cell mean)"},
                linewidths=0.5, linecolor="white")
    for i, j in zip(*np.nonzero(count == 0)):                                 # empty cells
        ax.add_patch(matplotlib.patches.Rectangle((j, i), 1, 1, fill=False, hatch="///",
                                                  edgecolor="0.75", linewidth=0))
        ax.text(j + 0.5, i + 0.5, "no run", ha="center", va="center", fontsize=8, color="0.35")
    ax.set_xlabel(_knob_name(px) + (" (log bins)" if px in log_knobs else ""), fontsize=9)
    ax.set_ylabel(_knob_name(py) + (" (log bins)" if py in log_knobs else ""), fontsize=9)
    ax.tick_params(labelsize=8)
    ax.tick_params(axis="y", rotation=0)
    ax.invert_yaxis()
    ax.set_title(f"{title}\n{int(count.sum())} runs in {int((count > 0).sum())} of "
                 f"{count.size} cells", fontsize=9)
    return fig
