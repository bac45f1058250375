"""Seed statistics and paired significance tests on per-query ranks.

* **Rows.** A table row is one *configuration*: a variant plus the knob values (``param.*``
  columns of the frame) that differ between its runs; its runs are the seeds of that
  configuration. Mean and sample standard deviation (ddof = 1; none for one seed) over seeds.
* **Paired test** of a row A against its base row B on the reciprocal ranks rr = 1 / rank of
  the test queries (per-query AP with one relevant video, so the test compares mAP). It is
  run only when the comparison is paired: A and B ran the same seeds (one run per seed) and
  every run ranks the same queries in the same order. The pairs are (seed s, query q),
  d_{s,q} = rr^A_{s,q} - rr^B_{s,q}. Anything else (different seeds, as in a sweep whose
  trial seed follows the trial number; different query sets) raises ``PairingError``: it gets
  no p-value and no marker, and the table's caption says why.

  Test: scipy's Wilcoxon signed-rank test (two-sided; zero differences dropped, normal
  approximation with tie correction when ties occur) when at least ``MIN_WILCOXON`` pairs
  differ; otherwise a paired bootstrap over the pairs (two-sided, the bootstrap distribution of
  the mean difference shifted to mean zero). All differences zero (identical rankings): p = 1,
  no test needed.
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
    """Two rows cannot be compared pairwise: different seeds, or different query sets."""


class SeedMismatchError(PairingError):
    """The two rows ran different seeds (or one seed twice), so no (seed, query) pairs exist."""


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
    runs (a sweep's trials), plus the budget (reports/budget.py) when that varies too: runs of
    different budgets are never one configuration.
    """
    frame = frame.copy()
    pcols = [c for c in frame.columns if c.startswith("param.")]
    labels = pd.Series("", index=frame.index, dtype=object)
    params = pd.Series([{} for _ in range(len(frame))], index=frame.index, dtype=object)
    for key, idx in frame.groupby(["collection", "variant"]).groups.items():
        _, variant = cast(tuple[str, str], key)
        sub = frame.loc[idx]
        varying = [c for c in pcols if sub[c].astype(str).nunique(dropna=False) > 1]
        budget_varies = "budget" in sub and sub["budget"].nunique() > 1
        for i in idx:
            values = {c[len("param."):]: frame.at[i, c] for c in varying
                      if not (isinstance(frame.at[i, c], float) and math.isnan(frame.at[i, c]))}
            params.at[i] = values
            parts = [", ".join(f"{short_param(k)}={_fmt_value(v)}" for k, v in sorted(values.items()))]
            if budget_varies:
                parts.append(str(frame.at[i, "budget"]))
            body = "; ".join(p for p in parts if p)
            labels.at[i] = f"{variant} [{body}]" if body else variant
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


def seed_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> float:
    """Half-width of the Student-t interval of the mean over seeds,
    t_{(1+level)/2, n-1} · s / sqrt(n) (s the sample std); NaN for fewer than two seeds."""
    arr = np.asarray(values, dtype=np.float64)
    n = int(arr.size)
    if n < 2:
        return math.nan
    return float(sps.t.ppf((1.0 + level) / 2.0, n - 1) * arr.std(ddof=1) / math.sqrt(n))


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
    pairing: str         # "seed": the pairs are (seed, query)
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


def _seed_list(side: Sequence[tuple[int, EvalResult]]) -> list[int]:
    return sorted(s for s, _ in side)


def paired_test(a: Sequence[tuple[int, EvalResult]],
                b: Sequence[tuple[int, EvalResult]]) -> PairedTest:
    """Row A (``[(seed, ranks), ...]``) against base row B, paired by (seed, query).

    Raises ``SeedMismatchError`` unless both rows ran the same seeds, each once, and
    ``PairingError`` when their runs rank different queries (module docstring)."""
    if not a or not b:
        raise PairingError("a paired test needs at least one run on each side")
    seeds_a, seeds_b = _seed_list(a), _seed_list(b)
    if seeds_a != seeds_b or len(set(seeds_a)) != len(seeds_a):
        raise SeedMismatchError(f"seeds {_seed_text(seeds_a)} vs {_seed_text(seeds_b)}")
    ids = a[0][1].query_ids
    ra = _rr_matrix([r for _, r in sorted(a, key=lambda x: x[0])], ids)   # (S, Nq)
    rb = _rr_matrix([r for _, r in sorted(b, key=lambda x: x[0])], ids)   # (S, Nq)
    return compare_differences((ra - rb).reshape(-1), "seed")


def _seed_text(seeds: Sequence[int]) -> str:
    return "{" + ", ".join(map(str, seeds)) + "}"


def describe_tests(tests: Sequence[PairedTest], unpaired: Sequence[tuple[str, str, str]] = ()) -> str:
    """Caption sentences naming every test used, and why ``unpaired`` rows (row, base, reason)
    carry no marker."""
    used = sorted({t.test for t in tests})
    parts = []
    if used:
        parts.append(f"Significance vs the base row: {'; '.join(TEST_NAMES[u] for u in used)}; "
                     f"pairs (seed, query), both rows having run the same seeds; "
                     f"* p < {ALPHA}, ** p < {ALPHA_STRONG}.")
    if unpaired:
        shown = "; ".join(f"{row} vs {base}: {why}" for row, base, why in unpaired[:4])
        more = f"; and {len(unpaired) - 4} more" if len(unpaired) > 4 else ""
        parts.append(f"No significance marker on {len(unpaired)} row(s) whose comparison with "
                     f"the base row is not paired ({shown}{more}): a test needs the same seeds "
                     "and the same queries on both sides.")
    if not parts:
        return "No row has a base row to test against."
    return " ".join(parts)
