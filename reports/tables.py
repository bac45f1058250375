"""Ablation tables: rows = methods and variants grouped by base method, columns = R@k, SumR.

Per collection the columns are R@1, R@5, R@10, R@100, SumR (mean ± std over seeds, std with
ddof = 1) and n (seed count). Inside each group of one base method the base row comes first;
every other row shows, after its mean, the difference to the base row's mean ``(+1.2)``, and
its SumR cell carries the marker of the paired test of ``reports/stats.py`` against the base
row, only when that comparison is paired (same seeds, same queries); an unpaired row gets no
marker, and the caption says which rows and why. The best mean of each column is bold.
Outputs: Markdown, LaTeX (booktabs) and a rich table.

Base row of a group: the row of the base method itself (``variant == method``); when several
configurations of it exist (the trials of a sweep), the one with the best mean validation
SumR, said in the caption.

``kdc-net`` rows are shown as "KDC-Net (reconstruction)" with the note of docs/methods.md
§9.3.1. Synthetic results are labelled synthetic in the title and the caption.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd

from reports.budget import budget_sentence
from reports.collect import TABLE_METRICS, Collected
from reports.stats import (
    PairedTest,
    PairingError,
    add_row_keys,
    column,
    columns,
    describe_tests,
    groups,
    paired_test,
    summarise,
    summary_lines,
)

KDC_LABEL = "KDC-Net (reconstruction)"
KDC_NOTE = "reconstruction from the abstract of arXiv 2603.23902; not the authors' method or code"
METHOD_ORDER = ("mean-pool", "ms-sl", "gmmformer", "dl-dkd", "dl-dkd++", "kdc-net")
COLLECTION_NAMES = {"tvr": "TVR", "activitynet": "ActivityNet Captions", "charades": "Charades-STA"}
METRIC_LABELS = {"R1": "R@1", "R5": "R@5", "R10": "R@10", "R100": "R@100", "SumR": "SumR",
                 "MedR": "MedR", "MeanR": "MeanR", "mAP": "mAP"}
SYNTHETIC_NOTE = ("All numbers are on synthetic data (a generated collection); they measure the "
                  "harness, not the methods, and are not comparable with published results.")


def collection_name(collection: str, synthetic: bool = False) -> str:
    name = COLLECTION_NAMES.get(collection, collection)
    return f"{name} (synthetic)" if synthetic else name


def display_name(row: str, method: str) -> str:
    """Rendered row label: ``kdc-net...`` rows become "KDC-Net (reconstruction)..."."""
    if method == "kdc-net" and row.startswith("kdc-net"):
        rest = row[len("kdc-net"):]
        if rest.startswith("."):
            rest = ": " + rest[1:]
        return KDC_LABEL + rest
    return row


def _method_rank(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


@dataclass
class Cell:
    mean: float
    std: float
    delta: float | None = None
    best: bool = False


@dataclass
class TableRow:
    """One configuration; ``cells[collection][metric]``; ``tests[collection]``."""

    row: str
    method: str
    display: str
    is_base: dict[str, bool] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)
    seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)
    cells: dict[str, dict[str, Cell]] = field(default_factory=dict)
    tests: dict[str, PairedTest] = field(default_factory=dict)
    group_start: bool = False


@dataclass
class AblationTable:
    title: str
    collections: list[str]
    rows: list[TableRow]
    caption: str
    metrics: tuple[str, ...]
    synthetic: bool
    warnings: list[str]
    tests: pd.DataFrame            # collection, row, base, test, pairing, p_value, n_pairs, ...


def _ordered_rows(summary: pd.DataFrame, bases: set[str]) -> list[tuple[str, str, bool]]:
    """[(method, row, starts group)] over all collections: groups by base method in
    METHOD_ORDER; the base row first, then the base method's other configurations, then
    variants, each by trial number."""
    keys = columns(summary.drop_duplicates("row"), ["method", "variant", "row", "trial"])
    keys = keys.assign(_m=[_method_rank(m) for m in keys["method"]],
                       _v=[0 if r in bases else 1 if v == m else 2
                           for r, v, m in zip(keys["row"], keys["variant"], keys["method"])],
                       _t=column(keys, "trial").fillna(-1.0))
    keys = keys.sort_values(["_m", "_v", "variant", "_t", "row"], kind="stable")
    out, last = [], None
    for method, row in zip(keys["method"], keys["row"]):
        out.append((method, row, method != last))
        last = method
    return out


def _base_rows(summary: pd.DataFrame) -> tuple[dict[tuple[str, str], str], list[str]]:
    """{(collection, method): base row label} and caption notes on how bases were chosen."""
    bases, notes = {}, []
    for (collection, method), sub in groups(summary, ["collection", "method"]):
        own: pd.DataFrame = sub.loc[sub["variant"] == method]
        cand = own if len(own) else sub
        if len(cand) == 1:
            bases[(collection, method)] = cand["row"].iloc[0]
            if not len(own):
                notes.append(f"{collection_name(collection)}: no {method} base run; deltas vs "
                             f"{cand['row'].iloc[0]}.")
            continue
        best = cand.sort_values("val_SumR", ascending=False, kind="stable").iloc[0]
        bases[(collection, method)] = best["row"]
        notes.append(f"{collection_name(collection)}: {len(cand)} configurations of {method}; "
                     f"the base row is the best by validation SumR ({best['row']}).")
    return bases, notes


def build_ablation(collected: Collected, metrics: Sequence[str] = TABLE_METRICS) -> AblationTable:
    """The ablation table of the module docstring from collected runs."""
    frame = add_row_keys(collected.frame)
    summary = summarise(frame, metrics)
    collections = sorted(summary["collection"].unique(), key=lambda c: (c not in COLLECTION_NAMES, c))
    synthetic = bool(frame["synthetic"].any())
    bases, notes = _base_rows(summary)
    warnings: list[str] = []
    test_rows: list[dict[str, Any]] = []
    unpaired: list[tuple[str, str, str]] = []
    rows: list[TableRow] = []
    by_key = {(r.collection, r.row): r for r in summary_lines(summary)}
    runs = {(c, row): [(int(s), collected.ranks[rid]) for s, rid in zip(sub["seed"], sub["run_id"])]
            for (c, row), sub in groups(frame, ["collection", "row"])}
    for method, row, starts in _ordered_rows(summary, set(bases.values())):
        tr = TableRow(row=row, method=method, display=display_name(row, method), group_start=starts)
        for c in collections:
            line = by_key.get((c, row))
            if line is None:
                continue
            base = bases[(c, method)]
            tr.is_base[c] = base == row
            tr.n[c] = int(line.n)
            tr.seeds[c] = tuple(line.seeds)
            base_line = by_key[(c, base)]
            tr.cells[c] = {}
            for m in metrics:
                mean, std = getattr(line, f"{m}_mean"), getattr(line, f"{m}_std")
                delta = None if base == row else mean - getattr(base_line, f"{m}_mean")
                tr.cells[c][m] = Cell(mean, std, delta)
            if base != row:
                try:
                    t = paired_test(runs[(c, row)], runs[(c, base)])
                except PairingError as exc:     # different seeds or queries: no test, no marker
                    unpaired.append((display_name(row, method), display_name(base, method), str(exc)))
                    test_rows.append({"collection": c, "row": row, "base": base, "test": "none",
                                      "pairing": "unpaired", "reason": str(exc)})
                    continue
                tr.tests[c] = t
                test_rows.append({"collection": c, "row": row, "base": base, "test": t.test,
                                  "pairing": t.pairing, "p_value": t.p_value, "n_pairs": t.n_pairs,
                                  "mean_rr_diff": t.mean_diff, "significant": t.significant,
                                  "reason": ""})
        rows.append(tr)
    # best per column (highest mean; every metric here is higher-is-better)
    for c in collections:
        for m in metrics:
            vals = [r.cells[c][m].mean for r in rows if c in r.cells and math.isfinite(r.cells[c][m].mean)]
            if not vals:
                continue
            top = max(vals)
            for r in rows:
                if c in r.cells and r.cells[c][m].mean == top:
                    r.cells[c][m].best = True
    # seeds that differ across rows of one collection
    for c in collections:
        seed_sets = {r.seeds[c] for r in rows if c in r.seeds}
        if len(seed_sets) > 1:
            shown = "; ".join(sorted({",".join(map(str, s)) for s in seed_sets})[:4])
            warnings.append(f"Warning: seeds differ across rows in {collection_name(c)} "
                            f"({shown}{'; ...' if len(seed_sets) > 4 else ''}); means cover "
                            "different seeds.")
    tests = [r.tests[c] for r in rows for c in r.tests]
    title = "Ablation: " + ", ".join(collection_name(c, synthetic) for c in collections)
    if collected.study:
        title += f" (study {collected.study})"
    parts = ["Test-set R@k (%) and SumR, mean ± std over seeds (n = seed count); "
             "(±x) is the difference to the base row (first row of each method group); "
             "bold = best in column.", describe_tests(tests, unpaired)]
    parts += notes
    parts.append(budget_sentence(frame))
    if any(r.method == "kdc-net" for r in rows):
        parts.append(f"{KDC_LABEL}: {KDC_NOTE}.")
    if synthetic:
        parts.append(SYNTHETIC_NOTE)
    parts += warnings
    return AblationTable(title=title, collections=collections, rows=rows, caption=" ".join(parts),
                         metrics=tuple(metrics), synthetic=synthetic, warnings=warnings,
                         tests=pd.DataFrame(test_rows))


# ------------------------------------------------------------------------------ rendering
def _num(value: float, digits: int = 1) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def cell_text(cell: Cell, marker: str = "", pm: str = " ± ") -> str:
    """``13.5 ± 0.4 (+1.2)*`` (no ± part with one seed, no delta on the base row)."""
    text = _num(cell.mean)
    if cell.std is not None and math.isfinite(cell.std):
        text += f"{pm}{_num(cell.std)}"
    if cell.delta is not None and math.isfinite(cell.delta):
        text += f" ({cell.delta:+.1f})"
    return text + marker


def _header(table: AblationTable) -> list[str]:
    multi = len(table.collections) > 1
    cols = ["Method"]
    for c in table.collections:
        prefix = f"{COLLECTION_NAMES.get(c, c)} " if multi else ""
        cols += [prefix + METRIC_LABELS[m] for m in table.metrics] + [prefix + "n"]
    return cols


def _body(table: AblationTable, bold, pm: str = " ± ") -> list[list[str]]:
    out = []
    for r in table.rows:
        line = [r.display]
        for c in table.collections:
            if c not in r.cells:
                line += ["–"] * (len(table.metrics) + 1)
                continue
            for m in table.metrics:
                marker = r.tests[c].marker if (m == "SumR" and c in r.tests) else ""
                text = cell_text(r.cells[c][m], marker, pm)
                line.append(bold(text) if r.cells[c][m].best else text)
            line.append(str(r.n[c]))
        out.append(line)
    return out


def to_markdown(table: AblationTable) -> str:
    """GitHub Markdown: a heading, the table, the caption below."""
    header = _header(table)
    lines = [f"### {table.title}", "",
             "| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for cells in _body(table, lambda t: f"**{t}**"):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", f"*{table.caption}*", ""]
    return "\n".join(lines)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$", "–": "--", "δ": r"$\delta$",
                  "λ": r"$\lambda$", "τ": r"$\tau$", "<": r"$<$", ">": r"$>$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: AblationTable, label: str = "tab:ablation") -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    k = len(table.metrics) + 1
    spec = "l" + ("r" * k) * len(table.collections)
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(table.title)}. {latex_escape(table.caption)}}}",
             rf"\label{{{label}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if len(table.collections) > 1:
        groups = " & ".join(rf"\multicolumn{{{k}}}{{c}}{{{latex_escape(COLLECTION_NAMES.get(c, c))}}}"
                            for c in table.collections)
        lines.append(f" & {groups} \\\\")
        lines.append(" ".join(rf"\cmidrule(lr){{{2 + i * k}-{1 + (i + 1) * k}}}"
                              for i in range(len(table.collections))))
    sub = ["Method"] + ([latex_escape(METRIC_LABELS[m]) for m in table.metrics] + ["$n$"]) \
        * len(table.collections)
    lines += [" & ".join(sub) + r" \\", r"\midrule"]
    body = _body(table, lambda t: t, pm=" ± ")
    for r, cells in zip(table.rows, body):
        if r.group_start and r is not table.rows[0]:
            lines.append(r"\midrule")
        rendered = [latex_escape(cells[0])]
        for i, text in enumerate(cells[1:]):
            ci, mi = divmod(i, k)
            c = table.collections[ci]
            esc = latex_escape(text)
            if mi < len(table.metrics) and c in r.cells and r.cells[c][table.metrics[mi]].best:
                esc = rf"\textbf{{{esc}}}"
            rendered.append(esc)
        lines.append(" & ".join(rendered) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def to_rich(table: AblationTable):
    """A ``rich.table.Table`` preview for the terminal."""
    from rich.markup import escape
    from rich.table import Table

    out = Table(title=table.title, caption=table.caption if len(table.caption) < 400 else None,
                show_lines=False)
    for i, name in enumerate(_header(table)):
        if i == 0:
            out.add_column(name, justify="left", min_width=24, max_width=56, overflow="fold")
        else:
            out.add_column(name, justify="right", min_width=len(name), no_wrap=True)
    for r, cells in zip(table.rows, _body(table, lambda t: "\0" + t)):
        out.add_row(*(f"[bold]{escape(t[1:])}[/bold]" if t.startswith("\0") else escape(t)
                      for t in cells), end_section=False)
    return out
