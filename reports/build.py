"""The default report: select runs -> tables and figures -> ``<out>/index.md`` -> MLflow.

Layout of ``out`` (default ``runs/report/``)::

    index.md                  links every table and figure below, with the selection and notes
    runs.csv                  the tidy frame (one row per run)
    tables/ablation.{md,tex}  ablation table (reports/tables.py); tables/tests.csv its p-values
    tables/mv_<c>.md          R@k per M/V bin (reports/mv.py); tables/mv.csv all bins
    tables/published_<c>.md   published vs reproduced (real data only, reports/published.py)
    tables/sweep.md           best trials and importances (reports/sensitivity.py)
    figures/*.png, *.pdf      M/V bars, sensitivity curves and heatmaps (reports/plots.py)

The folder is logged under the artifact path ``report`` of the study's parent run (when the
selection has one), through ``benchmark.tracking``; the parent's status is left as it is.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from benchmark import stores, tracking
from reports import mv as mvmod
from reports import plots, published, sensitivity, tables
from reports.budget import (
    BUDGET_COLUMNS,
    BUDGET_PARAMS,
    MixedBudgetError,
    budget_sentence,
    single_budget,
)
from reports.collect import Collected, Selection, collect, numbers_if_all_numbers
from reports.stats import add_row_keys, column, columns, summarise

# sweep figures (docs/methods.md §9.3.6, §13): knob pairs drawn as heatmaps
HEATMAP_PAIRS = (("method.krd.delta", "method.krd.lam"),
                 ("method.kd_decay.kind", "method.kd_temperature"))
CURVE_FIRST = ("method.krd.window",)          # the KRD window-size curve comes first
MAX_CURVES = 8


@dataclass
class ReportResult:
    out: Path
    index: Path
    files: list[Path]
    ablation: tables.AblationTable
    collected: Collected
    logged_run_id: str | None = None
    notes: list[str] = field(default_factory=list)


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def _synthetic_tag(synthetic: bool) -> str:
    return " (synthetic data)" if synthetic else ""


def _mv_caption(sub: pd.DataFrame, synth: bool, has_kdc: bool) -> str:
    return ("Test-set R@k (%) and SumR per M/V bin, mean over seeds, with a 95 % bootstrap "
            f"interval over the bin's queries ({mvmod.N_BOOTSTRAP:,} resamples, seed "
            f"{mvmod.BOOTSTRAP_SEED}; a query's seeds resampled together); n = queries in the "
            "bin. " + budget_sentence(sub)) \
        + (f" {tables.KDC_LABEL}: {tables.KDC_NOTE}." if has_kdc else "") \
        + (f" {tables.SYNTHETIC_NOTE}" if synth else "")


def _mv_section(collected: Collected, frame: pd.DataFrame, out: Path,
                asked_edges: Sequence[float] | None, files: list[Path], index: list[str],
                notes: list[str], row_order: Sequence[str] = ()) -> None:
    edges, source = mvmod.report_edges(frame, asked_edges)
    mvf, mv_notes = mvmod.mv_frame(collected, edges)
    notes += mv_notes
    if mvf.empty:
        index += ["## R@k by moment-to-video ratio", "", "M/V breakdown absent: no selected run "
                  "holds M/V values.", ""]
        return
    mvf.to_csv(out / "tables" / "mv.csv", index=False)
    files.append(out / "tables" / "mv.csv")
    index += ["## R@k by moment-to-video ratio", "",
              f"Edges {', '.join(f'{e:g}' for e in edges)} (right-closed bins; "
              f"docs/methods.md §11): {source}; recomputed from the stored per-query ranks. "
              "[all bins (CSV)](tables/mv.csv)", ""]
    for c in sorted(mvf["collection"].unique()):
        in_c = frame.loc[frame["collection"] == c]
        synth = bool(mvf.loc[mvf["collection"] == c, "synthetic"].any())
        has_kdc = bool((mvf.loc[mvf["collection"] == c, "method"] == "kdc-net").any())
        kdc_line = f"\n{tables.KDC_LABEL}: {tables.KDC_NOTE}" if has_kdc else ""
        title = f"R@k by M/V bin: {tables.collection_name(c, synth)}"
        caption = _mv_caption(in_c, synth, has_kdc)
        md = out / "tables" / f"mv_{c}.md"
        md.write_text(mvmod.mv_markdown(mvf, c, title, caption, tables.display_name))
        figs = plots.mv_figure(mvf, c, out / "figures" / f"mv_{c}", title + kdc_line,
                               tables.display_name, row_order=row_order)
        files += [md, *figs]
        index += [f"### {title}", "", f"[table](tables/mv_{c}.md) · "
                  f"[PDF]({_rel(figs[1], out)})", "", f"![{title}]({_rel(figs[0], out)})", "",
                  f"*{caption}*", ""]
        # equal-count bins (methods.md §11 (a)) from this collection's M/V values
        run = in_c["run_id"]
        mv_values = next((collected.ranks[r].mv for r in run if collected.ranks[r].mv is not None), None)
        if mv_values is not None:
            try:
                q_edges = mvmod.quantile_edges(mv_values[mv_values > 0])
            except ValueError:
                continue
            sub = Collected(frame=collected.frame.loc[collected.frame["collection"] == c],
                            ranks=collected.ranks, parent=collected.parent, study=collected.study,
                            tracking_uri=collected.tracking_uri)
            qf, _ = mvmod.mv_frame(sub, q_edges)
            qtitle = f"R@k by M/V quintile: {tables.collection_name(c, synth)}"
            qfigs = plots.mv_figure(qf, c, out / "figures" / f"mv_quintiles_{c}", qtitle + kdc_line,
                                    tables.display_name, row_order=row_order)
            files += qfigs
            index += [f"Equal-count bins (edges {', '.join(f'{e:.3g}' for e in q_edges)}): "
                      f"[PDF]({_rel(qfigs[1], out)})", "", f"![{qtitle}]({_rel(qfigs[0], out)})", "",
                      f"*{caption}*", ""]


def _open_study(collected: Collected, storage: str | None):
    """(study, url, None), or (None, url, message) when the selection has no study or it
    cannot be opened (the report goes on without the Optuna parts)."""
    if collected.parent is None or not collected.study:
        return None, None, None
    url = sensitivity.storage_url(storage, collected.parent)
    try:
        return sensitivity.load_study(collected.study, url), url, None
    except sensitivity.StudyLoadError as exc:
        return None, url, str(exc)


def with_trial_params(frame: pd.DataFrame, params: dict[str, dict]) -> pd.DataFrame:
    """Replace the frame's ``param.*`` columns by each run's *active* Optuna trial params
    (runs of the study only; others keep their MLflow values)."""
    mine = [rid for rid in frame["run_id"] if rid in params]
    if not mine:
        return frame
    keys = sorted({k for rid in mine for k in params[rid]})
    out = frame.drop(columns=[c for c in frame.columns if c.startswith("param.")])
    for k in keys:
        values = [params.get(rid, {}).get(k) for rid in frame["run_id"]]
        out[f"param.{k}"] = numbers_if_all_numbers(pd.Series(values, index=frame.index, dtype=object))
    return out


SWEEP_CAPTION = (
    "Each point is one configuration (a trial): validation SumR (the sweep objective) at its "
    "selected epoch. Where a configuration ran several seeds, the point is their mean, the bar "
    "its 95 % Student-t interval and grey dots its seeds; a single run has no bar. Points "
    "differ in the other knobs too (colour, or named under the title), so they are never "
    "joined by a line. Log-scaled knobs (Optuna distribution log=True) get a log axis and log "
    "bins. Heatmap cells: mean over the runs in the cell (other knobs vary inside it), n = "
    "runs; hatched cells hold no run.")


def _sweep_section(collected: Collected, frame: pd.DataFrame, out: Path, opened: tuple,
                   files: list[Path], index: list[str], notes: list[str]) -> None:
    study, url, study_error = opened
    synth = collected.synthetic
    knobs = [c for c in frame.columns if c.startswith("param.")]
    budget, refusal = _sweep_budget(frame, knobs)
    if refusal is not None:
        notes.append(refusal)
    if collected.parent is not None and collected.study:
        index += [f"## Sweep: {collected.study}{_synthetic_tag(synth)}", ""]
        if refusal is not None:
            index += [f"**{refusal}**", ""]
        elif study is None:
            index += [f"Optuna study not available: {study_error}", ""]
            notes.append(str(study_error))
        else:
            rep = sensitivity.study_report(study)
            md = out / "tables" / "sweep.md"
            md.write_text(sensitivity.to_markdown(
                rep, f"Best trials: {collected.study}{_synthetic_tag(synth)}",
                f"Optuna storage {stores.redact(url)}; value = best validation SumR of the trial. "
                f"{budget}" + (f" {tables.SYNTHETIC_NOTE}" if synth else "")))
            files.append(md)
            index += ["[best trials and parameter importances](tables/sweep.md)", ""]
            if rep.importance_message:
                index += [rep.importance_message, ""]
    if not knobs:
        return
    if collected.parent is None:
        index += [f"## Swept knobs{_synthetic_tag(synth)}", ""]
        if refusal is not None:
            index += [f"**{refusal}**", ""]
    if budget is None:
        return
    log_knobs = frozenset(f"param.{k}" for k in sensitivity.log_scaled_params(study)) \
        if study is not None else frozenset()
    title_sfx = " (synthetic)" if synth else ""
    drawn: list[Path] = []
    for a, b in HEATMAP_PAIRS:
        pa, pb = f"param.{a}", f"param.{b}"
        if pa in frame and pb in frame and len(columns(frame, [pa, pb]).dropna()) >= 2:
            name = f"heatmap_{a.split('.')[-1]}_{b.split('.')[-1]}"
            drawn += plots.sensitivity_heatmap(frame, pa, pb, out / "figures" / name,
                                               f"Validation SumR: {a[7:]} × {b[7:]}{title_sfx}",
                                               log_knobs=log_knobs)
    order = sorted(knobs, key=lambda k: (k[len("param."):] not in CURVE_FIRST, k))
    for k in order[:MAX_CURVES]:
        if column(frame, k).nunique(dropna=True) < 2:
            continue
        name = "curve_" + k[len("param."):].replace(".", "_")
        knob = k[len("param.method."):] if k.startswith("param.method.") else k[6:]
        drawn += plots.sensitivity_points(frame, k, out / "figures" / name,
                                          f"Sensitivity: {knob}{title_sfx}",
                                          log=k in log_knobs, log_knobs=log_knobs)
    files += drawn
    caption = f"{SWEEP_CAPTION} {budget}"
    if synth:
        caption += f" {tables.SYNTHETIC_NOTE}"
    for png in drawn[::2]:
        index += [f"![{png.stem}]({_rel(png, out)}) ([PDF]({_rel(png.with_suffix('.pdf'), out)}))", ""]
    if drawn:
        index += [f"*{caption}*", ""]


def _sweep_budget(frame: pd.DataFrame, knobs: Sequence[str]) -> tuple[str | None, str | None]:
    """(budget sentence of the sweep's table and figures, None), or (None, the refusal) when
    its runs ran different budgets: trials would then differ in more than their knobs (a
    budget field that is itself a swept knob may vary)."""
    swept = tuple(c for c, p in zip(BUDGET_COLUMNS, BUDGET_PARAMS) if f"param.{p}" in knobs)
    try:
        single_budget(frame, "Sweep table and figures", allowed=swept)
    except MixedBudgetError as exc:
        return None, str(exc)
    return budget_sentence(frame), None


def _published_section(collected: Collected, frame: pd.DataFrame, out: Path,
                       files: list[Path], index: list[str]) -> None:
    real: pd.DataFrame = frame.loc[~frame["synthetic"]]
    index += ["## Published results", ""]
    if real.empty:
        index += ["Omitted: every selected run is on synthetic data, and synthetic results are "
                  "never placed next to published numbers.", ""]
        return
    summary = summarise(real, published.PUBLISHED_METRICS)
    for c in sorted(real["collection"].unique()):
        comp = published.comparison(summary, c)
        if comp.empty:
            continue
        path = out / "tables" / f"published_{c}.md"
        path.write_text(published.comparison_markdown(
            comp, f"Published vs reproduced: {tables.collection_name(c)}"))
        files.append(path)
        index += [f"- [{tables.collection_name(c)}](tables/published_{c}.md)"]
    index.append("")


def build_report(sel: Selection, out: str | Path | None = None, *,
                 mv_edges: Sequence[float] | None = None, storage: str | None = None,
                 log_to_mlflow: bool = True) -> ReportResult:
    """Write the report folder for ``sel`` (layout in the module docstring); ``mv_edges`` None:
    the M/V edges the runs recorded (``reports.mv.report_edges``)."""
    out = Path(out) if out is not None else stores.runs_dir() / "report"
    with tempfile.TemporaryDirectory(prefix="prvr-report-") as cache:
        collected = collect(sel, cache)
    study, study_url, study_error = _open_study(collected, storage)
    if study is not None:
        collected.frame = with_trial_params(collected.frame, sensitivity.trial_params(study))
    for sub in ("tables", "figures"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    notes = list(collected.notes)
    frame = add_row_keys(collected.frame)
    frame.drop(columns=["row_params"]).to_csv(out / "runs.csv", index=False)
    files.append(out / "runs.csv")

    # -- ablation table ---------------------------------------------------------------------
    table = tables.build_ablation(collected)
    (out / "tables" / "ablation.md").write_text(tables.to_markdown(table))
    (out / "tables" / "ablation.tex").write_text(tables.to_latex(table))
    table.tests.to_csv(out / "tables" / "tests.csv", index=False)
    files += [out / "tables" / f for f in ("ablation.md", "ablation.tex", "tests.csv")]

    synth = collected.synthetic
    title = "prvr-bench report" + (f": {collected.study}" if collected.study else "") \
        + _synthetic_tag(synth)
    n_runs = len(frame)
    index = [f"# {title}", ""]
    if synth:
        index += [f"> **Synthetic data.** {tables.SYNTHETIC_NOTE}", ""]
    index += [f"- MLflow store: `{stores.redact(sel.tracking_uri)}`",
              "- selection: " + (f"study `{collected.study}` (parent run "
                                  f"`{collected.parent['run_id']}`)" if collected.parent
                                  else "all finished runs matching the filters"),
              f"- runs: {n_runs} in {frame['collection'].nunique()} collection(s), "
              f"{frame['row'].nunique()} configuration(s); [runs.csv](runs.csv)", ""]
    index += ["## Ablation table", "", "[Markdown](tables/ablation.md) · "
              "[LaTeX (booktabs)](tables/ablation.tex) · [paired tests (CSV)](tables/tests.csv)",
              "", tables.to_markdown(table).split("\n", 2)[2], ""]

    _mv_section(collected, frame, out, mv_edges, files, index, notes, [r.row for r in table.rows])
    _sweep_section(collected, frame, out, (study, study_url, study_error), files, index, notes)
    _published_section(collected, frame, out, files, index)
    if notes:
        index += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    index_path = out / "index.md"
    index_path.write_text("\n".join(index))
    files.append(index_path)

    logged = None
    if log_to_mlflow and collected.parent is not None:
        parent = collected.parent
        tracker = tracking.MLflowRunTracker(sel.tracking_uri, parent["run_id"], parent["experiment_id"])
        tracker.log_artifact(out, "report")
        logged = parent["run_id"]
    return ReportResult(out=out, index=index_path, files=files, ablation=table,
                        collected=collected, logged_run_id=logged, notes=notes)

