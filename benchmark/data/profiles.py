"""Synthetic dataset profiles (tvr, activitynet, charades) and their scales (tiny, small, full).

Every number here is copied from docs/datasets.md (section named next to it) and describes the
*real* test split (train rows where §4 has them), so that a generated collection has the shape
of the real one: queries per video, video durations, M/V (moment / video) distribution, where a
moment sits in its video, and query lengths. Nothing in this module reads the shared annotation
files at run time.

Distributions are stored in the form the generator samples from:

* discrete distributions (queries per video, words per query) as ``((value, weight), ...)``;
  the generator assigns them by quota with largest-remainder rounding, so a split of n items
  holds each value within one item of its expected count;
* video durations as nine quantile knots (min, p1, p5, p25, p50, p75, p95, p99, max) for a
  piecewise-linear inverse CDF;
* M/V as the counts of the ten width-0.1 right-closed bins (§4.6), the count of M/V exactly 1,
  and the quantiles of §4.4, merged into one piecewise-linear CDF (see ``mv_cdf_knots``).

Frame rates are **assumptions** (the MS-SL feature packages were not inspected): TVR
``i3d_resnet`` ~1 feature per 1.5 s, ActivityNet ``i3d`` 1 per 2 s, Charades ``i3d_rgb_lgi``
1.5 per s (16-frame I3D windows at 24 fps ≈ 0.67 s). The loader resamples long videos to 128
frames anyway (docs/methods.md §1.3).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.errors import PRVRBenchError
from benchmark.mv import DEFAULT_MV_EDGES

SCALES = ("tiny", "small", "full")
PROFILES = ("tvr", "activitynet", "charades")

#: Fixed edges of the five M/V bins (docs/datasets.md §1, right-closed).
MV_EDGES_5 = DEFAULT_MV_EDGES
#: Quantile levels of the duration knots. p1 and p99 are not in docs/datasets.md §4.2; they were
#: derived once from the same annotation files (durations per video) so that the long upper
#: tail (e.g. ActivityNet p95 225 s, max 745 s) does not inflate the mean.
DURATION_LEVELS = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
#: Quantile levels of the M/V summary of docs/datasets.md §4.4 (min, p5, ..., max).
MV_LEVELS = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


@dataclass(frozen=True)
class Profile:
    """Shape of one real PRVR collection, as the synthetic generator needs it.

    ``*_train`` fields describe the train split, the others the test split (also used for val).
    """

    name: str
    visual_feature: str
    video_dim: int                     # d_v
    query_dim: int                     # d_q (RoBERTa)
    teacher_dim: int                   # d_t (CLIP ViT-B/32)
    frames_per_second: float           # assumed student feature rate (module docstring)
    full_videos: tuple[int, int, int]  # (train, val, test) videos at scale "full"
    queries_per_video: tuple[tuple[int, float], ...]
    queries_per_video_train: tuple[tuple[int, float], ...]
    duration_knots: tuple[float, ...]        # seconds at DURATION_LEVELS
    duration_knots_train: tuple[float, ...]
    mv_bin10_counts: tuple[int, ...]   # counts in (0,.1], (.1,.2], ..., (.9,1]
    mv_one_count: int                  # queries with M/V exactly 1 (6-decimal rule), inside bin 10
    mv_quantiles: tuple[float, ...]    # M/V at MV_LEVELS (min, p5, ..., max)
    start_at_zero: float               # share of queries starting at 0 (§4.7)
    end_at_duration: float             # share of queries ending at T (§4.7)
    words: tuple[tuple[int, float], ...]   # query word-count distribution (§4.8)

    @property
    def mv_bin10_shares(self) -> np.ndarray:
        counts = np.asarray(self.mv_bin10_counts, dtype=np.float64)
        return counts / counts.sum()

    @property
    def mv_bin5_shares(self) -> np.ndarray:
        """Shares of the five 0.2 bins (docs/datasets.md §4.5), sums of the 0.1 bins."""
        return self.mv_bin10_shares.reshape(5, 2).sum(axis=1)

    @property
    def mv_one_share(self) -> float:
        return self.mv_one_count / float(sum(self.mv_bin10_counts))

    def mv_cdf_knots(self) -> tuple[np.ndarray, np.ndarray]:
        """Knots ``(x, F)`` of a piecewise-linear CDF of the continuous part of M/V.

        The 0.1-bin edges are authoritative (the generator assigns bins by quota); the §4.4
        quantiles refine the shape inside a bin and are kept only where they are consistent
        with the bin shares. The point mass at exactly 1 is excluded: F reaches
        ``1 - mv_one_share`` at the last continuous knot. Knots whose F does not increase are
        dropped, so ``np.interp(u, F, x)`` is a valid inverse CDF.

        Shapes: x (n_knots,), F (n_knots,), both increasing.
        """
        shares = self.mv_bin10_shares
        edge_x = np.round(np.arange(11) / 10.0, 6)
        edge_f = np.concatenate([[0.0], np.cumsum(shares)])
        edge_f[-1] = 1.0
        mv_min, mv_max = self.mv_quantiles[0], self.mv_quantiles[-1]
        knots: list[tuple[float, float]] = [(mv_min, 0.0)]
        for x, f in zip(edge_x[1:], edge_f[1:]):
            if mv_min < x < mv_max:
                knots.append((float(x), float(f)))
        for level, x in zip(MV_LEVELS[1:-1], self.mv_quantiles[1:-1]):
            bin_index = min(int(np.ceil(x * 10.0 - 1e-9)) - 1, 9)
            if edge_f[bin_index] <= level <= edge_f[bin_index + 1]:
                knots.append((float(x), float(level)))
        top = 1.0 - self.mv_one_share
        knots.append((mv_max, top if mv_max >= 1.0 else 1.0))
        knots.sort()
        xs, fs = [knots[0][0]], [knots[0][1]]
        for x, f in knots[1:]:
            if x > xs[-1] and f > fs[-1]:
                xs.append(x)
                fs.append(f)
        return np.asarray(xs), np.asarray(fs)


def _pmf(counts: dict[int, float]) -> tuple[tuple[int, float], ...]:
    total = float(sum(counts.values()))
    return tuple((int(k), v / total) for k, v in sorted(counts.items()))


def _word_pmf(listed: dict[int, float], min_words: int, max_words: int,
              over_30: float) -> tuple[tuple[int, float], ...]:
    """Word-count distribution from the §4.8 share list.

    The listed shares (words with share ≥ 0.5 %) are kept; the missing mass below 31 words is
    spread evenly over the unlisted counts in ``[min_words, 30]``; the ``over_30`` share
    (queries longer than 30 words, §4.8) decays geometrically from 31 to ``max_words``.
    """
    pmf = dict(listed)
    top = min(30, max_words)
    gaps = [w for w in range(min_words, top + 1) if w not in pmf]
    rest = 1.0 - sum(listed.values()) - over_30
    if gaps and rest > 0:
        for w in gaps:
            pmf[w] = rest / len(gaps)
    if over_30 > 0:
        tail = np.arange(31, max_words + 1)
        decay = 0.88 ** (tail - 31)                  # geometric tail; max at max_words
        decay = decay / decay.sum() * over_30
        for w, p in zip(tail, decay):
            pmf[int(w)] = float(p)
    return _pmf(pmf)


# ref: docs/datasets.md §4.1, §4.2, §4.4, §4.6, §4.7, §4.8, §8 (test splits unless *_train).
TVR = Profile(
    name="tvr",
    visual_feature="i3d_resnet",
    video_dim=3072,
    query_dim=768,
    teacher_dim=512,
    frames_per_second=1.0 / 1.5,
    full_videos=(17435, 2179, 2179),
    queries_per_video=((5, 1.0),),
    queries_per_video_train=((5, 1.0),),
    duration_knots=(8.0, 44.8, 56.0, 60.2, 69.0, 90.4, 96.0, 129.2, 184.0),
    duration_knots_train=(2.0, 43.0, 56.0, 60.3, 77.0, 90.5, 97.0, 131.3, 272.0),
    mv_bin10_counts=(7262, 2036, 667, 333, 218, 102, 72, 56, 42, 107),
    mv_one_count=43,
    mv_quantiles=(0.0049, 0.020, 0.044, 0.070, 0.130, 0.425, 1.0),
    start_at_zero=0.149,
    end_at_duration=0.070,
    words=_word_pmf({8: .088, 9: .131, 10: .163, 11: .142, 12: .116, 13: .094, 14: .069,
                     15: .052, 16: .036, 17: .026, 18: .017, 19: .012, 20: .011, 21: .006,
                     22: .006, 23: .006}, min_words=7, max_words=92, over_30=78 / 10895),
)

ACTIVITYNET = Profile(
    name="activitynet",
    visual_feature="i3d",
    video_dim=1024,
    query_dim=1024,
    teacher_dim=512,
    frames_per_second=0.5,
    # PRVR train subset size from the MS-SL readme (§3); val = test size, separate videos.
    full_videos=(9043, 4430, 4430),
    queries_per_video=_pmf({2: 910, 3: 1964, 4: 797, 5: 327, 6: 166, 7: 119, 8: 68, 9: 28,
                            10: 17, 11: 13, 12: 12, 13: 4, 15: 3, 18: 1, 21: 1}),
    # §4.1 lists "11+: 117" for train; spread here over 11..27 with the test tail's shape.
    queries_per_video_train=_pmf({2: 1936, 3: 4125, 4: 1891, 5: 782, 6: 510, 7: 313, 8: 185,
                                  9: 84, 10: 66, 11: 40, 12: 30, 13: 15, 14: 10, 15: 8, 16: 4,
                                  17: 3, 18: 2, 19: 1, 20: 1, 21: 1, 22: 1, 27: 1}),
    duration_knots=(2.3, 7.2, 17.5, 60.2, 116.3, 175.3, 225.3, 237.2, 745.5),
    duration_knots_train=(1.6, 8.0, 18.2, 61.6, 113.9, 172.6, 224.1, 236.6, 755.1),
    mv_bin10_counts=(3839, 2875, 2296, 1692, 1500, 1104, 658, 411, 373, 1005),
    mv_one_count=494,
    mv_quantiles=(0.0049, 0.025, 0.105, 0.250, 0.475, 0.950, 1.0),
    start_at_zero=0.233,
    end_at_duration=0.219,
    words=_word_pmf({5: .019, 6: .047, 7: .072, 8: .081, 9: .080, 10: .078, 11: .070,
                     12: .064, 13: .059, 14: .056, 15: .054, 16: .053, 17: .043, 18: .039,
                     19: .033, 20: .026, 21: .025, 22: .018, 23: .013, 24: .011, 25: .010,
                     26: .009, 27: .006, 28: .005}, min_words=3, max_words=82,
                    over_30=327 / 15753),
)

CHARADES = Profile(
    name="charades",
    visual_feature="i3d_rgb_lgi",
    video_dim=1024,
    query_dim=1024,
    teacher_dim=512,
    frames_per_second=1.5,
    full_videos=(5338, 1334, 1334),   # 5,338 recomputed (§3; the readme's 5,538 is a typo)
    queries_per_video=_pmf({1: 394, 2: 316, 3: 246, 4: 163, 5: 99, 6: 52, 7: 37, 8: 15, 9: 6,
                            10: 4, 12: 2}),
    queries_per_video_train=_pmf({1: 1866, 2: 1591, 3: 940, 4: 486, 5: 263, 6: 112, 7: 48,
                                  8: 17, 9: 13, 10: 2}),
    duration_knots=(7.0, 11.1, 15.6, 27.2, 30.7, 32.7, 39.7, 47.6, 72.0),
    duration_knots_train=(5.5, 12.7, 18.3, 27.9, 30.6, 32.5, 42.9, 60.2, 194.3),
    mv_bin10_counts=(51, 1026, 1341, 772, 514, 16, 0, 0, 0, 0),
    mv_one_count=0,
    # max 0.503 (test): the "cap near 0.51" of §8 keeps the upper two bins empty.
    mv_quantiles=(0.034, 0.132, 0.191, 0.256, 0.345, 0.460, 0.503),
    start_at_zero=0.212,
    end_at_duration=0.151,
    words=_word_pmf({3: .045, 4: .155, 5: .204, 6: .189, 7: .143, 8: .107, 9: .093, 10: .062},
                    min_words=2, max_words=11, over_30=0.0),
)

_BY_NAME = {p.name: p for p in (TVR, ACTIVITYNET, CHARADES)}

#: (train, val, test) videos of the reduced scales; the same for every profile.
#: tiny: a test fixture generated in seconds; small: the sweep default (epochs of seconds).
SCALE_VIDEOS = {"tiny": (40, 16, 16), "small": (500, 200, 200)}


class ProfileError(PRVRBenchError, ValueError):
    """Unknown profile or scale name."""


def get_profile(name: str) -> Profile:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ProfileError(f"unknown synthetic profile {name!r}; known: {sorted(_BY_NAME)}") from None


def split_videos(profile: Profile, scale: str) -> dict[str, int]:
    """Number of videos per split (train, val, test) of ``profile`` at ``scale``."""
    if scale == "full":
        sizes = profile.full_videos
    elif scale in SCALE_VIDEOS:
        sizes = SCALE_VIDEOS[scale]
    else:
        raise ProfileError(f"unknown synthetic scale {scale!r}; known: {list(SCALES)}")
    return dict(zip(("train", "val", "test"), sizes))
