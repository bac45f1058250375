"""Seed statistics and paired significance tests on per-query ranks.

* **Rows.** A table row is one *configuration*: a variant plus the knob values (``param.*``
  columns of the frame) that differ between its runs; its runs are the seeds of that
  configuration. Mean and sample standard deviation (ddof = 1; none for one seed) over seeds.
* **Paired test** of a row A against its base row B on the reciprocal ranks rr = 1 / rank of
  the test queries (per-query AP with one relevant video, so the test compares mAP):

  - *paired by seed* when A and B ran the same seeds: pairs (seed s, query q),
    d_{s,q} = rr^A_{s,q} - rr^B_{s,q};
  - *pooled by query* otherwise: d_q = mean_s rr^A_{s,q} - mean_s rr^B_{s,q}.

  Test: scipy's Wilcoxon signed-rank test (two-sided; zero differences dropped, normal
  approximation with tie correction when ties occur) when at least ``MIN_WILCOXON`` pairs
  differ; otherwise a paired bootstrap over the pairs (two-sided, the bootstrap distribution of
  the mean difference shifted to mean zero). All differences zero (identical rankings): p = 1,
  no test needed. Both runs must rank the same queries in the same order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Protocol, Sequence, cast

import numpy as np
import pandas as pd
from scipy import stats as sps

from benchmark.errors import PRVRBenchError
from benchmark.evaluate import EvalResult

MIN_WILCOXON = 10          # fewer differing pairs: the normal approximation is poor -> bootstrap
N_BOOTSTRAP = 10_000
ZERO_TOL = 1e-12           # |difference| below this is a tie (float noise of seed means)
ALPHA = 0.05
ALPHA_STRONG = 0.01
TEST_NAMES = {
    "wilcoxon": "two-sided Wilcoxon signed-rank test on per-query reciprocal ranks",
    "bootstrap": "two-sided paired bootstrap (10,000 resamples) of the mean per-query "
                 "reciprocal-rank difference",
    "identical": "identical per-query ranks (no test needed)",
}


class PairingError(PRVRBenchError, ValueError):
    """Two rows cannot be paired: their runs rank different query sets."""


# ------------------------------------------------------------------------- frame access
# pandas annotates ``frame[key]`` as Series or DataFrame whatever the key, and a group key as
# Hashable; these say what a column name and a list of grouping columns give.
def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """The column ``name`` of ``frame``."""
    return cast(pd.Series, frame[name])


def columns(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """The columns ``names`` of ``frame``, in that order."""
    return cast(pd.DataFrame, frame[list(names)])


def groups(frame: pd.DataFrame, keys: Sequence[str], *,
           sort: bool = False) -> Iterator[tuple[tuple[Any, ...], pd.DataFrame]]:
    """``frame.groupby(keys, sort=sort)``: each group's values of ``keys`` and its rows."""
    for key, sub in frame.groupby(list(keys), sort=sort):
        yield cast(tuple[Any, ...], key), sub


# ----------------------------------------------------------------------------------- rows
def _fmt_value(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.3g}"
    return str(value)


def short_param(key: str) -> str:
    """``method.kd_decay.kind`` -> ``kd_decay.kind``: the method prefix adds nothing."""
    return key[len("method."):] if key.startswith("method.") else key


def add_row_keys(frame: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``frame`` with ``row`` (configuration label) and ``row_params`` (dict) columns.

    The label is the variant, plus ``[k=v, ...]`` of the knobs that vary within that variant's
    runs (a sweep's trials), plus the trial number when a row is one sweep trial.
    """
    frame = frame.copy()
    pcols = [c for c in frame.columns if c.startswith("param.")]
    labels = pd.Series("", index=frame.index, dtype=object)
    params = pd.Series([{} for _ in range(len(frame))], index=frame.index, dtype=object)
    for key, idx in frame.groupby(["collection", "variant"]).groups.items():
        _, variant = cast(tuple[str, str], key)
        sub = frame.loc[idx]
        varying = [c for c in pcols if sub[c].astype(str).nunique(dropna=False) > 1]
        for i in idx:
            values = {c[len("param."):]: frame.at[i, c] for c in varying
                      if not (isinstance(frame.at[i, c], float) and math.isnan(frame.at[i, c]))}
            params.at[i] = values
            if values:
                body = ", ".join(f"{short_param(k)}={_fmt_value(v)}" for k, v in sorted(values.items()))
                labels.at[i] = f"{variant} [{body}]"
            else:
                labels.at[i] = variant
    frame["row"] = labels
    frame["row_params"] = params
    return frame


@dataclass(frozen=True)
class SeedStats:
    mean: float
    std: float          # NaN with one seed
    n: int


def seed_stats(values: Sequence[float] | np.ndarray) -> SeedStats:
    """Mean and sample std (ddof = 1) over seeds; std is NaN for a single seed."""
    arr = np.asarray(values, dtype=np.float64)
    n = int(arr.size)
    if n == 0:
        return SeedStats(math.nan, math.nan, 0)
    return SeedStats(float(arr.mean()), float(arr.std(ddof=1)) if n > 1 else math.nan, n)


def summarise(frame: pd.DataFrame, metrics: Sequence[str], prefix: str = "test/") -> pd.DataFrame:
    """One line per (collection, row): method, variant, n, seeds, ``<m>_mean``, ``<m>_std``.

    ``frame`` needs the ``row`` column of :func:`add_row_keys`.
    """
    out = []
    for (collection, row), sub in groups(frame, ["collection", "row"]):
        line = {"collection": collection, "row": row, "method": sub["method"].iloc[0],
                "variant": sub["variant"].iloc[0], "n": len(sub),
                "seeds": tuple(sorted(int(s) for s in sub["seed"])),
                "run_ids": tuple(sub["run_id"]), "synthetic": bool(sub["synthetic"].any()),
                "reconstruction": bool(sub["reconstruction"].any()),
                "row_params": sub["row_params"].iloc[0],
                "trial": float(column(sub, "trial").min()) if "trial" in sub else math.nan,
                "val_SumR": float(column(sub, "val/SumR").mean())}
        for m in metrics:
            s = seed_stats(sub[f"{prefix}{m}"].to_numpy())
            line[f"{m}_mean"], line[f"{m}_std"] = s.mean, s.std
        out.append(line)
    return pd.DataFrame(out)


class SummaryLine(Protocol):
    """One line of :func:`summarise` as ``DataFrame.itertuples(index=False)`` gives it; the
    metric columns ``<m>_mean`` and ``<m>_std`` are read with ``getattr``."""

    collection: str
    row: str
    method: str
    variant: str
    n: int
    seeds: tuple[int, ...]
    SumR_mean: float


def summary_lines(summary: pd.DataFrame) -> Iterable[SummaryLine]:
    """The lines of a :func:`summarise` frame, in order (its column names are identifiers)."""
    return cast(Iterable[SummaryLine], summary.itertuples(index=False))


# ----------------------------------------------------------------------------------- tests
@dataclass(frozen=True)
class PairedTest:
    """Outcome of one paired comparison (A vs base B)."""

    test: str            # "wilcoxon" | "bootstrap" | "identical"
    pairing: str         # "seed" | "query"
    p_value: float
    n_pairs: int
    mean_diff: float     # mean of rr^A - rr^B (positive: A ranks its videos higher)

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    @property
    def marker(self) -> str:
        return significance_marker(self.p_value)


def significance_marker(p: float) -> str:
    """``**`` for p < 0.01, ``*`` for p < 0.05, else empty."""
    if not math.isfinite(p):
        return ""
    return "**" if p < ALPHA_STRONG else "*" if p < ALPHA else ""


def bootstrap_p(diff: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = 0,
                block: int = 500) -> float:
    """Two-sided paired bootstrap p-value of mean(diff) = 0.

    p = (1 + #{b : |mean*_b - mean| >= |mean|}) / (1 + n_boot), resampling pairs with
    replacement; blocks of ``block`` resamples at a time bound memory to block × n indices.

    Shapes: diff (n,) float.
    """
    diff = np.asarray(diff, dtype=np.float64)
    n = diff.size
    observed = abs(float(diff.mean()))
    if observed == 0.0:
        return 1.0
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_boot, block):                      # loop over resample blocks
        k = min(block, n_boot - start)
        idx = rng.integers(0, n, size=(k, n))                  # (k, n)
        means = diff[idx].mean(axis=1)                         # (k,)
        hits += int(np.count_nonzero(np.abs(means - diff.mean()) >= observed))
    return (1 + hits) / (1 + n_boot)


def compare_differences(diff: np.ndarray, pairing: str) -> PairedTest:
    """Wilcoxon, bootstrap or "identical" on a vector of paired differences (module docstring)."""
    diff = np.asarray(diff, dtype=np.float64)
    # averaging equal reciprocal ranks over different seed counts leaves ~1e-17 noise
    diff = np.where(np.abs(diff) < ZERO_TOL, 0.0, diff)
    nonzero = int(np.count_nonzero(diff))
    mean = float(diff.mean()) if diff.size else math.nan
    if nonzero == 0:
        return PairedTest("identical", pairing, 1.0, int(diff.size), 0.0)
    if nonzero >= MIN_WILCOXON:
        res = sps.wilcoxon(diff, zero_method="wilcox", alternative="two-sided")
        # scipy annotates the result as a bare tuple subclass; ``pvalue`` is its documented field
        p_value = float(res.pvalue)  # pyright: ignore[reportAttributeAccessIssue]
        return PairedTest("wilcoxon", pairing, p_value, int(diff.size), mean)
    return PairedTest("bootstrap", pairing, bootstrap_p(diff), int(diff.size), mean)


def _rr_matrix(runs: Sequence[EvalResult], ids: np.ndarray) -> np.ndarray:
    """(S, Nq) reciprocal ranks of S runs, after checking they rank the same queries."""
    for r in runs:
        if r.query_ids.shape != ids.shape or not np.array_equal(r.query_ids, ids):
            raise PairingError("runs rank different test queries (ids or order differ); "
                               "they cannot be paired")
    return np.stack([1.0 / r.rank.astype(np.float64) for r in runs])    # (S, Nq)


def paired_test(a: Sequence[tuple[int, EvalResult]],
                b: Sequence[tuple[int, EvalResult]]) -> PairedTest:
    """Row A (``[(seed, ranks), ...]``) against base row B; pairing rule in the docstring."""
    if not a or not b:
        raise PairingError("a paired test needs at least one run on each side")
    ids = a[0][1].query_ids
    seeds_a = sorted(s for s, _ in a)
    seeds_b = sorted(s for s, _ in b)
    if seeds_a == seeds_b and len(set(seeds_a)) == len(seeds_a):
        ra = _rr_matrix([r for _, r in sorted(a, key=lambda x: x[0])], ids)   # (S, Nq)
        rb = _rr_matrix([r for _, r in sorted(b, key=lambda x: x[0])], ids)   # (S, Nq)
        return compare_differences((ra - rb).reshape(-1), "seed")
    ra = _rr_matrix([r for _, r in a], ids).mean(axis=0)                      # (Nq,)
    rb = _rr_matrix([r for _, r in b], ids).mean(axis=0)                      # (Nq,)
    return compare_differences(ra - rb, "query")


def describe_tests(tests: Sequence[PairedTest]) -> str:
    """Caption sentence naming every test and pairing used."""
    used = sorted({t.test for t in tests})
    if not used:
        return "No row has a base row to test against."
    pairings = sorted({t.pairing for t in tests if t.test != "identical"})
    pair_txt = {"seed": "pairs (seed, query) when both rows ran the same seeds",
                "query": "per-query reciprocal ranks averaged over seeds when the seeds differ"}
    parts = "; ".join(TEST_NAMES[u] for u in used)
    how = (" Pairing: " + "; ".join(pair_txt[p] for p in pairings) + ".") if pairings else ""
    return (f"Significance vs the base row: {parts}; * p < {ALPHA}, ** p < {ALPHA_STRONG}."
            + how)
