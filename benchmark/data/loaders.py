"""Video-centric training batches (docs/methods.md §1.4).

A sample is a video with all of its captions. Each epoch shuffles the videos with
``torch.randperm(Nv, generator=generator)`` (what ``DataLoader(shuffle=True)`` does), cuts
the permutation into batches of ``batch_size`` videos (the last one may be smaller), and sorts
each batch in descending order of frame count (MS-SL, GMMFormer) or caption count (DL-DKD,
DL-DKD++); the sort is stable, like Python's ``list.sort(reverse=True)`` in the reference
collate. Captions are flattened so that each video's queries are contiguous and
``query_video[i]`` is the batch position of query i's video.

Batches are collated ``prefetch`` ahead by a background thread (``prefetched``), so that a
step does not wait on the feature files. The epoch's order is drawn first, in the caller's
thread, exactly when it was drawn without prefetching; the thread only reads and pads (no
random numbers), so the batches, their order and every RNG state are the same either way.
"""
from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Generator, Iterable
from typing import TypeVar

import numpy as np
import torch

from .batch import TrainBatch
from .split import SplitData

SORT_KEYS = ("frames", "captions")
PREFETCH = 1                     # batches collated ahead of the step (each holds ~0.3 GB on full TVR)

T = TypeVar("T")
R = TypeVar("R")


def steps_per_epoch(split: SplitData, batch_size: int) -> int:
    """Batches per epoch: ``ceil(Nv / batch_size)`` (no dropped last batch)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return math.ceil(split.num_videos / batch_size)


def epoch_order(split: SplitData, batch_size: int, generator: torch.Generator,
                sort_by: str = "frames") -> list[np.ndarray]:
    """Video indices of every batch of one epoch, each sorted as the collate sorts it.

    Shapes: returns ``steps_per_epoch`` arrays (B,) int64.
    """
    if sort_by not in SORT_KEYS:
        raise ValueError(f"sort_by must be one of {SORT_KEYS}, got {sort_by!r}")
    steps = steps_per_epoch(split, batch_size)
    permutation = torch.randperm(split.num_videos, generator=generator).numpy()  # (Nv,)
    key = split.frame_counts if sort_by == "frames" else split.caption_counts
    batches = []
    for step in range(steps):
        videos = permutation[step * batch_size:(step + 1) * batch_size]
        # stable descending sort == Python's sort(key=len, reverse=True)
        batches.append(videos[np.argsort(-key[videos], kind="stable")])
    return batches


def collate(split: SplitData, videos: np.ndarray) -> TrainBatch:
    """One training batch for videos in the given order (teacher fields when loaded with it).

    Shapes: videos (B,) -> queries (Nq, L, d_q), videos (B, T, d_v), query_video (Nq,) int64.
    """
    query_index, query_video = split.queries_of(videos)
    teacher = split.has_teacher
    return TrainBatch(queries=split.query_batch(query_index, teacher=teacher),
                      videos=split.video_batch(videos, teacher=teacher),
                      query_video=torch.from_numpy(query_video))


def prefetched(make: Callable[[T], R], items: Iterable[T], depth: int
               ) -> Generator[R, None, None]:
    """``make(item)`` for every item, in order, computed up to ``depth`` ahead by one background
    thread (``depth`` 0: in the caller's thread). At most ``depth`` results wait or are being
    made while the consumer holds one. An exception in ``make`` is raised to the consumer at
    that item; closing the iterator early stops the thread."""
    if depth <= 0:
        yield from map(make, items)
        return
    ready: queue.Queue = queue.Queue()
    slots = threading.Semaphore(depth)          # a result is made only into a free slot
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                while not slots.acquire(timeout=0.05):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                ready.put(("item", make(item)))
            ready.put(("end", None))
        except BaseException as exc:          # handed to the consumer, raised there
            ready.put(("error", exc))

    thread = threading.Thread(target=work, name="batch-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = ready.get()
            slots.release()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
            value = None                      # the consumer's batch is not kept alive here
    finally:
        stop.set()
        thread.join()


def train_batches(split: SplitData, batch_size: int, generator: torch.Generator,
                  sort_by: str = "frames", prefetch: int = PREFETCH
                  ) -> Generator[TrainBatch, None, None]:
    """One epoch of shuffled, collated training batches (docs/methods.md §1.4), collated
    ``prefetch`` batches ahead in the background."""
    order = epoch_order(split, batch_size, generator, sort_by)      # drawn here, as before
    yield from prefetched(lambda videos: collate(split, videos), order, prefetch)
