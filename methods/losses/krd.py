"""KRD: knowledge-refined distillation targets (docs/methods.md §9.3.5). RECONSTRUCTION.

prvr-bench's own design, built from the abstract of arXiv 2603.23902 ("temporal-continuity-aware
refinement" of the CLIP knowledge, "segment-aware"); no equation here comes from the paper.
KRD changes only the *target* distribution of the inheritance branch's frame-level KD term;
the KL itself is ``methods.losses.distill.frame_kd_loss(..., target=P_tgt)``.

For one query with positive video of n valid frames and teacher frame relevance r_t:

1. smoothing, odd window w:   r̃_t = mean{ r_t' : |t'-t| ≤ (w-1)/2, t' valid }   (or max)
2. segment selection:          S = { t : r̃_t ≥ M - δ (M - m) },  M = max r̃, m = min r̃
3. refined target:             P^ref_t = exp(r̃_t/τ) / Σ_{t'∈S} exp(r̃_t'/τ)  on S, else 0
                                (or uniform 1/|S| on S)
4. raw target:                 P^raw = softmax_t(r_t / τ)            (DL-DKD's target)
5. mixture:                    P^tgt = λ P^ref + (1-λ) P^raw

Everything runs without gradient; padded frames never enter a window, are never selected and
get exactly zero target mass.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.errors import PRVRBenchError


class KRDInputError(PRVRBenchError, ValueError):
    """Bad KRD settings or inputs; the message names the argument and the problem."""


def _check_inputs(r: Tensor, mask: Tensor) -> Tensor:
    if r.dim() != 2 or mask.shape != r.shape:
        raise KRDInputError(f"KRD expects r and mask of the same shape (Nq, T); got r "
                            f"{tuple(r.shape)} and mask {tuple(mask.shape)}")
    valid = mask > 0                                                      # (Nq, T) bool
    if r.shape[0] and not bool(valid.any(dim=1).all()):
        row = int((~valid.any(dim=1)).nonzero()[0])
        raise KRDInputError(f"KRD: query row {row} has no valid frame in its mask")
    return valid


def _check_window(window: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise KRDInputError(f"krd.window must be a positive odd integer (a centred window); "
                            f"got {window!r}")


@torch.no_grad()
def smooth_scores(r: Tensor, mask: Tensor, window: int,
                  op: Literal["mean", "max"] = "mean") -> Tensor:
    """Centred moving mean (or max) of r over valid frames, truncated at the ends (§9.3.5 step 1).

    mean: r̃ = conv(r·μ, 1_w) / conv(μ, 1_w), so the divisor counts only the valid frames inside
    each window and padding never enters. max: the largest valid r in the window.
    Padded positions of the output are 0. ``window=1`` returns r exactly on valid frames.

    Shapes: r (Nq, T); mask (Nq, T) float 1/0 -> (Nq, T).
    """
    _check_window(window)
    valid = _check_inputs(r, mask)
    if op not in ("mean", "max"):
        raise KRDInputError(f"krd.smooth must be 'mean' or 'max'; got {op!r}")
    half = (window - 1) // 2
    # windows as a strided view: (Nq, T, w) with w ≤ 9 in every sweep, cheaper than a conv
    if op == "mean":
        mu = valid.to(r.dtype)                                                  # (Nq, T)
        sums = F.pad(r * mu, (half, half)).unfold(1, window, 1).sum(-1)         # (Nq, T) conv(r·μ, 1_w)
        counts = F.pad(mu, (half, half)).unfold(1, window, 1).sum(-1)           # (Nq, T) conv(μ, 1_w)
        smoothed = sums / counts.clamp(min=1.0)                                 # (Nq, T)
    else:
        low = torch.finfo(r.dtype).min
        filled = F.pad(r.masked_fill(~valid, low), (half, half), value=low)     # (Nq, T+w-1)
        smoothed = filled.unfold(1, window, 1).amax(-1)                         # (Nq, T)
    return smoothed.masked_fill(~valid, 0.0)


def _masked_softmax(logits: Tensor, keep: Tensor) -> Tensor:
    """softmax over the kept entries of each row; exactly 0 elsewhere. Shapes: (Nq, T)."""
    low = torch.finfo(logits.dtype).min
    probs = logits.masked_fill(~keep, low).softmax(dim=-1)                      # (Nq, T)
    return probs.masked_fill(~keep, 0.0)


@torch.no_grad()
def select_segment(smoothed: Tensor, mask: Tensor, delta: float) -> Tensor:
    """Kept set S = {t valid : r̃_t ≥ M - δ(M - m)} (§9.3.5 step 2), as a bool (Nq, T).

    Evaluated as (r̃_t - m) ≥ (1 - δ)(M - m) - ε: the same set, but exact at the ends of the range
    in floating point (δ = 1 keeps every valid frame, a flat curve M = m keeps everything). The
    slack ε = 16·eps·(|M| + |m|) (about 4e-6 for float32 cosines) keeps a plateau whole: frames
    whose windows average the same values differ only by summation rounding, so with δ = 0 every
    frame tied with the maximum is kept. Padded frames are never selected.
    """
    if not 0.0 <= float(delta) <= 1.0:
        raise KRDInputError(f"krd.delta must lie in [0, 1]; got {delta!r}")
    valid = _check_inputs(smoothed, mask)
    low = torch.finfo(smoothed.dtype).min
    high = torch.finfo(smoothed.dtype).max
    top = smoothed.masked_fill(~valid, low).amax(dim=1, keepdim=True)           # (Nq, 1) M
    bottom = smoothed.masked_fill(~valid, high).amin(dim=1, keepdim=True)       # (Nq, 1) m
    slack = 16 * torch.finfo(smoothed.dtype).eps * (top.abs() + bottom.abs())  # (Nq, 1) ε
    keep = (smoothed - bottom) >= (1.0 - float(delta)) * (top - bottom) - slack  # (Nq, T)
    return keep & valid


@torch.no_grad()
def refine_target(r: Tensor, mask: Tensor, *, window: int, delta: float, lam: float,
                  temperature: float, refined: Literal["softmax", "uniform"] = "softmax",
                  smooth: Literal["mean", "max"] = "mean") -> Tensor:
    """KRD distillation target P^tgt = λ P^ref + (1-λ) P^raw (docs/methods.md §9.3.5).

    ``lam`` is λ (named so because ``lambda`` is a Python keyword). λ = 0 returns DL-DKD++'s
    raw target softmax(r/τ) exactly; w = 1, δ = 1, λ = 1 returns it too; δ = 0, λ = 1 puts
    all mass on the smoothed arg-max frame(s). Rows sum to 1 over valid frames; padded frames
    get exactly 0.

    Shapes: r (Nq, T) teacher frame relevance of each query's positive video; mask (Nq, T)
    float 1/0 of that video's frames -> (Nq, T).
    """
    if not 0.0 <= float(lam) <= 1.0:
        raise KRDInputError(f"krd.lam (λ) must lie in [0, 1]; got {lam!r}")
    if not float(temperature) > 0.0:
        raise KRDInputError(f"KD temperature must be positive; got {temperature!r}")
    if refined not in ("softmax", "uniform"):
        raise KRDInputError(f"krd.refined must be 'softmax' or 'uniform'; got {refined!r}")
    valid = _check_inputs(r, mask)
    r = r.detach()
    raw = _masked_softmax(r / temperature, valid)                               # (Nq, T) P^raw
    if float(lam) == 0.0:
        return raw
    smoothed = smooth_scores(r, mask, window, smooth)                           # (Nq, T) r̃
    keep = select_segment(smoothed, mask, delta)                                # (Nq, T) S
    if refined == "softmax":
        ref = _masked_softmax(smoothed / temperature, keep)                     # (Nq, T) P^ref
    else:
        kept = keep.to(r.dtype)
        ref = kept / kept.sum(dim=1, keepdim=True)                              # (Nq, T)
    if float(lam) == 1.0:
        return ref
    return lam * ref + (1.0 - lam) * raw                                        # (Nq, T)
