"""THE evaluator: one for validation, test, sweeps, benchmarks and reports (docs/architecture.md §4).

``evaluate`` ranks a ready score matrix (or several named ones); ``evaluate_method`` builds the
scores from a method and a split, one query block at a time, and ranks each block at once. Both
return an ``EvalResult`` that keeps the per-query ranks, tie counts and APs: every mean, every
M/V bin and every paired test is a view of those arrays, so nothing has to be re-run to re-bin.

Metrics (docs/methods.md §1.5), for ranks r_i of Nq queries:
* ``R1 R5 R10 R100``: 100 * mean(r_i <= K), in percent;
* ``SumR`` = R1 + R5 + R10 + R100, unrounded (rounding happens only when rendering);
* ``MedR`` = median(r), ``MeanR`` = mean(r);
* ``mAP`` = mean(AP_i) in [0, 1]; with one relevant video AP_i = 1 / r_i, so mAP = MRR;
* ``tied_queries`` = #{i : ties_i > 0}, the queries whose rank a tie-break could change
  (ranks are pessimistic, see ``benchmark/ranks.py``); ``n_queries``.

Memory: ``evaluate`` materialises one (query_chunk, Nv) block per score key at a time, never an
Nq x Nv boolean; ``evaluate_method`` adds one (query_chunk, video_chunk) worth of the method's
own intermediates. ``evaluate_method_with_scores`` runs the same scoring and also keeps every
score matrix (Nq x Nv per key, on the host), for exporting scores.

``python -m benchmark.evaluate`` evaluates a saved checkpoint; its code is in
``benchmark/evaluate_cli.py`` (this module only hands over to it when run as a script).
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from benchmark.errors import PRVRBenchError
from benchmark.mv import assign_bins, bin_labels
from benchmark.ranks import multi_positive_block, rank_block

if TYPE_CHECKING:        # annotations only: reading results must not import the HDF5 data layer
    from benchmark.data.split import SplitData
    from benchmark.interface import Encoding, PRVRMethod

RECALL_KS = (1, 5, 10, 100)
METRIC_NAMES = ("R1", "R5", "R10", "R100", "SumR", "MedR", "MeanR", "mAP", "tied_queries",
                "n_queries")
PRIMARY_KEY = "score"
_FORMAT = "prvr-bench.eval-result/1"


class EvalInputError(PRVRBenchError, ValueError):
    """Inputs of the evaluator do not fit together (shapes, indices, keys)."""


class MVAbsentError(PRVRBenchError, ValueError):
    """``by_mv`` was asked for but the result holds no M/V values."""


# ----------------------------------------------------------------------------------------------
# Per-query results and the metrics computed from them
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)   # numpy fields: compare arrays explicitly
class KeyRanks:
    """Per-query results of one score key.

    Shapes: rank (Nq,) int64 >= 1; ties (Nq,) int64 >= 0; ap (Nq,) float64 in (0, 1].
    """

    rank: np.ndarray
    ties: np.ndarray
    ap: np.ndarray


def metrics_from_ranks(rank: np.ndarray, ties: np.ndarray, ap: np.ndarray) -> dict[str, float]:
    """The metric dictionary of the module docstring for any subset of queries.

    With zero queries every metric is NaN, ``tied_queries`` and ``n_queries`` are 0.
    """
    n = int(rank.shape[0])
    if n == 0:
        out: dict[str, float] = {name: math.nan for name in METRIC_NAMES}
        out["tied_queries"] = 0
        out["n_queries"] = 0
        return out
    out = {f"R{k}": 100.0 * float(np.mean(rank <= k)) for k in RECALL_KS}
    out["SumR"] = sum(out[f"R{k}"] for k in RECALL_KS)
    out["MedR"] = float(np.median(rank))
    out["MeanR"] = float(np.mean(rank))
    out["mAP"] = float(np.mean(ap))
    out["tied_queries"] = int(np.count_nonzero(ties > 0))
    out["n_queries"] = n
    return out


@dataclass(frozen=True, eq=False)
class EvalResult:
    """Per-query ranks of every score key, with query ids, M/V and provenance.

    ``per_key[key]`` holds the ``KeyRanks`` of one score matrix (``result[key]`` too);
    ``rank``/``ties``/``ap`` are shortcuts for the primary key ("score" when present).
    ``relevance_mode`` is "single" (one relevant video per query) or "multi" (dense labels).

    Shapes: query_ids (Nq,) str; mv (Nq,) float64 or None.
    """

    per_key: Mapping[str, KeyRanks]
    query_ids: np.ndarray
    mv: np.ndarray | None = None
    synthetic: bool = False
    relevance_mode: str = "single"

    def __post_init__(self) -> None:
        if not self.per_key:
            raise EvalInputError("an EvalResult needs at least one score key")
        if self.relevance_mode not in ("single", "multi"):
            raise EvalInputError(f"relevance_mode must be 'single' or 'multi', "
                                 f"got {self.relevance_mode!r}")
        n = len(self.query_ids)
        for key, ranks in self.per_key.items():
            for name in ("rank", "ties", "ap"):
                if getattr(ranks, name).shape != (n,):
                    raise EvalInputError(f"score key {key!r}: {name} has shape "
                                         f"{getattr(ranks, name).shape}, expected ({n},)")
        if self.mv is not None and np.shape(self.mv) != (n,):
            raise EvalInputError(f"mv has shape {np.shape(self.mv)}, expected ({n},)")

    # -- access --------------------------------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        return list(self.per_key)

    @property
    def primary_key(self) -> str:
        return PRIMARY_KEY if PRIMARY_KEY in self.per_key else next(iter(self.per_key))

    def __getitem__(self, key: str) -> KeyRanks:
        try:
            return self.per_key[key]
        except KeyError:
            raise KeyError(f"no score key {key!r} in this result; keys: {self.keys}") from None

    @property
    def rank(self) -> np.ndarray:
        return self[self.primary_key].rank

    @property
    def ties(self) -> np.ndarray:
        return self[self.primary_key].ties

    @property
    def ap(self) -> np.ndarray:
        return self[self.primary_key].ap

    @property
    def n_queries(self) -> int:
        return len(self.query_ids)

    @property
    def has_mv(self) -> bool:
        return self.mv is not None

    # -- views ---------------------------------------------------------------------------------
    def metrics(self, key: str | None = None) -> dict[str, float]:
        """Metrics of one score key (default: the primary key, "score")."""
        ranks = self[key or self.primary_key]
        return metrics_from_ranks(ranks.rank, ranks.ties, ranks.ap)

    def by_mv(self, edges: Sequence[float] | None = None,
              key: str | None = None) -> dict[str, dict[str, float]]:
        """Metrics per right-closed M/V bin (``benchmark/mv.py``; default edges 0, 0.2, ..., 1).

        Every bin is present, in edge order; an empty bin has ``n_queries`` 0 and NaN metrics.
        Queries in no bin (M/V = 0) are left out.
        """
        if self.mv is None:
            raise MVAbsentError("M/V breakdown absent: no moments table was loaded for this "
                                "split (load it with moments=...; check has_mv first)")
        ranks = self[key or self.primary_key]
        bins = assign_bins(self.mv, edges)                                 # (Nq,)
        out = {}
        for b, label in enumerate(bin_labels(edges)):   # loop over bins, not queries
            sel = bins == b
            out[label] = metrics_from_ranks(ranks.rank[sel], ranks.ties[sel], ranks.ap[sel])
        return out

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` (no pickled objects) atomically to exactly ``path``."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "format": np.array(_FORMAT),
            "keys": np.array(self.keys, dtype=np.str_),
            "query_ids": np.asarray(self.query_ids, dtype=np.str_),
            "synthetic": np.array(bool(self.synthetic)),
            "relevance_mode": np.array(self.relevance_mode),
        }
        if self.mv is not None:
            arrays["mv"] = np.asarray(self.mv, dtype=np.float64)
        for i, key in enumerate(self.keys):
            arrays[f"rank_{i}"] = self.per_key[key].rank
            arrays[f"ties_{i}"] = self.per_key[key].ties
            arrays[f"ap_{i}"] = self.per_key[key].ap
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez_compressed(handle, allow_pickle=False, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EvalResult":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                if "format" not in data.files or str(data["format"]) != _FORMAT:
                    raise EvalInputError(f"{path}: not a prvr-bench EvalResult file "
                                         f"(expected format {_FORMAT!r})")
                keys = [str(k) for k in data["keys"]]
                per_key = {key: KeyRanks(rank=data[f"rank_{i}"], ties=data[f"ties_{i}"],
                                         ap=data[f"ap_{i}"]) for i, key in enumerate(keys)}
                return cls(per_key=per_key, query_ids=data["query_ids"],
                           mv=data["mv"] if "mv" in data.files else None,
                           synthetic=bool(data["synthetic"]),
                           relevance_mode=str(data["relevance_mode"]))
        except (OSError, KeyError, ValueError) as err:
            if isinstance(err, EvalInputError):
                raise
            raise EvalInputError(f"{path}: cannot read EvalResult: {err}") from err

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        """JSON-ready summary (NaN becomes None); ``per_query`` adds ids, M/V and the arrays."""
        out: dict[str, Any] = {
            "keys": self.keys,
            "n_queries": self.n_queries,
            "synthetic": bool(self.synthetic),
            "relevance_mode": self.relevance_mode,
            "has_mv": self.has_mv,
            "metrics": {k: _json_floats(self.metrics(k)) for k in self.keys},
            "by_mv": ({k: {label: _json_floats(m) for label, m in self.by_mv(key=k).items()}
                       for k in self.keys} if self.has_mv else None),
        }
        if per_query:
            out["query_ids"] = [str(q) for q in self.query_ids]
            out["mv"] = None if self.mv is None else [float(v) for v in self.mv]
            out["per_query"] = {k: {"rank": r.rank.tolist(), "ties": r.ties.tolist(),
                                    "ap": r.ap.tolist()} for k, r in self.per_key.items()}
        return out


def _json_floats(metrics: Mapping[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


# ----------------------------------------------------------------------------------------------
# Ranking blocks of queries
# ----------------------------------------------------------------------------------------------

class _BlockRanker:
    """Ranks (q, Nv) blocks of consecutive queries and collects per-query arrays per key."""

    def __init__(self, query_video: np.ndarray, num_videos: int,
                 relevance: Sequence[np.ndarray] | None) -> None:
        self.num_queries = len(query_video)
        self.num_videos = num_videos
        self.query_video = torch.from_numpy(query_video)                 # (Nq,) int64, CPU
        self.mode = "single" if relevance is None else "multi"
        if relevance is not None:
            self._rows, self._cols = _relevance_index(relevance, query_video, num_videos)
        self.per_key: dict[str, dict[str, np.ndarray]] = {}

    def _relevant_mask(self, start: int, stop: int, device: torch.device) -> Tensor:
        lo, hi = np.searchsorted(self._rows, [start, stop], side="left")
        mask = torch.zeros((stop - start, self.num_videos), dtype=torch.bool, device=device)
        rows = torch.from_numpy(self._rows[lo:hi] - start).to(device)
        cols = torch.from_numpy(self._cols[lo:hi]).to(device)
        mask[rows, cols] = True                                          # (q, Nv)
        return mask

    def add(self, key: str, block: Tensor, start: int) -> None:
        stop = start + block.shape[0]
        if block.shape[1] != self.num_videos:
            raise EvalInputError(f"score block {key!r} has {block.shape[1]} videos, "
                                 f"expected {self.num_videos}")
        if block.is_complex() or block.dtype == torch.bool:
            raise EvalInputError(f"score matrix {key!r} must hold real numbers, got {block.dtype}")
        if self.mode == "single":
            positive = self.query_video[start:stop].to(block.device)
            rank, ties = rank_block(block, positive, offset=start, key=key)
            ap = 1.0 / rank.to(torch.float64)                            # one relevant: AP = 1/r
        else:
            mask = self._relevant_mask(start, stop, block.device)
            rank, ties, ap = multi_positive_block(block, mask, offset=start, key=key)
        store = self.per_key.get(key)
        if store is None:
            store = self.per_key[key] = {
                "rank": np.zeros(self.num_queries, np.int64),
                "ties": np.zeros(self.num_queries, np.int64),
                "ap": np.zeros(self.num_queries, np.float64)}
        store["rank"][start:stop] = rank.cpu().numpy()
        store["ties"][start:stop] = ties.cpu().numpy()
        store["ap"][start:stop] = ap.cpu().numpy()

    def result(self, query_ids, mv, synthetic: bool) -> EvalResult:
        per_key = {k: KeyRanks(**v) for k, v in self.per_key.items()}
        return EvalResult(per_key=per_key, query_ids=query_ids, mv=mv, synthetic=synthetic,
                          relevance_mode=self.mode)


def _relevance_index(relevance: Sequence[np.ndarray], query_video: np.ndarray,
                     num_videos: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, video) pairs of every relevant video, sorted by row; each query's own video is
    always relevant (it is the ground truth of docs/methods.md §1.5), so it is added."""
    nq = len(query_video)
    if len(relevance) != nq:
        raise EvalInputError(f"relevance has {len(relevance)} entries, expected one per query "
                             f"({nq})")
    parts = [np.asarray(r, dtype=np.int64).reshape(-1) for r in relevance]
    lengths = np.fromiter((p.size for p in parts), dtype=np.int64, count=nq)
    cols = np.concatenate(parts + [query_video]) if nq else np.zeros(0, np.int64)
    rows = np.concatenate([np.repeat(np.arange(nq, dtype=np.int64), lengths),
                           np.arange(nq, dtype=np.int64)])
    bad = (cols < 0) | (cols >= num_videos)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise EvalInputError(f"relevance of query index {int(rows[first])} names video index "
                             f"{int(cols[first])}, outside [0, {num_videos})")
    order = np.argsort(rows, kind="stable")
    return rows[order], cols[order]


def _check_query_video(query_video, num_queries: int, num_videos: int) -> np.ndarray:
    qv = query_video.cpu().numpy() if isinstance(query_video, Tensor) else np.asarray(query_video)
    if qv.shape != (num_queries,):
        raise EvalInputError(f"query_video has shape {qv.shape}, expected ({num_queries},)")
    if num_queries and not np.issubdtype(qv.dtype, np.integer):
        raise EvalInputError(f"query_video must hold integer video indices, got {qv.dtype}")
    qv = qv.astype(np.int64)
    bad = (qv < 0) | (qv >= num_videos)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise EvalInputError(f"query_video[{first}] = {int(qv[first])} is outside "
                             f"[0, {num_videos})")
    return qv


def _check_side_inputs(num_queries: int, query_ids, mv) -> tuple[np.ndarray, np.ndarray | None]:
    if query_ids is None:
        ids = np.arange(num_queries).astype(np.str_)
    else:
        ids = np.asarray([str(q) for q in query_ids], dtype=np.str_)
        if ids.shape != (num_queries,):
            raise EvalInputError(f"query_ids has {len(ids)} entries, expected {num_queries}")
    if mv is not None:
        mv = np.asarray(mv, dtype=np.float64)
        if mv.shape != (num_queries,):
            raise EvalInputError(f"mv has shape {mv.shape}, expected ({num_queries},)")
    return ids, mv


def _check_chunk(name: str, value: int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise EvalInputError(f"{name} must be a positive integer, got {value!r}")


# ----------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------

def evaluate(scores, query_video, *, relevance: Sequence[np.ndarray] | None = None,
             mv: np.ndarray | None = None, query_ids: Sequence[str] | None = None,
             synthetic: bool = False, query_chunk: int = 2048, key: str = PRIMARY_KEY) -> EvalResult:
    """Rank a ready score matrix, or a dict of named ones, one query block at a time.

    ``scores``: an (Nq, Nv) torch tensor (any device; blocks are ranked there) or numpy array,
    or ``{name: matrix}`` (every matrix evaluated; a bare matrix is stored under ``key``).
    ``query_video[i]``: index of query i's video. ``relevance[i]``: indices of all videos
    relevant to query i (multi-positive mode; query_video[i] is always included).
    ``mv``: per-query M/V for ``by_mv``. See the module docstring for the metrics.

    Shapes: scores (Nq, Nv); query_video (Nq,) int; mv (Nq,) float or None.
    """
    _check_chunk("query_chunk", query_chunk)
    matrices = dict(scores) if isinstance(scores, Mapping) else {key: scores}
    shape: tuple[int, ...] | None = None
    for name, matrix in matrices.items():
        if not isinstance(matrix, (Tensor, np.ndarray)):
            raise EvalInputError(f"score matrix {name!r} must be a torch tensor or numpy array, "
                                 f"got {type(matrix).__name__}")
        if matrix.ndim != 2:
            raise EvalInputError(f"score matrix {name!r} must be 2-D (Nq, Nv), got shape "
                                 f"{tuple(matrix.shape)}")
        if shape is not None and tuple(matrix.shape) != shape:
            raise EvalInputError(f"score matrix {name!r} has shape {tuple(matrix.shape)}, "
                                 f"the others {shape}")
        shape = tuple(matrix.shape)
    if shape is None:
        raise EvalInputError("scores is an empty dict; give at least one score matrix")
    num_queries, num_videos = shape
    if num_videos == 0:
        raise EvalInputError("score matrices have zero videos")
    qv = _check_query_video(query_video, num_queries, num_videos)
    ids, mv = _check_side_inputs(num_queries, query_ids, mv)
    ranker = _BlockRanker(qv, num_videos, relevance)
    for start in range(0, num_queries, query_chunk):    # loop over query blocks
        stop = min(start + query_chunk, num_queries)
        for name, matrix in matrices.items():
            block = matrix[start:stop]
            if isinstance(block, np.ndarray):
                if not np.issubdtype(block.dtype, np.number):
                    raise EvalInputError(f"score matrix {name!r} must be numeric, "
                                         f"got {block.dtype}")
                block = torch.from_numpy(np.ascontiguousarray(block))
            ranker.add(name, block, start)                               # block (q, Nv)
    if num_queries == 0:    # no block was ranked: keep the keys with empty arrays
        for name in matrices:
            ranker.per_key[name] = {"rank": np.zeros(0, np.int64), "ties": np.zeros(0, np.int64),
                                    "ap": np.zeros(0, np.float64)}
    return ranker.result(ids, mv, synthetic)


def _method_device(method: torch.nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    for tensor in method.parameters():
        return tensor.device
    for tensor in method.buffers():
        return tensor.device
    return torch.device("cpu")


def evaluate_method(method: PRVRMethod, split: SplitData, *, query_chunk: int = 512,
                    video_chunk: int | None = None,
                    device: torch.device | str | None = None) -> EvalResult:
    """Encode a split with ``method`` and rank every score key it returns.

    Videos are encoded once, ``video_chunk`` at a time (all at once when None); their encodings
    stay on the CPU when ``video_chunk`` is set and on ``device`` otherwise. Then for each block
    of ``query_chunk`` queries the (q, Nv) score block of every key is assembled from
    ``method.score`` over video chunks and ranked at once. ``score`` must be separable
    (docs/architecture.md §3), which is what makes the chunking exact.

    ``split``: a ``SplitData`` (query_batch, video_batch, num_queries, num_videos, query_video,
    cap_ids, mv, synthetic, relevance). ``device``: default the device of the method's
    parameters. The method's train/eval mode is restored afterwards.
    """
    result, _ = _score_and_rank(method, split, query_chunk, video_chunk, device, keep_scores=False)
    return result


def evaluate_method_with_scores(method: PRVRMethod, split: SplitData, *, query_chunk: int = 512,
                                video_chunk: int | None = None,
                                device: torch.device | str | None = None
                                ) -> tuple[EvalResult, dict[str, np.ndarray]]:
    """``evaluate_method``, also returning every score key's full matrix (opt-in).

    The same blocks that are ranked are copied to the CPU as they are made, so the matrices
    are exactly what was ranked (``evaluate(scores, split.query_video, ...)`` gives the same
    ranks). Costs Nq x Nv values per score key in host memory, which ``evaluate_method`` never
    holds; meant for exporting scores (``python -m benchmark.evaluate --scores-out``).

    Shapes: every matrix (Nq, Nv) in the dtype the method scored in, rows in ``split.cap_ids``
    order, columns in ``split.video_ids`` order.
    """
    result, scores = _score_and_rank(method, split, query_chunk, video_chunk, device,
                                     keep_scores=True)
    return result, scores if scores is not None else {}


def _score_and_rank(method: PRVRMethod, split: SplitData, query_chunk: int,
                    video_chunk: int | None, device: torch.device | str | None, *,
                    keep_scores: bool) -> tuple[EvalResult, dict[str, np.ndarray] | None]:
    """The one scoring path of ``evaluate_method`` (docstring there); with ``keep_scores`` each
    ranked (q, Nv) block is also copied into a host (Nq, Nv) matrix per key."""
    _check_chunk("query_chunk", query_chunk)
    _check_chunk("video_chunk", video_chunk, allow_none=True)
    device = _method_device(method, device)
    num_queries, num_videos = int(split.num_queries), int(split.num_videos)
    if num_videos == 0 or num_queries == 0:
        raise EvalInputError(f"split {getattr(split, 'split', '?')!r} has {num_queries} queries "
                             f"and {num_videos} videos; both must be positive")
    qv = _check_query_video(split.query_video, num_queries, num_videos)
    ids, mv = _check_side_inputs(num_queries, split.cap_ids, split.mv)
    ranker = _BlockRanker(qv, num_videos, split.relevance)
    kept: dict[str, np.ndarray] | None = {} if keep_scores else None
    step = video_chunk or num_videos
    keep = torch.device("cpu") if video_chunk is not None else device
    was_training = method.training
    method.eval()
    try:
        with torch.no_grad():
            parts: list[Encoding] = []
            for vs in range(0, num_videos, step):    # loop over video chunks
                batch = split.video_batch(np.arange(vs, min(vs + step, num_videos))).to(device)
                parts.append(method.encode_videos(batch).to(keep))
                del batch      # else it lives on while the next chunk is collated: two at once
            videos = type(parts[0]).cat(parts) if len(parts) > 1 else parts[0]
            for qs in range(0, num_queries, query_chunk):    # loop over query blocks
                qe = min(qs + query_chunk, num_queries)
                queries = method.encode_queries(split.query_batch(np.arange(qs, qe)).to(device))
                blocks: dict[str, Tensor] = {}
                for vs in range(0, num_videos, step):
                    ve = min(vs + step, num_videos)
                    chunk = videos if step == num_videos else videos.take(slice(vs, ve)).to(device)
                    out = _checked_scores(method.score(queries, chunk), qe - qs, ve - vs,
                                          blocks.keys() if vs else None)
                    for name, value in out.items():
                        if name not in blocks:
                            blocks[name] = torch.empty((qe - qs, num_videos), dtype=value.dtype,
                                                       device=value.device)  # (q, Nv)
                        blocks[name][:, vs:ve] = value                      # (q, v_chunk)
                for name, block in blocks.items():
                    ranker.add(name, block, qs)
                    if kept is not None:
                        exact = block.float() if block.dtype == torch.bfloat16 else block
                        host = exact.cpu().numpy()                          # (q, Nv)
                        if name not in kept:
                            kept[name] = np.empty((num_queries, num_videos), dtype=host.dtype)
                        kept[name][qs:qe] = host
                del queries, blocks, out     # before the next block is encoded
    finally:
        method.train(was_training)
    return ranker.result(ids, mv, bool(split.synthetic)), kept


def _checked_scores(out: object, q: int, v: int,
                    expected_keys: Iterable[str] | None) -> dict[str, Tensor]:
    if not isinstance(out, Mapping) or PRIMARY_KEY not in out:
        raise EvalInputError(f"method.score must return a dict with a {PRIMARY_KEY!r} entry, "
                             f"got {type(out).__name__}"
                             + (f" with keys {sorted(out)}" if isinstance(out, Mapping) else ""))
    if expected_keys is not None and set(out) != set(expected_keys):
        raise EvalInputError(f"method.score returned keys {sorted(out)} for one video chunk and "
                             f"{sorted(expected_keys)} for another")
    for name, value in out.items():
        if not isinstance(value, Tensor) or tuple(value.shape) != (q, v):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise EvalInputError(f"method.score entry {name!r} has shape {shape}, "
                                 f"expected ({q}, {v})")
    return dict(out)


if __name__ == "__main__":
    # ``python -m benchmark.evaluate`` runs this file as ``__main__``; the CLI imports the
    # evaluator as ``benchmark.evaluate``, so nothing from this copy of the module is used.
    import sys

    from benchmark.evaluate_cli import main

    sys.exit(main())
