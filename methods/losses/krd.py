"""KRD: knowledge-refined distillation targets (docs/methods.md §9.3.5). RECONSTRUCTION.

prvr-bench's own design, built from the abstract of arXiv 2603.23902 ("temporal-continuity-aware
refinement" of the CLIP knowledge, "segment-aware"); no equation here comes from the paper.
KRD changes only the *target* distribution of the inheritance branch's frame-level KD term;
the KL itself is ``methods.losses.distill.frame_kd_loss(..., target=P_tgt)``.

For one query with positive video of n valid frames and teacher frame relevance r_t:

1. smoothing, odd window w:   r̃_t = mean{ r_t' : |t'-t| ≤ (w-1)/2, t' valid }   (or max);
                                w is fixed, or per query w = max(w_min, 2⌊f·n/2⌋ + 1) for a
                                fraction f of the n valid frames (:func:`window_sizes`)
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
from benchmark.precision import float32_loss


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


def _check_window(window: int | Tensor, rows: int) -> Tensor | int:
    """The half-width (w - 1)/2: an int for one window, a (Nq,) long tensor for one per row."""
    if isinstance(window, Tensor):
        if window.shape != (rows,) or window.dtype.is_floating_point or window.dtype == torch.bool:
            raise KRDInputError(f"krd window per row must be an integer tensor of shape ({rows},); "
                                f"got {window.dtype} {tuple(window.shape)}")
        if rows and bool(((window < 1) | (window % 2 == 0)).any()):
            raise KRDInputError(f"krd window per row must hold positive odd integers; got "
                                f"{sorted(set(window.tolist()))}")
        return (window.long() - 1) // 2                                         # (Nq,)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise KRDInputError(f"krd.window must be a positive odd integer (a centred window); "
                            f"got {window!r}")
    return (window - 1) // 2


def window_sizes(mask: Tensor, minimum: int, fraction: float) -> Tensor:
    """Per-query odd window w = max(w_min, 2⌊f·n/2⌋ + 1) for n valid frames (§9.3.5 step 1).

    The window grows with the video, so a short moment inside a long video is blurred by the
    same share of the video as a long one, and never by less than ``minimum`` frames.
    ``fraction = 0`` gives ``minimum`` for every row (the fixed window of the first
    reconstruction). Shapes: mask (Nq, T) float 1/0 -> (Nq,) long.
    """
    _check_window(minimum, 0)
    if not 0.0 <= float(fraction) <= 1.0:
        raise KRDInputError(f"krd.window_fraction must lie in [0, 1]; got {fraction!r}")
    n = (mask > 0).sum(dim=1).to(torch.float64)                                 # (Nq,)
    half = torch.floor(float(fraction) * n / 2.0).long()                       # (Nq,) ⌊f·n/2⌋
    return torch.clamp(2 * half + 1, min=minimum)                               # (Nq,) odd


@torch.no_grad()
def smooth_scores(r: Tensor, mask: Tensor, window: int | Tensor,
                  op: Literal["mean", "max"] = "mean") -> Tensor:
    """Centred moving mean (or max) of r over valid frames, truncated at the ends (§9.3.5 step 1).

    mean: r̃ = conv(r·μ, 1_w) / conv(μ, 1_w), so the divisor counts only the valid frames inside
    each window and padding never enters. max: the largest valid r in the window.
    Padded positions of the output are 0. ``window=1`` returns r exactly on valid frames.
    ``window`` is one odd width for every row, or a (Nq,) integer tensor of odd widths, one per
    row (:func:`window_sizes`); all rows are smoothed at once through the widest window, with
    the offsets beyond a row's own half-width masked out.

    Shapes: r (Nq, T); mask (Nq, T) float 1/0; window int or (Nq,) -> (Nq, T).
    """
    valid = _check_inputs(r, mask)
    half = _check_window(window, r.shape[0])
    if op not in ("mean", "max"):
        raise KRDInputError(f"krd.smooth must be 'mean' or 'max'; got {op!r}")
    if isinstance(half, Tensor):
        top = int(half.max()) if half.numel() else 0
    else:
        top = half
    width = 2 * top + 1
    inside = None                                                               # every offset
    if isinstance(half, Tensor):
        offsets = torch.arange(-top, top + 1, device=r.device).abs()            # (w,)
        inside = (offsets[None, :] <= half.to(r.device)[:, None])[:, None, :]   # (Nq, 1, w)
    # windows as a strided view: (Nq, T, w), w small (a fraction of ≤ 128 frames)
    if op == "mean":
        mu = valid.to(r.dtype)                                                  # (Nq, T)
        r_windows = F.pad(r * mu, (top, top)).unfold(1, width, 1)               # (Nq, T, w)
        mu_windows = F.pad(mu, (top, top)).unfold(1, width, 1)                  # (Nq, T, w)
        if inside is not None:
            r_windows, mu_windows = r_windows * inside, mu_windows * inside
        sums, counts = r_windows.sum(-1), mu_windows.sum(-1)                    # (Nq, T) conv(·, 1_w)
        smoothed = sums / counts.clamp(min=1.0)                                 # (Nq, T)
    else:
        low = torch.finfo(r.dtype).min
        filled = F.pad(r.masked_fill(~valid, low), (top, top), value=low)       # (Nq, T+w-1)
        windows = filled.unfold(1, width, 1)                                    # (Nq, T, w)
        if inside is not None:
            windows = windows.masked_fill(~inside, low)
        smoothed = windows.amax(-1)                                             # (Nq, T)
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
@float32_loss
def refine_target(r: Tensor, mask: Tensor, *, window: int | Tensor, delta: float, lam: float,
                  temperature: float, refined: Literal["softmax", "uniform"] = "softmax",
                  smooth: Literal["mean", "max"] = "mean") -> Tensor:
    """KRD distillation target P^tgt = λ P^ref + (1-λ) P^raw (docs/methods.md §9.3.5).

    ``lam`` is λ (named so because ``lambda`` is a Python keyword). λ = 0 returns DL-DKD++'s
    raw target softmax(r/τ) exactly; w = 1, δ = 1, λ = 1 returns it too; δ = 0, λ = 1 puts
    all mass on the smoothed arg-max frame(s). Rows sum to 1 over valid frames; padded frames
    get exactly 0.

    Shapes: r (Nq, T) teacher frame relevance of each query's positive video; mask (Nq, T)
    float 1/0 of that video's frames; window int or (Nq,) per row -> (Nq, T).
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
