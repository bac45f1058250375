"""Reference-exact feature preprocessing (docs/methods.md §1.3), vectorised over videos.

Both temporal resamplings of the reference are one binning rule: for a sequence of n rows and
K output rows, boundaries ``b_k = round(k / K * n)`` for k = 0..K (round half to even) are
clipped to ``n - 1``; output row k is ``mean(X[b_k:b_{k+1}])`` when ``b_k < b_{k+1}``, else
``X[b_k]``. A whole set of videos, concatenated, is binned at once: the bins become the rows of one
sparse averaging matrix (weight 1/count on ``b_k..b_{k+1}-1``, or 1 on ``b_k`` for an empty
bin) that multiplies the stacked rows; there is no loop over rows or videos.

* ``uniform_feature_sampling`` (§1.3 step 1): K = max_len, NumPy float64 boundaries, applied
  only when n > max_len (otherwise the rows are kept).
* ``average_to_fixed_length`` (§1.3 step 2): K = num_clips (32) always; boundaries computed
  in float32 as ``torch.arange(0, K + 1, 1.0) / K * n`` does in the reference.
* ``l2_normalize``: ``x / (‖x‖₂ + 1e-5)`` per row.

Side effect kept from the reference: the last input frame is never averaged into a bin when
n > K, because the final boundary is clipped to n - 1.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse

L2_EPS = 1e-5  # ref: l2_normalize_np_array(eps=1e-5) in every reference data_provider.py


def l2_normalize(x: np.ndarray, eps: float = L2_EPS, *, inplace: bool = False) -> np.ndarray:
    """Row-wise ``x / (‖x‖₂ + eps)`` (docs/methods.md §1.3), optionally overwriting ``x``.

    Shapes: (..., d) -> (..., d).
    """
    x = np.asarray(x)
    squares = np.einsum("...d,...d->...", x, x, dtype=np.float64)            # (...,)
    norms = np.sqrt(squares).astype(x.dtype)[..., None]                      # (..., 1)
    norms += x.dtype.type(eps)                   # stays in x's dtype, as the reference's norm does
    if inplace:
        return np.divide(x, norms, out=x)
    return x / norms


def _boundaries(n: int, k: int, dtype, *, keep_short: bool) -> np.ndarray:
    if keep_short and n <= k:
        bounds = np.arange(n + 1, dtype=np.int64)
    else:
        # ref: np.arange(0, K + 1, 1.0) / K * n, then round (ties to even), then clip.
        steps = np.arange(0, k + 1, 1.0, dtype=dtype) / dtype(k) * dtype(n)
        bounds = np.round(steps).astype(np.int64)
    return np.minimum(bounds, n - 1)


def bin_segments(rows: np.ndarray, lengths: np.ndarray, out_len: int | np.ndarray, *,
                 keep_short: bool, float32_bounds: bool = False,
                 row_index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bin every video of a concatenated block with the §1.3 rule, in one sparse product.

    ``rows`` holds the videos' raw rows back to back (video i has ``lengths[i]`` rows). Video i
    becomes ``min(n_i, K_i)`` rows when ``keep_short`` (uniform sampling) or exactly ``K_i``
    rows otherwise (clip averaging), with ``K = out_len`` (one int, or one per video as in the
    DL-DKD++ resampling to each video's teacher length). Means are accumulated in float32.
    With ``row_index``, the j-th row of the concatenation is ``rows[row_index[j]]`` (so rows
    read from a memmap in storage order need not be copied into frame order).

    Shapes: rows (R, d), lengths (V,), out_len int or (V,), row_index (Σn,) or None ->
    (binned (R', d) float32, new lengths (V,) int64).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if (lengths <= 0).any():
        raise ValueError("bin_segments: every video needs at least one row")
    targets = np.broadcast_to(np.asarray(out_len, dtype=np.int64), lengths.shape)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])                 # (V,)
    dtype = np.float32 if float32_bounds else np.float64
    # Boundaries depend only on (n, K): compute them once per distinct pair.
    pairs, inverse = np.unique(np.stack([lengths, targets], axis=1), axis=0, return_inverse=True)
    per_pair = [_boundaries(int(n), int(k), dtype, keep_short=keep_short) for n, k in pairs]
    pair_sizes = np.fromiter((b.size for b in per_pair), np.int64, len(per_pair))
    pair_first = np.concatenate([[0], np.cumsum(pair_sizes)[:-1]])
    inverse = inverse.reshape(-1)
    sizes = pair_sizes[inverse]                                              # (V,) = K_i + 1
    total = int(sizes.sum())
    # Gather each video's boundary list from the per-pair table without a loop over videos.
    entry = np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)    # position in own list
    starts = (np.concatenate(per_pair)[np.repeat(pair_first[inverse], sizes) + entry]
              + np.repeat(offsets, sizes))                                   # (ΣK_i + V,)
    keep = np.ones(starts.size, bool)
    keep[np.cumsum(sizes) - 1] = False     # each video's trailing boundary only closes its last bin
    first = starts[keep]                                                     # (ΣK_i,) b_k
    # An empty bin (b_k == b_{k+1}) is the single row X[b_k]: count 1.
    counts = np.maximum(starts[1:][keep[:-1]] - first, 1)                   # (ΣK_i,)
    # Bin means as one sparse (ΣK_i, R) averaging matrix times the rows: a single pass over the
    # data, much faster than reduceat/cumsum along axis 0 on wide float32 rows.
    indptr = np.concatenate([[0], np.cumsum(counts)])
    columns = np.repeat(first - indptr[:-1], counts) + np.arange(indptr[-1])
    if row_index is not None:
        columns = np.asarray(row_index, dtype=np.int64)[columns]
    weights = np.repeat((1.0 / counts).astype(np.float32), counts)
    averaging = sparse.csr_array((weights, columns, indptr), shape=(first.size, rows.shape[0]))
    binned = np.asarray(averaging @ np.asarray(rows, dtype=np.float32), dtype=np.float32)
    return binned, sizes - 1


def uniform_feature_sampling(x: np.ndarray, max_len: int = 128) -> np.ndarray:
    """§1.3 step 1 for one video (no normalisation). Shapes: (n, d) -> (min(n, max_len), d)."""
    x = np.asarray(x)
    if x.shape[0] <= max_len:
        return x
    return bin_segments(x, np.array([x.shape[0]]), max_len, keep_short=True)[0]


def average_to_fixed_length(x: np.ndarray, num_clips: int = 32) -> np.ndarray:
    """§1.3 step 2 binning for one video (no normalisation). Shapes: (n, d) -> (num_clips, d)."""
    x = np.asarray(x)
    return bin_segments(x, np.array([x.shape[0]]), num_clips, keep_short=False,
                        float32_bounds=True)[0]


def normalize_query_tokens(tokens: np.ndarray, max_tokens: int = 30) -> np.ndarray:
    """§1.3 step 3: L2-normalise every token, then keep the first ``max_tokens``.

    Shapes: (L, d_q) -> (min(L, max_tokens), d_q).
    """
    return l2_normalize(np.asarray(tokens, dtype=np.float32))[:max_tokens]
