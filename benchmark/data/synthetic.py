"""Seeded synthetic PRVR collections in the real MS-SL layout, plus a SYNTHETIC marker file.

Two stages, both deterministic given ``(profile, scale, seed)``:

1. ``plan_collection`` samples the *annotations* of every split: video ids and durations,
   queries per video, moments (M/V by quota over the five 0.2 bins, then over their 0.1
   halves, then inside the half through the piecewise-linear CDF of ``Profile.mv_cdf_knots``),
   word and token counts. It is cheap even at ``full`` scale, so statistics tests use it.
2. ``write_collection`` draws the latent content and writes every file of
   ``benchmark.data.layout.Layout``, streaming frames and queries in fixed-size chunks so that
   memory stays bounded at ``full`` scale. ``generate`` runs both into a temporary directory
   and renames it into place.

The latent model (why the data are learnable, and where M/V matters)
--------------------------------------------------------------------
Each query q describes one *event* with a latent ``z_q`` (unit vector in R^K, K = 32, a mix of
a shared prototype — so other videos hold similar, hard-negative events — and a unique part;
some queries of one video share part of their event). Each video has a background latent
``b_v`` and a few distractor events. Frame t of video v has the latent

    h_{v,t} = w_bg b_v + Σ_{q ∈ v, t ∈ moment(q)} z_q + w_d Σ_{distractors d ∋ t} z_d + σ_f ε,

so a query's content sits only in its moment's frames. Views of the latents:

* student frames   x = tanh(h W1 + c1) W2 + c2 + σ_x ε          (fixed random MLP, d_v wide)
* student tokens   y = tanh(u W1' + c1') W2' + c2' + σ_y ε,  with u = z_q + σ_u ε for content
  tokens and u = filler word + w_ctx z_q + σ_u ε for the others (first and last token are
  the sentence markers ``<s>``/``</s>``)
* teacher text     c_q = s_t (z_q + σ_tq ε) P;  teacher frames  G_{v,t} = s_v (h_{v,t} + σ_tv ε) P

with one projection P for both teacher modalities (CLIP-like alignment) and extra teacher
noise, so the teacher is informative but beatable by a student that learns to invert the
student views. A mean-pooled video dilutes ``z_q`` by the moment's share of frames, so
mean-pool scores fall at low M/V while max-over-frames scores do not.

Diagnostic factors (``DiagnosticFactors``; docs/datasets.md §8.5)
-----------------------------------------------------------------
Options that plant the phenomenon each kdc-net module claims to exploit, each off by default;
with every knob off the generator writes exactly the bytes it wrote before the factors existed
(the marker then carries no ``factors`` entry; a collection with a factor on records all of them
there). Each factor draws from its own random stream, so switching one on changes nothing else:

* ``query_phrases`` P > 1 (HSA): a query's inner tokens form P contiguous phrases; one phrase,
  chosen at random, describes the query's event z_q, the others describe distractor events
  drawn from a small recurring bank (``phrase_bank``), so the evidence sits in one phrase;
* ``video_stretch`` f > 1 and ``moment_parts`` m > 1 (DTA): videos f times longer with moments
  of the same length (M/V divided by f), and each moment frame shows one of m disjoint groups of
  z_q's coordinates (×√m), cycling frame by frame: one frame matches its query weakly, any m
  consecutive frames hold the whole event, so local temporal context pays;
* ``teacher_time_noise`` σ > 0 (KRD): extra teacher-only noise σ/√K per frame on the teacher's
  frame latent, independent across frames: the teacher's frame similarities jitter in time.

The teacher's text features always see z_q only, and labels (moments, relevance) are derived
as without the factors.

Shapes: ``Nv`` videos, ``Nq`` queries, ``F`` frames of a split, ``K`` latent size.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
from scipy import sparse

from benchmark.data.layout import SPLITS, Layout
from benchmark.data.profiles import DURATION_LEVELS, PROFILES, Profile, get_profile, split_videos
from benchmark.errors import PRVRBenchError

#: Bumped whenever the same (profile, scale, seed) would produce different bytes.
GENERATOR_VERSION = "1"

#: Rows per chunk when streaming frames (student + teacher) and queries to disk.
FRAME_CHUNK = 16384
QUERY_CHUNK = 2048
#: Extra RoBERTa tokens per word (subword splits); a query has words + 2 + Binomial(words, rate)
#: tokens, the 2 being <s> and </s>. Part of the plan, so not a SignalConfig knob.
SUBWORD_RATE = 0.12

# Random-stream identifiers (default_rng([seed, profile, split, stream, ...])).
_STREAM_IDS, _STREAM_DURATION, _STREAM_QPV, _STREAM_MV, _STREAM_WORDS = 0, 1, 2, 3, 4
_STREAM_LATENT, _STREAM_FRAMES, _STREAM_TOKENS, _STREAM_TEXT, _STREAM_ANOMALY = 5, 6, 7, 8, 9
_STREAM_TEACHER_FRAMES, _STREAM_TEACHER_TEXT = 10, 11
_STREAM_PHRASES, _STREAM_TEACHER_TIME = 12, 13           # diagnostic factors only
_MODEL_SPLIT = 99          # split slot of the collection-wide latent model


class GenerationError(PRVRBenchError, ValueError):
    """The output location cannot be written as asked."""


@dataclass(frozen=True)
class SignalConfig:
    """Knobs of the latent model (module docstring).

    Defaults were tuned on the ``small`` TVR test split (200 videos, chance SumR ≈ 58): the
    teacher's zero-shot SumR (max_t cos) is 181 (mean-pooled teacher: 87; R@10 on M/V (0, 0.2]
    42 for max vs 10 for mean); a latent-space oracle max_t cos(z_q, h_vt) reaches ≈ 318, and a
    2-layer MLP student with max-pooling and InfoNCE trained on ``small`` train reaches ≈ 219
    after 10 epochs, so trained students can beat the teacher while leaving headroom.
    """

    latent_dim: int = 32              # K
    prototypes: int = 48              # shared event prototypes (hard negatives across videos)
    prototype_weight: float = 0.55    # share of a prototype in an event latent
    shared_event_prob: float = 0.2    # a query borrows half its event from the previous query
    background_weight: float = 1.3    # w_bg: a strong shared background dilutes short moments
    distractors_per_video: int = 2
    distractor_weight: float = 0.8    # w_d
    distractor_span: tuple[float, float] = (0.05, 0.15)  # share of the video's frames
    frame_noise: float = 0.5          # σ_f, on the latent (the part every view shares)
    mlp_hidden: int = 256
    mlp_gain: float = 1.2             # std of W1 entries: tanh moderately saturated
    student_video_noise: float = 0.5  # σ_x per feature dim
    student_query_noise: float = 0.3  # σ_y per feature dim
    token_noise: float = 0.3          # σ_u
    content_token_share: float = 0.45
    context_weight: float = 0.3       # w_ctx: RoBERTa tokens are contextual
    filler_words: int = 40
    teacher_text_noise: float = 1.0   # σ_tq: most of the teacher's error is on the text side
    teacher_frame_noise: float = 0.4  # σ_tv
    teacher_text_scale: float = 8.0   # raw CLIP norms are O(10); stored unnormalised
    teacher_frame_scale: float = 10.0


@dataclass(frozen=True)
class DiagnosticFactors:
    """Diagnostic factors of the module docstring; the defaults switch every one off."""

    query_phrases: int = 1            # P, phrases per query (1: off) — HSA
    phrase_bank: int = 16             # distinct distractor phrase events (recurring across queries)
    video_stretch: float = 1.0        # f, videos f× longer, moments as long (1: off) — DTA
    moment_parts: int = 1             # m, parts of an event shown frame by frame (1: off) — DTA
    teacher_time_noise: float = 0.0   # σ, per-frame teacher-only latent noise (0: off) — KRD

    def __post_init__(self) -> None:
        checks = [(self.query_phrases >= 1, "query_phrases must be >= 1"),
                  (self.phrase_bank >= 1, "phrase_bank must be >= 1"),
                  (self.video_stretch >= 1.0, "video_stretch must be >= 1"),
                  (self.moment_parts >= 1, "moment_parts must be >= 1"),
                  (self.teacher_time_noise >= 0.0, "teacher_time_noise must be >= 0")]
        for ok, message in checks:
            if not ok:
                raise GenerationError(f"diagnostic factor {message}; got {self}")

    @property
    def off(self) -> bool:
        """True when every factor is off (the collection is today's profile byte for byte)."""
        return (self.query_phrases == 1 and self.video_stretch == 1.0 and self.moment_parts == 1
                and self.teacher_time_noise == 0.0)


NO_FACTORS = DiagnosticFactors()


@dataclass
class SplitPlan:
    """Annotations of one split. Times in seconds, rounded to 2 decimals as in the real files.

    Shapes: durations, num_frames (Nv,); query_video, frame_start, frame_end, words, tokens,
    mv (Nq,); ts (Nq, 2).
    """

    split: str
    video_ids: list[str]
    durations: np.ndarray
    num_frames: np.ndarray
    cap_ids: list[str]
    query_video: np.ndarray
    ts: np.ndarray
    mv: np.ndarray
    frame_start: np.ndarray
    frame_end: np.ndarray
    words: np.ndarray
    tokens: np.ndarray

    @property
    def num_videos(self) -> int:
        return len(self.video_ids)

    @property
    def num_queries(self) -> int:
        return len(self.cap_ids)

    @property
    def queries_per_video(self) -> np.ndarray:
        return np.bincount(self.query_video, minlength=self.num_videos)


@dataclass
class CollectionPlan:
    profile: Profile
    scale: str
    seed: int
    splits: dict[str, SplitPlan] = field(default_factory=dict)
    factors: DiagnosticFactors = NO_FACTORS


# --------------------------------------------------------------------------- sampling helpers

def _rng(seed: int, profile: Profile, split: int, stream: int, *extra: int) -> np.random.Generator:
    return np.random.default_rng([seed, PROFILES.index(profile.name), split, stream, *extra])


def quota_counts(weights, n: int) -> np.ndarray:
    """Largest-remainder apportionment of ``n`` items to ``weights`` (ties: lower index first).

    Shapes: weights (m,) -> counts (m,) int64 summing to n, each within 1 of ``n * w / sum(w)``.
    """
    w = np.asarray(weights, dtype=np.float64)
    exact = n * w / w.sum()                                   # (m,)
    counts = np.floor(exact).astype(np.int64)
    remainder = exact - counts
    order = np.argsort(-remainder, kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    return counts


def cumulative_counts(weights, n: int) -> np.ndarray:
    """Counts from the rounded cumulative quota: c_i = round(n C_i) - round(n C_{i-1}).

    Every contiguous range of values (e.g. the rare > 30-word tail) then holds within one item
    of its expected count, which per-value rounding cannot promise for long, thin tails.
    Shapes: weights (m,) -> counts (m,) int64 summing to n.
    """
    w = np.asarray(weights, dtype=np.float64)
    cum = np.rint(n * np.cumsum(w) / w.sum()).astype(np.int64)             # (m,)
    cum[-1] = n
    return np.diff(np.concatenate([[0], cum]))


def quota_sample(pmf, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` values from a discrete ``((value, weight), ...)`` by cumulative quota, shuffled."""
    values = np.array([v for v, _ in pmf], dtype=np.int64)
    counts = cumulative_counts([w for _, w in pmf], n)
    return rng.permutation(np.repeat(values, counts))


def sample_durations(knots, n: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified draws through the piecewise-linear inverse CDF of the quantile knots.

    u_i = (π(i) + U_i) / n for a random permutation π, so every 1/n quantile slice holds one
    draw and the sample quantiles track the knots closely even for small n.
    """
    u = (rng.permutation(n) + rng.random(n)) / n                       # (n,)
    return np.round(np.interp(u, DURATION_LEVELS, knots), 2)


def sample_mv(profile: Profile, n: int, rng: np.random.Generator) -> np.ndarray:
    """M/V of ``n`` queries: five-bin quota, then 0.1-half quota, then the CDF inside the half.

    Returns values in (0, 1], shuffled; the exact-1 share of the last half is kept by quota.
    """
    shares10 = profile.mv_bin10_shares
    cdf_x, cdf_f = profile.mv_cdf_knots()
    edge_f = np.interp(np.arange(11) / 10.0, cdf_x, cdf_f, left=0.0, right=1.0)   # (11,)
    edge_f[-1] = 1.0 - profile.mv_one_share
    five = quota_counts(profile.mv_bin5_shares, n)                      # (5,)
    halves = np.concatenate([quota_counts(shares10[2 * b: 2 * b + 2] + 1e-12, int(five[b]))
                             for b in range(5)])                        # (10,)
    n_one = 0
    if profile.mv_one_count and halves[9]:
        n_one = int(quota_counts([profile.mv_one_share, shares10[9] - profile.mv_one_share],
                                 int(halves[9]))[0])
    halves[9] -= n_one
    half_of = np.repeat(np.arange(10), halves)                          # (n - n_one,)
    lo, hi = edge_f[half_of], edge_f[half_of + 1]
    u = hi - (hi - lo) * rng.random(half_of.size)                       # in (lo, hi]
    mv = np.interp(u, cdf_f, cdf_x)
    # keep clear of the lower edge so rounding cannot move a value into the bin below
    mv = np.maximum(mv, half_of / 10.0 + 2e-3)
    mv = np.concatenate([mv, np.ones(n_one)])
    return rng.permutation(mv)


def _tvr_ids(n: int, rng: np.random.Generator) -> list[str]:
    # ref: docs/datasets.md §5.1 (show mix of the test split; The Big Bang Theory has no prefix)
    shows = ("friends_", "castle_", "house_", "", "met_", "grey_")
    weights = np.array([560, 473, 462, 431, 149, 104], dtype=np.float64)
    show = rng.choice(len(shows), size=n, p=weights / weights.sum())
    season, episode = rng.integers(1, 11, size=n), rng.integers(1, 25, size=n)
    double = rng.random(n) < 0.03
    seg, clip = rng.integers(1, 3, size=n), rng.integers(0, 40, size=n)
    return [f"{shows[a]}s{b:02d}e{c:02d}{f'-{c + 1:02d}' if d else ''}_seg0{e}_clip_{g:02d}"
            for a, b, c, d, e, g in zip(show, season, episode, double, seg, clip)]


_YT_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))
_CHARADES_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))


def _random_strings(alphabet: np.ndarray, length: int, n: int, rng: np.random.Generator) -> list[str]:
    chars = alphabet[rng.integers(0, alphabet.size, size=(n, length))]   # (n, length)
    return ["".join(row) for row in chars]


def make_video_ids(profile: Profile, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct video ids in the real shapes of docs/datasets.md §5.1, in draw order."""
    seen: dict[str, None] = {}
    while len(seen) < n:
        want = 2 * (n - len(seen)) + 64
        if profile.name == "tvr":
            batch = _tvr_ids(want, rng)
        elif profile.name == "activitynet":
            batch = ["v_" + s for s in _random_strings(_YT_ALPHABET, 11, want, rng)]
        else:
            batch = _random_strings(_CHARADES_ALPHABET, 5, want, rng)
        for vid in batch:
            seen.setdefault(vid, None)
    return list(seen)[:n]


def _place_moments(profile: Profile, mv: np.ndarray, durations: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Start/end times for moments of relative length ``mv`` (docs/datasets.md §4.7 shares).

    A moment starts at 0 with probability ``start_at_zero``, ends at T with ``end_at_duration``,
    else starts at r (T - len) with r ~ Beta(1, 1.5) (median start/T ≈ 0.3 on TVR).

    Shapes: mv, durations (Nq,) -> ts (Nq, 2).
    """
    length = mv * durations
    kind = rng.random(mv.size)
    r = rng.beta(1.0, 1.5, size=mv.size)
    start = np.where(kind < profile.start_at_zero, 0.0, r * (durations - length))
    at_end = (kind >= profile.start_at_zero) & (kind < profile.start_at_zero + profile.end_at_duration)
    start = np.where(at_end, durations - length, start)
    start = np.where(mv >= 1.0, 0.0, start)
    s = np.clip(np.round(start, 2), 0.0, durations)
    e = np.minimum(np.round(s + length, 2), durations)
    e = np.where(mv >= 1.0, durations, e)
    e = np.maximum(e, np.minimum(s + 0.01, durations))
    s = np.minimum(s, e - 0.01)
    return np.stack([np.round(s, 2), np.round(e, 2)], axis=1)


def plan_split(profile: Profile, split: str, video_ids: list[str], seed: int,
               factors: DiagnosticFactors = NO_FACTORS) -> SplitPlan:
    """Annotations of one split (see ``SplitPlan``); vectorised over videos and queries.
    ``factors.video_stretch`` f multiplies the durations and divides the M/V targets."""
    si = SPLITS.index(split)
    nv = len(video_ids)
    train = split == "train"
    durations = sample_durations(profile.duration_knots_train if train else profile.duration_knots,
                                 nv, _rng(seed, profile, si, _STREAM_DURATION))
    stretch = factors.video_stretch
    if stretch != 1.0:
        durations = np.round(durations * stretch, 2)
    num_frames = np.maximum(1, np.round(durations * profile.frames_per_second)).astype(np.int64)
    qpv = quota_sample(profile.queries_per_video_train if train else profile.queries_per_video,
                       nv, _rng(seed, profile, si, _STREAM_QPV))
    query_video = np.repeat(np.arange(nv, dtype=np.int64), qpv)        # (Nq,)
    nq = query_video.size
    k = np.arange(nq) - np.repeat(np.cumsum(qpv) - qpv, qpv)            # 0-based within video
    cap_ids = [f"{video_ids[v]}#enc#{j}" for v, j in zip(query_video.tolist(), k.tolist())]
    rng = _rng(seed, profile, si, _STREAM_MV)
    mv_target = sample_mv(profile, nq, rng)
    if stretch != 1.0:
        mv_target = mv_target / stretch                                  # moments keep their length
    dur_q = durations[query_video]
    ts = _place_moments(profile, mv_target, dur_q, rng)
    mv = np.round(np.clip((np.minimum(ts[:, 1], dur_q) - np.maximum(ts[:, 0], 0)) / dur_q, 0, 1), 6)
    nf_q = num_frames[query_video]
    frame_start = np.clip(np.floor(ts[:, 0] / dur_q * nf_q), 0, nf_q - 1).astype(np.int64)
    frame_end = np.clip(np.ceil(ts[:, 1] / dur_q * nf_q), frame_start + 1, nf_q).astype(np.int64)
    rng = _rng(seed, profile, si, _STREAM_WORDS)
    words = quota_sample(profile.words, nq, rng)
    tokens = words + 2 + rng.binomial(words, SUBWORD_RATE)   # <s> words </s>
    return SplitPlan(split, video_ids, durations, num_frames, cap_ids, query_video, ts, mv,
                     frame_start, frame_end, words, tokens)


def plan_collection(profile: str | Profile, scale: str, seed: int,
                    factors: DiagnosticFactors = NO_FACTORS) -> CollectionPlan:
    """Annotations of all three splits; val and test hold separate videos."""
    prof = get_profile(profile) if isinstance(profile, str) else profile
    sizes = split_videos(prof, scale)
    ids = make_video_ids(prof, sum(sizes.values()), _rng(seed, prof, _MODEL_SPLIT, _STREAM_IDS))
    plan = CollectionPlan(prof, scale, seed, factors=factors)
    offset = 0
    for split in SPLITS:
        plan.splits[split] = plan_split(prof, split, ids[offset: offset + sizes[split]], seed,
                                        factors)
        offset += sizes[split]
    return plan


# --------------------------------------------------------------------------- latent model

def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@dataclass
class LatentModel:
    """Collection-wide random parameters (shared by all splits, drawn from the seed)."""

    prototypes: np.ndarray      # (P, K) unit
    video_w1: np.ndarray        # (K, H)
    video_b1: np.ndarray        # (H,)
    video_w2: np.ndarray        # (H, d_v)
    video_b2: np.ndarray        # (d_v,)
    query_w1: np.ndarray        # (K, H)
    query_b1: np.ndarray        # (H,)
    query_w2: np.ndarray        # (H, d_q)
    query_b2: np.ndarray        # (d_q,)
    teacher_proj: np.ndarray    # (K, d_t), one projection for text and frames
    fillers: np.ndarray         # (n_filler + 2, K) unit; the last two are <s> and </s>

    @classmethod
    def draw(cls, profile: Profile, seed: int, cfg: SignalConfig) -> "LatentModel":
        rng = _rng(seed, profile, _MODEL_SPLIT, _STREAM_LATENT)
        k, h = cfg.latent_dim, cfg.mlp_hidden

        def mlp(out_dim):
            return (rng.normal(0, cfg.mlp_gain, (k, h)), rng.normal(0, 0.3, h),
                    rng.normal(0, 1 / np.sqrt(h), (h, out_dim)), rng.normal(0, 0.3, out_dim))

        protos = _unit(rng.normal(size=(cfg.prototypes, k)))
        vw1, vb1, vw2, vb2 = mlp(profile.video_dim)
        qw1, qb1, qw2, qb2 = mlp(profile.query_dim)
        proj = rng.normal(0, 1 / np.sqrt(k), (k, profile.teacher_dim))
        fillers = _unit(rng.normal(size=(cfg.filler_words + 2, k)))
        f32 = lambda a: a.astype(np.float32)  # noqa: E731
        return cls(f32(protos), f32(vw1), f32(vb1), f32(vw2), f32(vb2), f32(qw1), f32(qb1),
                   f32(qw2), f32(qb2), f32(proj), f32(fillers))


def _events(n: int, model: LatentModel, cfg: SignalConfig, rng: np.random.Generator) -> np.ndarray:
    """Unit event latents: prototype mix plus a unique direction. Shapes: -> (n, K)."""
    proto = model.prototypes[rng.integers(0, model.prototypes.shape[0], size=n)]
    unique = _unit(rng.normal(size=(n, cfg.latent_dim))).astype(np.float32)
    w = cfg.prototype_weight
    return _unit(w * proto + np.sqrt(1 - w * w) * unique).astype(np.float32)


@dataclass
class SplitLatents:
    query: np.ndarray           # (Nq, K) event latent of each query
    frames: np.ndarray          # (F, K) frame latents, videos concatenated in split order


def moment_part_masks(latent_dim: int, parts: int) -> np.ndarray:
    """m disjoint contiguous groups of the K coordinates, scaled by √m. Shapes: -> (m, K)."""
    group = np.arange(latent_dim) * parts // latent_dim                   # (K,) group of each dim
    return (group[None, :] == np.arange(parts)[:, None]).astype(np.float32) * np.sqrt(parts)


def draw_latents(plan: SplitPlan, model: LatentModel, cfg: SignalConfig, profile: Profile,
                 seed: int, factors: DiagnosticFactors = NO_FACTORS) -> SplitLatents:
    """Query events and frame latents h_{v,t} of one split (module docstring formula); with
    ``factors.moment_parts`` m > 1, moment frame j (0-based in the moment) shows z_q on its
    part j mod m only (``moment_part_masks``)."""
    rng = _rng(seed, profile, SPLITS.index(plan.split), _STREAM_LATENT)
    nv, nq, k = plan.num_videos, plan.num_queries, cfg.latent_dim
    z = _events(nq, model, cfg, rng)                                     # (Nq, K)
    first = np.r_[True, plan.query_video[1:] != plan.query_video[:-1]]   # first query of a video
    share = (~first) & (rng.random(nq) < cfg.shared_event_prob)
    prev = np.maximum(np.arange(nq) - 1, 0)
    z = np.where(share[:, None], _unit(z + z[prev]), z).astype(np.float32)
    background = _events(nv, model, cfg, rng)                           # (Nv, K)

    frame_offset = np.cumsum(plan.num_frames) - plan.num_frames          # (Nv,)
    n_frames = int(plan.num_frames.sum())
    frame_video = np.repeat(np.arange(nv), plan.num_frames)              # (F,)

    nd = cfg.distractors_per_video
    d_video = np.repeat(np.arange(nv), nd)                               # (Nv*nd,)
    d_latent = _events(nv * nd, model, cfg, rng)
    nf_d = plan.num_frames[d_video]
    d_len = np.maximum(1, np.round(rng.uniform(*cfg.distractor_span, size=d_video.size) * nf_d))
    d_start = np.floor(rng.random(d_video.size) * (nf_d - d_len + 1)).astype(np.int64)
    d_end = (d_start + d_len).astype(np.int64)

    def covered(video, start, end):
        """(frame row, event, position in the event) of every frame an event covers."""
        count = end - start
        event = np.repeat(np.arange(count.size), count)
        within = np.arange(event.size) - np.repeat(np.cumsum(count) - count, count)
        return frame_offset[video][event] + start[event] + within, event, within

    def membership(video, start, end):
        """Sparse (F, n_events) 0/1 matrix: event j covers frames [start_j, end_j) of its video."""
        rows, event, _ = covered(video, start, end)
        return sparse.csr_matrix((np.ones(event.size, np.float32), (rows, event)),
                                 shape=(n_frames, end.size))

    h = cfg.background_weight * background[frame_video]                 # (F, K)
    if factors.moment_parts == 1:
        h += membership(plan.query_video, plan.frame_start, plan.frame_end) @ z
    else:
        rows, event, within = covered(plan.query_video, plan.frame_start, plan.frame_end)
        masks = moment_part_masks(k, factors.moment_parts)               # (m, K)
        np.add.at(h, rows, z[event] * masks[within % factors.moment_parts])   # (n_cov, K) parts
    h += cfg.distractor_weight * (membership(d_video, d_start, d_end) @ d_latent)
    h += (cfg.frame_noise / np.sqrt(k)) * rng.standard_normal((n_frames, k), dtype=np.float32)
    return SplitLatents(z, h.astype(np.float32))


def _mlp(x: np.ndarray, w1, b1, w2, b2) -> np.ndarray:
    return np.tanh(x @ w1 + b1) @ w2 + b2


def student_frames(h: np.ndarray, model: LatentModel, cfg: SignalConfig,
                   rng: np.random.Generator) -> np.ndarray:
    """Student video features (non-linear noisy view). Shapes: h (n, K) -> (n, d_v) float32."""
    x = _mlp(h, model.video_w1, model.video_b1, model.video_w2, model.video_b2)
    x += cfg.student_video_noise * rng.standard_normal(x.shape, dtype=np.float32)
    return x.astype(np.float32, copy=False)


def teacher_frames(h: np.ndarray, model: LatentModel, cfg: SignalConfig,
                   rng: np.random.Generator, time_noise: float = 0.0,
                   time_rng: np.random.Generator | None = None) -> np.ndarray:
    """CLIP-like frame features G = s_v (h + σ_tv ε + σ_time η) P; the η term (teacher-only,
    independent per frame, its own stream ``time_rng``) only when ``time_noise`` > 0.
    Shapes: h (n, K) -> (n, d_t) float32."""
    noisy = h + (cfg.teacher_frame_noise / np.sqrt(cfg.latent_dim)) * rng.standard_normal(
        h.shape, dtype=np.float32)
    if time_noise > 0.0:
        if time_rng is None:
            raise GenerationError("teacher_time_noise > 0 needs its own random stream")
        noisy = noisy + (time_noise / np.sqrt(cfg.latent_dim)) * time_rng.standard_normal(
            h.shape, dtype=np.float32)
    return (cfg.teacher_frame_scale * (noisy @ model.teacher_proj)).astype(np.float32)


def teacher_text(z: np.ndarray, model: LatentModel, cfg: SignalConfig,
                 rng: np.random.Generator) -> np.ndarray:
    """CLIP-like text features c = s_t (z + σ_tq ε) P. Shapes: z (n, K) -> (n, d_t) float32."""
    noisy = z + (cfg.teacher_text_noise / np.sqrt(cfg.latent_dim)) * rng.standard_normal(
        z.shape, dtype=np.float32)
    return (cfg.teacher_text_scale * (noisy @ model.teacher_proj)).astype(np.float32)


def phrase_layout(tokens: np.ndarray, phrases: int, bank: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split each query's inner tokens into min(P, L - 2) contiguous phrases; pick the relevant
    phrase and a bank event for every other phrase.

    Returns ``phrase`` (Σ L,) the phrase of each token (-1 for <s> and </s>), ``relevant`` (n,)
    the relevant phrase of each query, ``source`` (Σ L,) the bank event behind each token (-1
    where the token describes the query's own event or is a marker).
    """
    n_tok = int(tokens.sum())
    query = np.repeat(np.arange(tokens.size), tokens)                    # (Σ L,)
    pos = np.arange(n_tok) - np.repeat(np.cumsum(tokens) - tokens, tokens)
    inner = tokens - 2                                                   # (n,) ≥ 1
    count = np.minimum(phrases, inner)                                   # (n,) phrases per query
    inside = (pos > 0) & (pos < tokens[query] - 1)
    phrase = np.where(inside, (pos - 1) * count[query] // np.maximum(inner[query], 1), -1)
    relevant = np.floor(rng.random(tokens.size) * count).astype(np.int64)   # (n,)
    events = rng.integers(0, bank, size=(tokens.size, phrases))          # (n, P) bank draws
    source = np.where(inside & (phrase != relevant[query]),
                      events[query, np.maximum(phrase, 0)], -1)
    return phrase, relevant, source


def student_tokens(z: np.ndarray, tokens: np.ndarray, model: LatentModel, cfg: SignalConfig,
                   rng: np.random.Generator, bank: np.ndarray | None = None,
                   source: np.ndarray | None = None) -> np.ndarray:
    """RoBERTa-like token features of a block of queries, concatenated. With a phrase ``bank``
    (B, K) and ``source`` (Σ L,) from ``phrase_layout``, tokens whose source is a bank event
    describe that event (content) or carry its context (filler) instead of z_q's.

    Shapes: z (n, K), tokens (n,) -> (sum(tokens), d_q) float32.
    """
    n_tok = int(tokens.sum())
    query = np.repeat(np.arange(z.shape[0]), tokens)                     # (n_tok,)
    pos = np.arange(n_tok) - np.repeat(np.cumsum(tokens) - tokens, tokens)
    last = pos == tokens[query] - 1
    content = (rng.random(n_tok) < cfg.content_token_share) | (pos == 1)  # ≥ 1 content token
    content &= (pos > 0) & ~last
    n_fill = cfg.filler_words
    filler = rng.integers(0, n_fill, size=n_tok)
    filler = np.where(pos == 0, n_fill, np.where(last, n_fill + 1, filler))
    zq = z[query]                                                        # (n_tok, K)
    if bank is not None and source is not None:
        zq = np.where((source >= 0)[:, None], bank[np.maximum(source, 0)], zq)   # phrase events
    u = np.where(content[:, None], zq, model.fillers[filler] + cfg.context_weight * zq)
    u = u + (cfg.token_noise / np.sqrt(cfg.latent_dim)) * rng.standard_normal(u.shape, dtype=np.float32)
    y = _mlp(u.astype(np.float32), model.query_w1, model.query_b1, model.query_w2, model.query_b2)
    y += cfg.student_query_noise * rng.standard_normal(y.shape, dtype=np.float32)
    return y.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- text

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "po", "si", "de", "fa", "gu", "ho", "ji", "be",
              "vo", "za", "ly", "qu", "wi", "xe")
_FILLER_TEXT = ("the", "a", "to", "and", "his", "her", "of", "in", "on", "with", "at", "while",
                "then", "is", "up", "from", "as", "by", "their", "an")


def _caption_texts(plan: SplitPlan, profile: Profile, rng: np.random.Generator) -> list[str]:
    """Pseudo-English captions with the planned word counts (text is not a model input)."""
    vocab = np.array([a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in ("", "n", "s")])
    n_words = int(plan.words.sum())
    content = rng.random(n_words) < 0.5
    words = np.where(content, vocab[rng.integers(0, vocab.size, n_words)],
                     np.array(_FILLER_TEXT)[rng.integers(0, len(_FILLER_TEXT), n_words)])
    bounds = np.cumsum(plan.words)[:-1]
    trailing = rng.random(plan.num_queries) < (0.134 if profile.name == "tvr" else 0.0)
    texts = []
    for chunk, pad in zip(np.split(words, bounds), trailing):
        sentence = " ".join(chunk.tolist())
        if profile.name != "charades":                    # Charades captions are normalised
            sentence = sentence[0].upper() + sentence[1:] + "."
        texts.append(sentence + (" " if pad else ""))     # TVR keeps trailing spaces (§5.2)
    return texts


# --------------------------------------------------------------------------- anomalies

def _float_noise(x: np.ndarray) -> np.ndarray:
    """x·(1 + 2^-52): prints like the real ``90.71000000000001`` (docs/datasets.md §1)."""
    return x * (1.0 + 2.0 ** -52)


def annotation_rows(plan: SplitPlan, profile: Profile, seed: int, anomalies: bool
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The (ts, per-query duration) written to ``<c>_moments.jsonl``, with optional anomalies.

    With ``anomalies`` the real quirks of docs/datasets.md §5.5 are injected into the written
    annotations only (features follow the clean spans): float-noisy durations and times,
    Charades overruns past T (≤ 1.5 s), ActivityNet ends 0.01 s past T, and in train one swapped
    span, one zero-length span and (Charades) one span starting after T.

    Shapes: ts (Nq, 2), durations (Nq,); counts per anomaly kind.
    """
    ts = plan.ts.copy()
    dur_v = plan.durations.copy()
    counts: dict[str, int] = {}
    if anomalies:
        rng = _rng(seed, profile, SPLITS.index(plan.split), _STREAM_ANOMALY)
        nq = plan.num_queries
        if profile.name in ("tvr", "activitynet"):
            noisy = rng.random(dur_v.size) < 0.05
            dur_v = np.where(noisy, _float_noise(dur_v), dur_v)
            counts["float_noise_durations"] = int(noisy.sum())
            noisy_t = rng.random(ts.shape) < 0.003
            ts = np.where(noisy_t, _float_noise(ts), ts)
            counts["float_noise_times"] = int(noisy_t.sum())
        dur_q = dur_v[plan.query_video]
        at_end = np.isclose(ts[:, 1], dur_q) & (plan.mv < 1.0)
        if profile.name == "charades":
            over = np.round(rng.uniform(0.05, 1.5, size=nq), 2)
            ts[:, 1] = np.where(at_end, ts[:, 1] + over, ts[:, 1])
            counts["overrun"] = int(at_end.sum())
        elif profile.name == "activitynet":
            bump = at_end & (rng.random(nq) < 0.01)
            ts[:, 1] = np.where(bump, ts[:, 1] + 0.01, ts[:, 1])
            counts["overrun"] = int(bump.sum())
        if plan.split == "train" and nq >= 3:
            pick = rng.choice(nq, size=3, replace=False)
            ts[pick[0]] = ts[pick[0]][::-1]
            ts[pick[1], 1] = ts[pick[1], 0]
            counts["swapped"], counts["zero_length"] = 1, 1
            if profile.name == "charades":
                d = dur_q[pick[2]]
                ts[pick[2]] = [np.round(d + 1.0, 2), np.round(d + 0.5, 2)]   # swapped and past T
                counts["start_after_end"] = 1
    return ts, dur_v[plan.query_video], counts


# --------------------------------------------------------------------------- writing

def _video_chunks(num_frames: np.ndarray, target: int) -> list[tuple[int, int]]:
    """Consecutive video ranges [a, b) of about ``target`` frames each (at least one video)."""
    ends = np.cumsum(num_frames)
    chunks, a = [], 0
    while a < num_frames.size:
        b = int(np.searchsorted(ends, ends[a] - num_frames[a] + target, side="right"))
        b = max(b, a + 1)
        chunks.append((a, b))
        a = b
    return chunks


def _write_text_files(layout: Layout, plan: CollectionPlan, anomalies: bool) -> dict[str, dict]:
    layout.text_dir.mkdir(parents=True, exist_ok=True)
    prof, summary = plan.profile, {}
    with open(layout.moments, "w", encoding="utf-8", newline="\n") as moments:
        for split in SPLITS:
            sp = plan.splits[split]
            texts = _caption_texts(sp, prof, _rng(plan.seed, prof, SPLITS.index(split), _STREAM_TEXT))
            with open(layout.caption_file(split), "w", encoding="utf-8", newline="\n") as f:
                f.writelines(f"{cid} {text}\n" for cid, text in zip(sp.cap_ids, texts))
            ts, dur, counts = annotation_rows(sp, prof, plan.seed, anomalies)
            vids = [sp.video_ids[v] for v in sp.query_video.tolist()]
            moments.writelines(
                json.dumps({"cap_id": c, "video_id": v, "ts": [float(a), float(b)],
                            "duration": float(d)}) + "\n"
                for c, v, (a, b), d in zip(sp.cap_ids, vids, ts.tolist(), dur.tolist()))
            summary[split] = {"videos": sp.num_videos, "queries": sp.num_queries,
                              "frames": int(sp.num_frames.sum())}
            if anomalies:
                summary[split]["anomalies"] = counts
    return summary


def phrase_bank(plan: CollectionPlan, model: LatentModel, cfg: SignalConfig) -> np.ndarray | None:
    """The distractor phrase events (B, K) of ``plan.factors`` (own stream), or None when off."""
    f = plan.factors
    if f.query_phrases == 1:
        return None
    return _events(f.phrase_bank, model, cfg, _rng(plan.seed, plan.profile, _MODEL_SPLIT, _STREAM_PHRASES))


def _teacher_frames_of(plan: CollectionPlan, h: np.ndarray, model: LatentModel, cfg: SignalConfig,
                       si: int, ci: int) -> np.ndarray:
    """teacher_frames of chunk ``ci`` of split ``si`` with the factors' time noise (if any)."""
    sigma = plan.factors.teacher_time_noise
    time_rng = _rng(plan.seed, plan.profile, si, _STREAM_TEACHER_TIME, ci) if sigma > 0 else None
    return teacher_frames(h, model, cfg, _rng(plan.seed, plan.profile, si, _STREAM_TEACHER_FRAMES, ci),
                          sigma, time_rng)


#: ``progress(stage, done, total)``: ``done`` of ``total`` write chunks of the whole collection
#: are written, the last one in ``stage`` (e.g. "train frames"); it only observes.
GenerationProgress = Callable[[str, int, int], None]


def write_collection(plan: CollectionPlan, collection_dir: Path, *, anomalies: bool = False,
                     signal: SignalConfig = SignalConfig(),
                     progress: GenerationProgress | None = None) -> None:
    """Write every file of the MS-SL layout for ``plan`` under ``collection_dir`` (= root/<c>).

    ``progress`` is told after the text files and after each feature chunk; it does not
    change a byte of the output."""
    prof, seed = plan.profile, plan.seed
    layout = Layout.resolve(collection_dir.parent, collection_dir.name, prof.visual_feature)
    model = LatentModel.draw(prof, seed, signal)
    bank = phrase_bank(plan, model, signal)
    summary = _write_text_files(layout, plan, anomalies)
    layout.bigfile_dir.mkdir(parents=True, exist_ok=True)
    total_frames = sum(int(sp.num_frames.sum()) for sp in plan.splits.values())
    total_chunks = 1 + sum(len(_video_chunks(sp.num_frames, FRAME_CHUNK))
                           + -(-sp.num_queries // QUERY_CHUNK) for sp in plan.splits.values())
    done = 1
    tell: GenerationProgress = progress if progress is not None else (lambda *_: None)
    tell("text files", done, total_chunks)

    with open(layout.bigfile_dir / "feature.bin", "wb") as bin_f, \
            open(layout.bigfile_dir / "id.txt", "w", encoding="iso-8859-1", newline="\n") as id_f, \
            open(layout.bigfile_dir / "video2frames.txt", "w", encoding="iso-8859-1") as v2f, \
            h5py.File(layout.teacher_video_features, "w") as teacher_v, \
            h5py.File(layout.query_features, "w") as roberta, \
            h5py.File(layout.teacher_query_features, "w") as teacher_q:
        v2f.write("{")
        first_video = True
        for split in SPLITS:
            sp = plan.splits[split]
            si = SPLITS.index(split)
            latents = draw_latents(sp, model, signal, prof, seed, plan.factors)
            offsets = np.concatenate([[0], np.cumsum(sp.num_frames)])
            for ci, (a, b) in enumerate(_video_chunks(sp.num_frames, FRAME_CHUNK)):
                h = latents.frames[offsets[a]: offsets[b]]                   # (n, K)
                student_frames(h, model, signal, _rng(seed, prof, si, _STREAM_FRAMES, ci)).tofile(bin_f)
                g = _teacher_frames_of(plan, h, model, signal, si, ci)
                names = []
                for v in range(a, b):
                    vid = sp.video_ids[v]
                    frames = [f"{vid}_{i}" for i in range(int(sp.num_frames[v]))]
                    names.extend(frames)
                    v2f.write(("" if first_video else ", ") + f"{vid!r}: {frames!r}")
                    first_video = False
                    teacher_rows = g[offsets[v] - offsets[a]: offsets[v + 1] - offsets[a]]
                    teacher_v.create_dataset(vid, data=teacher_rows, track_times=False)
                id_f.write(" ".join(names) + " ")
                done += 1
                tell(f"{split} frames", done, total_chunks)
            for ci, a in enumerate(range(0, sp.num_queries, QUERY_CHUNK)):
                b = min(a + QUERY_CHUNK, sp.num_queries)
                tok = sp.tokens[a:b]
                source = None
                if bank is not None:
                    _, _, source = phrase_layout(tok, plan.factors.query_phrases, bank.shape[0],
                                                 _rng(seed, prof, si, _STREAM_PHRASES, ci))
                y = student_tokens(latents.query[a:b], tok, model, signal,
                                   _rng(seed, prof, si, _STREAM_TOKENS, ci), bank, source)  # (Σ L, d_q)
                c = teacher_text(latents.query[a:b], model, signal,
                                 _rng(seed, prof, si, _STREAM_TEACHER_TEXT, ci))  # (n, d_t)
                for j, block in enumerate(np.split(y, np.cumsum(tok)[:-1])):
                    roberta.create_dataset(sp.cap_ids[a + j], data=block, track_times=False)
                    teacher_q.create_dataset(sp.cap_ids[a + j], data=c[j: j + 1], track_times=False)
                done += 1
                tell(f"{split} queries", done, total_chunks)
        v2f.write("}")
    (layout.bigfile_dir / "shape.txt").write_text(f"{total_frames} {prof.video_dim}")
    marker = {
        "generator": "prvr-bench synthetic",
        "generator_version": GENERATOR_VERSION,
        "profile": prof.name,
        "scale": plan.scale,
        "seed": seed,
        "anomalies": anomalies,
        "visual_feature": prof.visual_feature,
        "dims": {"query": prof.query_dim, "video": prof.video_dim, "teacher": prof.teacher_dim},
        "frames_per_second": prof.frames_per_second,
        "signal": asdict(signal),
        "splits": summary,
    }
    if not plan.factors.off:                 # absent when off: today's marker byte for byte
        marker["factors"] = asdict(plan.factors)
    layout.synthetic_marker.write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")


def teacher_features(plan: CollectionPlan, split: str, signal: SignalConfig = SignalConfig()
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The CLIP-like teacher features of one split, bit-identical to what ``write_collection``
    stores, computed in memory (same latents, chunks and random streams) without writing the
    student features. For tests and analyses at tiny/small scale.

    Shapes: -> text (Nq, d_t), frames (F, d_t) with videos concatenated in split order.
    """
    prof, seed, sp = plan.profile, plan.seed, plan.splits[split]
    si = SPLITS.index(split)
    model = LatentModel.draw(prof, seed, signal)
    latents = draw_latents(sp, model, signal, prof, seed, plan.factors)
    offsets = np.concatenate([[0], np.cumsum(sp.num_frames)])
    frames = [_teacher_frames_of(plan, latents.frames[offsets[a]: offsets[b]], model, signal, si, ci)
              for ci, (a, b) in enumerate(_video_chunks(sp.num_frames, FRAME_CHUNK))]
    text = [teacher_text(latents.query[a: a + QUERY_CHUNK], model, signal,
                         _rng(seed, prof, si, _STREAM_TEACHER_TEXT, ci))
            for ci, a in enumerate(range(0, sp.num_queries, QUERY_CHUNK))]
    empty = np.zeros((0, prof.teacher_dim), np.float32)
    return (np.concatenate(text) if text else empty), (np.concatenate(frames) if frames else empty)


def generate(profile: str, scale: str, seed: int, out: str | Path, *, anomalies: bool = False,
             overwrite: bool = False, signal: SignalConfig = SignalConfig(),
             factors: DiagnosticFactors = NO_FACTORS,
             progress: GenerationProgress | None = None) -> Path:
    """Generate ``out/<profile>/`` (atomically: written to a sibling temp dir, then renamed).

    Returns the collection directory. An existing collection is an error unless ``overwrite``.
    ``factors`` plants the diagnostic factors (module docstring); off, nothing changes.
    ``progress(stage, done, total)`` observes the writing (``write_collection``).
    """
    prof = get_profile(profile)
    plan = plan_collection(prof, scale, seed, factors)
    out = Path(out)
    target = out / prof.name
    if target.exists() and not overwrite:
        raise GenerationError(f"{target} already exists; pass overwrite=True (--overwrite) to "
                              f"replace it")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{prof.name}.", dir=out))
    try:
        write_collection(plan, tmp / prof.name, anomalies=anomalies, signal=signal,
                         progress=progress)
        if target.exists():
            if not overwrite:       # another process finished the same collection meanwhile
                raise GenerationError(f"{target} appeared while generating; keeping it")
            os.replace(target, tmp / "previous")
        try:
            os.replace(tmp / prof.name, target)
        except OSError as err:      # lost a race against a concurrent writer
            raise GenerationError(f"{target} could not be moved into place: {err}") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
