"""``load_split``: one split of an MS-SL-layout collection, checked and preprocessed.

Every input check runs here, before any training step (docs/architecture.md): missing files,
cap_ids without query features, videos without frames, frame ids missing from ``id.txt``,
NaN/Inf in any feature the split uses, dimension mismatches between files, teacher/student
length mismatches and unknown requirement names. Each raises :class:`DataError` naming the
file and the key.

Preprocessing is docs/methods.md §1.3:

* student frames: [``teacher_length``: resample to the teacher length (step 4)] ->
  ``uniform_feature_sampling(·, max_frames)`` -> L2 (step 1);
* clips (``clips``): ``average_to_fixed_length(raw, num_clips)`` -> L2 (step 2);
* query tokens: L2 per token, then the first ``max_query_tokens`` (step 3);
* teacher (``teacher``): CLIP frames get step 1 without normalisation; a teacher sequence
  longer than the student's is binned down to the student length with the same rule
  (§6.8 item 6), or, with ``teacher_first_n``, keeps its first n frames as the DL-DKD ICCV
  collate does (§1.3 step 5); a shorter one is an error naming the video. CLIP text stays raw
  (1, d_t).

Memory is bounded by a budget, not by the collection: each store keeps the preprocessed arrays
of its leading videos (queries) that fit what is left of the ``CacheBudget`` (shared by the
splits of a run, first come, first served), and prepares every other item from the memmap /
HDF5 files when a batch asks for it. Preparation is per item (row-wise binning and
normalisation), so a cached and a freshly prepared item are bit-identical: the budget never
changes a result, only where the work happens. Value checks (NaN/Inf) scan every item at load
time with a progress callback, unless a ``CheckManifest`` says the same scan already passed on
the same, unchanged files.
"""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..interface import KNOWN_REQUIREMENTS, FeatureDims
from ..memory import trim_heap
from .annotations import BUILTIN_COLLECTIONS, Moments, builtin_moments, read_moments, split_coverage
from .batch import QueryBatch, VideoBatch
from .bigfile import BigFile, open_bigfile
from .errors import DataError
from .features import bin_segments, l2_normalize
from .layout import Layout
from .manifest import CheckManifest
from .relevance import relevance_for_split
from .text import QueryTokens, TeacherText, TeacherVideo, read_captions

DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes of preprocessed features kept in RAM (data.memory_budget)
CHUNK_BYTES = 256 * 2**20             # raw rows read per chunk while checking / preprocessing
FLOAT32 = 4

#: ``progress(what, done, total)``: a load phase (``"tvr/train videos: checking"``) is at item
#: ``done`` of ``total``; called once at the start and once per chunk.
LoadProgress = Callable[[str, int, int], None]


class CacheBudget:
    """Bytes of preprocessed features that may stay in RAM, shared by the stores that draw on
    it (the splits of one run: train, val, test, in load order; videos before queries)."""

    def __init__(self, total: int) -> None:
        if total < 0:
            raise ValueError(f"memory budget must be >= 0 bytes, got {total}")
        self.total = self.left = int(total)
        self._lock = threading.Lock()

    def leading(self, sizes: np.ndarray) -> int:
        """How many leading items of ``sizes`` (bytes each, (N,)) fit what is left; their
        bytes are taken from the budget."""
        with self._lock:
            ends = np.cumsum(np.asarray(sizes, dtype=np.int64))
            count = int(np.searchsorted(ends, self.left, side="right"))
            self.left -= int(ends[count - 1]) if count else 0
            return count


def _segment_index(offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(o, o + n)`` for every (o, n). Shapes: (V,), (V,) -> (Σn,)."""
    total = int(lengths.sum())
    starts = np.repeat(offsets - (np.cumsum(lengths) - lengths), lengths)
    return starts + np.arange(total)


def first_rows(rows: np.ndarray, lengths: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first ``min(n_i, keep_i)`` rows of every sequence of a concatenated block.

    Shapes: rows (Σn, d), lengths (V,), keep (V,) -> (rows (Σmin(n, keep), d), lengths (V,)).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    kept = np.minimum(lengths, np.asarray(keep, dtype=np.int64))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return rows[_segment_index(offsets, kept)], kept


def _chunks(lengths: np.ndarray, max_rows: int):
    """Consecutive index ranges of videos whose row counts sum to at most ``max_rows``
    (a single longer video forms its own chunk)."""
    ends = np.cumsum(lengths)
    start = 0
    while start < lengths.size:
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + max_rows, side="right")), start + 1)
        yield np.arange(start, stop)
        start = stop


def pad_segments(data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                 index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather sequences ``index`` from concatenated storage into one zero-padded tensor.

    Shapes: data (R, d); offsets, lengths (N,); index (B,) -> (padded (B, T, d), mask (B, T))
    with T = the longest selected length.
    """
    lengths_b = lengths[index]                                              # (B,)
    width = int(lengths_b.max()) if lengths_b.size else 0
    steps = np.arange(width)
    valid = steps[None, :] < lengths_b[:, None]                             # (B, T)
    rows = (offsets[index][:, None] + steps[None, :])[valid]                # (Σ lengths_b,)
    padded = torch.zeros(len(index), width, data.shape[1], dtype=torch.float32)
    mask = torch.from_numpy(valid.astype(np.float32))
    padded[torch.from_numpy(valid)] = torch.from_numpy(np.ascontiguousarray(data[rows]))
    return padded, mask


@dataclass
class _Segments:
    """Variable-length sequences stored back to back. Shapes: data (R, d), lengths (N,)."""

    data: np.ndarray
    lengths: np.ndarray
    offsets: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    def pad(self, index: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        index = np.arange(self.lengths.size) if index is None else index
        return pad_segments(self.data, self.offsets, self.lengths, index)

    def take(self, index: np.ndarray) -> "_Segments":
        """Sequences ``index`` back to back (a copy)."""
        rows = _segment_index(self.offsets[index], self.lengths[index])
        return _Segments(self.data[rows], self.lengths[index])


def _join(parts: list[_Segments]) -> _Segments:
    """The sequences of ``parts`` back to back, in order."""
    return _Segments(np.concatenate([p.data for p in parts]),
                     np.concatenate([p.lengths for p in parts]))


def _merge_order(hit: np.ndarray) -> np.ndarray:
    """Where each item of a batch sits in [cached items..., prepared items...].
    Shapes: hit (B,) bool -> (B,) int64."""
    where = np.empty(hit.size, dtype=np.int64)
    where[hit] = np.arange(int(hit.sum()))
    where[~hit] = int(hit.sum()) + np.arange(int((~hit).sum()))
    return where


@dataclass
class _PreparedVideos:
    """Preprocessed videos: frames and teacher frames as ``_Segments``, clips (V, C, d_v)."""

    frames: _Segments
    clips: np.ndarray | None
    teacher: _Segments | None

    def take(self, index: np.ndarray) -> "_PreparedVideos":
        """Videos ``index`` (a copy)."""
        return _PreparedVideos(frames=self.frames.take(index),
                               clips=None if self.clips is None else self.clips[index],
                               teacher=None if self.teacher is None else self.teacher.take(index))


def _join_videos(parts: list[_PreparedVideos]) -> _PreparedVideos:
    """The videos of ``parts`` back to back; every part is prepared alike (all or none of them
    have clips and teacher frames)."""
    clips = [p.clips for p in parts if p.clips is not None]
    teachers = [p.teacher for p in parts if p.teacher is not None]
    return _PreparedVideos(frames=_join([p.frames for p in parts]),
                           clips=np.concatenate(clips) if clips else None,
                           teacher=_join(teachers) if teachers else None)


@dataclass
class _TeacherFrames:
    """The teacher video file and its frame count per split video. Shapes: raw_lengths (Nv,)."""

    file: TeacherVideo
    raw_lengths: np.ndarray


def _first_bad_row(x: np.ndarray) -> int | None:
    bad = ~np.isfinite(x).all(axis=tuple(range(1, x.ndim)))
    return int(np.argmax(bad)) if bad.any() else None


def _load_leading(cached: int, lengths: np.ndarray, dim: int, prepare, check_chunk, *,
                  check: bool, what: str, progress: LoadProgress | None) -> tuple[int, list]:
    """Prepare the ``cached`` leading items (chunks of at most CHUNK_BYTES of rows) and, with
    ``check``, run ``check_chunk`` over the rest; report progress per chunk. Shared by the video
    and query stores. Returns (cached, the prepared parts in order)."""
    max_rows = max(CHUNK_BYTES // (dim * FLOAT32), 1)
    total = len(lengths) if check else cached
    verb = "checking and caching" if check else "caching"
    report = progress or (lambda *_: None)
    report(f"{what}: {verb}", 0, total)
    parts, done = [], 0
    for chunk in _chunks(lengths[:cached], max_rows):
        parts.append(prepare(chunk))
        done += chunk.size
        report(f"{what}: {verb}", done, total)
    if check:
        for chunk in _chunks(lengths[cached:], max_rows):
            check_chunk(chunk + cached)
            done += chunk.size
            report(f"{what}: {verb}", done, total)
    return cached, parts


class _VideoStore:
    """Student (and optional teacher) frame features of the split's videos."""

    def __init__(self, bigfile: BigFile, video_ids: list[str], *, max_frames: int, num_clips: int,
                 clips: bool, teacher: TeacherVideo | None, teacher_length: bool,
                 with_teacher: bool, teacher_first_n: bool = False) -> None:
        self.bigfile = bigfile
        self.video_ids = video_ids
        self.max_frames = max_frames
        self.num_clips = num_clips
        self.clips = clips
        self.with_teacher = with_teacher
        self.teacher_first_n = teacher_first_n
        if teacher_length and teacher is None:
            raise ValueError("teacher_length needs the teacher video features")
        rows = [bigfile.frame_rows(v) for v in video_ids]                  # checks v2f / id.txt
        self.raw_lengths = np.fromiter((r.size for r in rows), np.int64, len(rows))
        self.raw_rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        self.raw_offsets = np.concatenate([[0], np.cumsum(self.raw_lengths)[:-1]]).astype(np.int64)
        self.dim = bigfile.dim
        self.teacher: _TeacherFrames | None = None
        self.teacher_dim: int | None = None
        # §1.3 step 4 (teacher_length): the teacher frame counts student frames are resampled to
        self.length_target: np.ndarray | None = None
        student = self.raw_lengths
        if teacher is not None:
            shapes = [teacher.shape(v) for v in video_ids]
            dims = {s[1] for s in shapes}
            if len(dims) > 1:
                first = next(v for v, s in zip(video_ids, shapes) if s[1] != shapes[0][1])
                raise DataError(teacher.path, f"teacher frame size differs between videos "
                                              f"({sorted(dims)})", key=first)
            self.teacher_dim = shapes[0][1] if shapes else None
            self.teacher = _TeacherFrames(teacher, np.array([s[0] for s in shapes], dtype=np.int64))
            if teacher_length:                                             # §1.3 step 4
                self.length_target = self.teacher.raw_lengths
                student = np.minimum(student, self.length_target)
        self.frame_lengths = np.minimum(student, max_frames)               # (Nv,) after step 1
        if self.teacher is not None and with_teacher:
            teacher_frames = np.minimum(self.teacher.raw_lengths, max_frames)
            short = np.flatnonzero(teacher_frames < self.frame_lengths)
            if short.size:
                i = int(short[0])
                raise DataError(self.teacher.file.path,
                                f"teacher has {teacher_frames[i]} frames after sampling but the "
                                f"student has {self.frame_lengths[i]}; cannot align a shorter "
                                "teacher (docs/methods.md §6.8.6)", key=video_ids[i])
        self.stored: _PreparedVideos | None = None                        # videos [0, cached)
        self.cached = 0

    def item_bytes(self) -> np.ndarray:
        """Preprocessed bytes of every video: frames, clips, teacher frames. Shapes: (Nv,)."""
        width = self.dim + (self.teacher_dim or 0) * (self.with_teacher and self.teacher is not None)
        clips = self.num_clips * self.dim if self.clips else 0
        return (self.frame_lengths * width + clips) * FLOAT32

    def estimated_bytes(self) -> int:
        return int(self.item_bytes().sum())

    def _raw(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw student rows of videos ``index``, finiteness checked.

        The memmap is read once per distinct row in ascending order (sequential pages);
        ``frame_order[j]`` is the row of ``stored`` holding the j-th frame of the concatenation.

        Shapes: -> (stored (R, d_v), frame_order (Σn,)).
        """
        rows = self.raw_rows[_segment_index(self.raw_offsets[index], self.raw_lengths[index])]
        unique, frame_order = np.unique(rows, return_inverse=True)
        frame_order = frame_order.reshape(-1)
        stored = np.asarray(self.bigfile.features[unique], dtype=np.float32)
        bad = _first_bad_row(stored)
        if bad is not None:
            position = int(np.flatnonzero(frame_order == bad)[0])
            owner = int(np.searchsorted(np.cumsum(self.raw_lengths[index]), position, side="right"))
            row = int(unique[bad])
            raise DataError(self.bigfile.feature_file,
                            f"NaN or Inf in frame {self.bigfile.frame_id(row)!r} (row {row})",
                            key=self.video_ids[int(index[owner])])
        return stored, frame_order

    def _raw_teacher(self, teacher: TeacherVideo, index: np.ndarray) -> np.ndarray:
        """Raw teacher frames of videos ``index``, finiteness checked. Shapes: (ΣT, d_t)."""
        parts = []
        for i in index.tolist():                   # one HDF5 dataset per video: I/O bound
            part = teacher.read(self.video_ids[i])
            if _first_bad_row(part) is not None:
                raise DataError(teacher.path, "NaN or Inf in teacher frames",
                                key=self.video_ids[i])
            parts.append(part)
        return np.concatenate(parts)

    def check(self, index: np.ndarray) -> None:
        """Run the data checks of ``prepare`` without preprocessing."""
        self._raw(index)
        if self.teacher is not None and self.with_teacher:
            self._raw_teacher(self.teacher.file, index)

    def prepare(self, index: np.ndarray) -> _PreparedVideos:
        """Preprocess videos ``index`` (§1.3)."""
        raw, order = self._raw(index)
        lengths = self.raw_lengths[index]
        clips = None
        if self.clips:                                                     # step 2, on raw rows
            binned, _ = bin_segments(raw, lengths, self.num_clips, keep_short=False,
                                     float32_bounds=True, row_index=order)
            clips = l2_normalize(binned, inplace=True).reshape(len(index), self.num_clips, self.dim)
        if self.length_target is not None:                                 # step 4
            raw, lengths = bin_segments(raw, lengths, self.length_target[index],
                                        keep_short=True, row_index=order)
            order = None
        frames, frame_lengths = bin_segments(raw, lengths, self.max_frames, keep_short=True,
                                             row_index=order)
        out = _PreparedVideos(frames=_Segments(l2_normalize(frames, inplace=True), frame_lengths),
                              clips=clips, teacher=None)
        if self.teacher is not None and self.with_teacher:
            t = self._raw_teacher(self.teacher.file, index)
            t, t_lengths = bin_segments(t, self.teacher.raw_lengths[index], self.max_frames,
                                        keep_short=True)                   # step 1, no L2
            if self.teacher_first_n:                                       # ICCV collate, §1.3 step 5
                t, t_lengths = first_rows(t, t_lengths, frame_lengths)
            else:                                                          # §6.8.6 fix
                t, t_lengths = bin_segments(t, t_lengths, frame_lengths, keep_short=True)
            out.teacher = _Segments(t, t_lengths)
        return out

    def check_files(self) -> list[Path]:
        """Every file whose content the value checks read."""
        files = [self.bigfile.feature_file, self.bigfile.id_file, self.bigfile.video2frames_file]
        if self.teacher is not None and self.with_teacher:
            files.append(self.teacher.file.path)
        return files

    def load(self, budget: CacheBudget, *, check: bool, what: str,
             progress: LoadProgress | None = None) -> None:
        """Prepare and keep the leading videos that fit ``budget``; with ``check``, run the
        value checks over every other video too (one chunk of raw rows at a time)."""
        self.cached, parts = _load_leading(
            budget.leading(self.item_bytes()), self.raw_lengths, self.dim, self.prepare,
            self.check, check=check, what=what, progress=progress)
        self.stored = _join_videos(parts) if parts else None

    def batch(self, index: np.ndarray, teacher: bool) -> VideoBatch:
        hit = index < self.cached
        if hit.all():
            assert self.stored is not None or index.size == 0
            stored, where = self.stored, index
        elif not hit.any():
            stored, where = self.prepare(index), np.arange(len(index))
        else:       # cached leading videos and prepared others: the same values either way
            assert self.stored is not None
            stored = _join_videos([self.stored.take(index[hit]), self.prepare(index[~hit])])
            where = _merge_order(hit)
        if stored is None:                                                 # an empty batch
            stored = self.prepare(index)
        frames, mask = stored.frames.pad(where)
        clips = None if stored.clips is None else torch.from_numpy(stored.clips[where])
        teacher_frames = None
        if teacher:
            if stored.teacher is None:
                raise DataError(None, "teacher frames requested but the split was loaded "
                                      "without the 'teacher' requirement")
            teacher_frames, _ = stored.teacher.pad(where)
        return VideoBatch(frames=frames, frame_mask=mask, clips=clips, teacher_frames=teacher_frames)


class _QueryStore:
    """RoBERTa token features (normalised, truncated) and optional raw CLIP sentence vectors."""

    def __init__(self, tokens: QueryTokens, cap_ids: list[str], *, max_tokens: int,
                 teacher: TeacherText | None) -> None:
        self.file = tokens
        self.cap_ids = cap_ids
        self.max_tokens = max_tokens
        shapes = [tokens.shape(c) for c in cap_ids]                        # checks every key
        dims = np.array([s[1] for s in shapes], dtype=np.int64)
        if (dims != dims[0]).any():
            first = int(np.flatnonzero(dims != dims[0])[0])
            raise DataError(tokens.path, f"token size {dims[first]} differs from {dims[0]} "
                                         f"(key {cap_ids[0]!r})", key=cap_ids[first])
        self.dim = int(dims[0])
        self.lengths = np.minimum(np.array([s[0] for s in shapes], dtype=np.int64), max_tokens)
        self.stored: _Segments | None = None                               # queries [0, cached)
        self.cached = 0
        self.teacher: np.ndarray | None = None
        self.teacher_dim: int | None = None
        if teacher is not None:
            vectors = [teacher.vector(c) for c in cap_ids]
            sizes = {v.size for v in vectors}
            if len(sizes) > 1:
                first = next(c for c, v in zip(cap_ids, vectors) if v.size != vectors[0].size)
                raise DataError(teacher.path, f"teacher text size differs between queries "
                                              f"({sorted(sizes)})", key=first)
            self.teacher = np.stack(vectors)                               # (Nq, d_t) raw
            self.teacher_dim = int(self.teacher.shape[1])
            bad = _first_bad_row(self.teacher)
            if bad is not None:
                raise DataError(teacher.path, "NaN or Inf in teacher text feature",
                                key=cap_ids[bad])

    def item_bytes(self) -> np.ndarray:
        """Prepared bytes of every query's tokens. Shapes: (Nq,)."""
        return self.lengths * self.dim * FLOAT32

    def estimated_bytes(self) -> int:
        return int(self.item_bytes().sum())

    def prepare(self, index: np.ndarray) -> _Segments:
        """Normalised, truncated tokens of queries ``index`` (§1.3 step 3), NaN-checked."""
        lengths = self.lengths[index]
        # one HDF5 dataset per query: I/O bound; only the used (first max_tokens) rows are read
        data = np.concatenate([self.file.read_rows(self.cap_ids[i], self.max_tokens)
                               for i in index.tolist()])                   # (ΣL, d_q)
        bad = _first_bad_row(data)
        if bad is not None:
            owner = int(np.searchsorted(np.cumsum(lengths), bad, side="right"))
            raise DataError(self.file.path, "NaN or Inf in query token features",
                            key=self.cap_ids[int(index[owner])])
        # L2 per token; the truncation already happened on read
        return _Segments(l2_normalize(data, inplace=True), lengths)

    def load(self, budget: CacheBudget, *, check: bool, what: str,
             progress: LoadProgress | None = None) -> None:
        """Prepare and keep the leading queries that fit ``budget``; with ``check``, run the
        value checks over every other query too."""
        self.cached, parts = _load_leading(
            budget.leading(self.item_bytes()), self.lengths, self.dim, self.prepare,
            self.prepare, check=check, what=what, progress=progress)
        self.stored = _join(parts) if parts else None

    def batch(self, index: np.ndarray, teacher: bool) -> QueryBatch:
        hit = index < self.cached
        if hit.all() and self.stored is not None:
            tokens, mask = self.stored.pad(index)
        elif not hit.any() or self.stored is None:
            tokens, mask = self.prepare(index).pad()
        else:       # cached leading queries and prepared others: the same values either way
            joined = _join([self.stored.take(index[hit]), self.prepare(index[~hit])])
            tokens, mask = joined.pad(_merge_order(hit))
        vectors = None
        if teacher:
            if self.teacher is None:
                raise DataError(None, "teacher text requested but the split was loaded "
                                      "without the 'teacher' requirement")
            vectors = torch.from_numpy(self.teacher[index])
        return QueryBatch(tokens=tokens, mask=mask, teacher=vectors)


@dataclass(eq=False)
class SplitData:
    """One loaded split. Queries are caption-file lines; videos their unique ids in order.

    Shapes: query_video (Nq,) int64; mv (Nq,) float64 or None; relevance Nq × (k_i,) int64 or
    None; frame_counts (Nv,) frames after sampling; caption_counts (Nv,).
    """

    collection: str
    split: str
    synthetic: bool
    synthetic_info: dict | None
    cap_ids: list[str]
    video_ids: list[str]
    query_video: np.ndarray
    dims: FeatureDims
    mv: np.ndarray | None
    relevance: list[np.ndarray] | None
    caption_sha256: str
    requires: frozenset[str]
    frame_counts: np.ndarray
    caption_counts: np.ndarray
    in_memory: dict[str, bool]
    _queries: _QueryStore = field(repr=False)
    _videos: _VideoStore = field(repr=False)

    def __repr__(self) -> str:
        return (f"SplitData({self.collection}/{self.split}: {self.num_queries} queries, "
                f"{self.num_videos} videos, dims={self.dims}, requires={sorted(self.requires)}, "
                f"synthetic={self.synthetic}, mv={'yes' if self.mv is not None else 'no'}, "
                f"relevance={'yes' if self.relevance is not None else 'no'})")

    @property
    def num_queries(self) -> int:
        return len(self.cap_ids)

    @property
    def num_videos(self) -> int:
        return len(self.video_ids)

    @property
    def has_teacher(self) -> bool:
        return "teacher" in self.requires

    def query_batch(self, index: np.ndarray, *, teacher: bool = False) -> QueryBatch:
        """Queries ``index`` padded to the longest (≤ max_query_tokens).

        Shapes: index (Nq',) -> tokens (Nq', L, d_q), mask (Nq', L), teacher (Nq', d_t) | None.
        """
        return self._queries.batch(np.asarray(index, dtype=np.int64).reshape(-1), teacher)

    def video_batch(self, index: np.ndarray, *, teacher: bool = False) -> VideoBatch:
        """Videos ``index`` padded to the longest (≤ max_frames); clips when required.

        Shapes: index (B,) -> frames (B, T, d_v), frame_mask (B, T), clips (B, C, d_v) | None,
        teacher_frames (B, T, d_t) | None.
        """
        return self._videos.batch(np.asarray(index, dtype=np.int64).reshape(-1), teacher)

    def queries_of(self, videos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Query indices of ``videos``, each video's queries contiguous in caption-file order,
        and each query's position in ``videos``. Shapes: (B,) -> ((Nq',), (Nq',))."""
        videos = np.asarray(videos, dtype=np.int64)
        order = np.argsort(self.query_video, kind="stable")                # queries grouped by video
        first = np.concatenate([[0], np.cumsum(self.caption_counts)[:-1]])
        counts = self.caption_counts[videos]
        position = _segment_index(first[videos], counts)
        return order[position], np.repeat(np.arange(videos.size), counts)


def _resolve_moments(layout: Layout, moments: str | Path | None, synthetic: bool) -> Moments | None:
    if moments is not None:
        return read_moments(Path(moments))
    if layout.moments.is_file():
        return read_moments(layout.moments)
    if not synthetic and layout.collection in BUILTIN_COLLECTIONS:
        return builtin_moments(layout.collection)
    return None


def load_split(root: str | Path, collection: str, split: str, *,
               visual_feature: str | None = None, requires: frozenset[str] = frozenset(),
               moments: str | Path | None = None, relevance: str | Path | None = None,
               max_frames: int = 128, max_query_tokens: int = 30, num_clips: int = 32,
               memory_budget_bytes: int | CacheBudget = DEFAULT_MEMORY_BUDGET,
               manifest: CheckManifest | None = None,
               progress: LoadProgress | None = None) -> SplitData:
    """Load and check one split (docs/methods.md §1.1-§1.3, §1.5; docs/datasets.md §1).

    ``requires`` ⊆ {"clips", "teacher", "teacher_length", "teacher_first_n"}. Teacher files are
    opened only for "teacher" / "teacher_length". "teacher_first_n" changes how a teacher
    sequence longer than the student's is aligned (first n frames instead of binning); without
    "teacher" there is nothing to align and it has no effect.
    Moments: ``moments`` > ``<root>/<c>/TextData/<c>_moments.jsonl`` > the built-in table of a
    real (non-synthetic) tvr/activitynet/charades test split; a table attaches when it covers
    every cap_id, gives ``mv=None`` when it covers none.
    ``memory_budget_bytes``: bytes of preprocessed features this split keeps in RAM, or a
    ``CacheBudget`` shared with other splits (``experiment.load_splits`` shares
    ``data.memory_budget`` between train, val and test). ``manifest``: value checks that
    already passed on unchanged files are skipped (None: every check runs). ``progress``
    hears about every load phase (``LoadProgress``).
    """
    requires = frozenset(requires)
    unknown = requires - KNOWN_REQUIREMENTS
    if unknown:
        raise DataError(None, f"unknown requirement(s) {sorted(unknown)}; known: "
                              f"{sorted(KNOWN_REQUIREMENTS)}")
    layout = Layout.resolve(root, collection, visual_feature)
    if not layout.collection_dir.is_dir():
        raise DataError(layout.collection_dir, "collection directory not found")
    if progress is not None:
        progress(f"{collection}/{split}: reading captions, frame index and feature keys", 0, 0)
    caption_file = layout.caption_file(split)
    captions = read_captions(caption_file)
    caption_sha256 = hashlib.sha256(caption_file.read_bytes()).hexdigest()
    video_ids, query_video = captions.video_order()

    with_teacher = "teacher" in requires
    asked = "teacher" if with_teacher else "teacher_length"
    need_teacher_video = with_teacher or "teacher_length" in requires
    teacher_video = TeacherVideo(layout.teacher_video_features, asked) if need_teacher_video else None
    teacher_text = TeacherText(layout.teacher_query_features, "teacher") if with_teacher else None

    tokens = QueryTokens(layout.query_features)
    queries = _QueryStore(tokens, captions.cap_ids, max_tokens=max_query_tokens,
                          teacher=teacher_text)
    videos = _VideoStore(open_bigfile(layout.bigfile_dir), video_ids, max_frames=max_frames,
                         num_clips=num_clips, clips="clips" in requires, teacher=teacher_video,
                         teacher_length="teacher_length" in requires, with_teacher=with_teacher,
                         teacher_first_n="teacher_first_n" in requires)
    teacher_dim = None
    if teacher_text is not None and teacher_video is not None:            # requirement 'teacher'
        teacher_dim = videos.teacher_dim
        if queries.teacher_dim != teacher_dim:
            raise DataError(teacher_text.path, f"teacher text size {queries.teacher_dim} "
                                               f"differs from teacher video size {teacher_dim} "
                                               f"in {teacher_video.path}")

    budget = (memory_budget_bytes if isinstance(memory_budget_bytes, CacheBudget)
              else CacheBudget(memory_budget_bytes))
    manifest = manifest if manifest is not None else CheckManifest(None)
    what = f"{collection}/{split}"
    checks = {  # check name -> (store, files its values come from)
        "videos": (videos, [caption_file, *videos.check_files()]),
        "queries": (queries, [caption_file, tokens.path]),
    }
    for part, (store, files) in checks.items():
        name = (f"{layout.collection_dir.resolve()}:{split}:{part}:"
                f"teacher={with_teacher}:max_tokens={max_query_tokens}")
        check = not manifest.passed(name, files)
        store.load(budget, check=check, what=f"{what} {part}", progress=progress)
        if check:
            manifest.record(name, files)
    video_in_memory = videos.cached == len(video_ids)
    query_in_memory = queries.cached == len(queries.cap_ids)
    if query_in_memory:
        tokens.close()
    if teacher_video is not None and video_in_memory:
        teacher_video.close()
    if teacher_text is not None:
        teacher_text.close()

    trim_heap()                                   # parse and chunk temporaries back to the OS
    synthetic = layout.is_synthetic()
    table = _resolve_moments(layout, moments, synthetic)
    mv = split_coverage(table, captions.cap_ids) if table is not None else None
    dense = (relevance_for_split(relevance, captions.cap_ids, video_ids, query_video)
             if relevance is not None else None)

    return SplitData(
        collection=collection, split=split, synthetic=synthetic,
        synthetic_info=layout.synthetic_info(), cap_ids=captions.cap_ids, video_ids=video_ids,
        query_video=query_video,
        dims=FeatureDims(query=queries.dim, video=videos.dim, teacher=teacher_dim,
                         max_frames=max_frames, max_query_tokens=max_query_tokens,
                         num_clips=num_clips),
        mv=mv, relevance=dense, caption_sha256=caption_sha256, requires=requires,
        frame_counts=videos.frame_lengths.copy(),
        caption_counts=np.bincount(query_video, minlength=len(video_ids)).astype(np.int64),
        in_memory={"videos": video_in_memory, "queries": query_in_memory},
        _queries=queries, _videos=videos)
