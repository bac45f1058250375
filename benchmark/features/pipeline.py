"""Decode in a background thread while the caller encodes: video decoding, RGB conversion and
resizing (PyAV and Pillow release the GIL) overlap with the model's forward passes.

:func:`decoded` runs :func:`sample_frames` over the videos in order in one daemon thread and
hands the caller chunks of at most ``chunk`` preprocessed frames through a queue of ``depth``
chunks, so memory stays bounded by ``depth × chunk`` frames whatever the video lengths. The
last item of each video carries its :class:`Sampled` info (the video is complete) or the
:class:`BadVideoError` that stopped it. Any other exception in the thread is re-raised in the
caller. Leaving the loop early (an error, ``break``) stops the thread.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .decode import BadVideoError, Sampled, sample_frames


@dataclass
class Chunk:
    video_id: str
    frames: list
    info: Sampled | None = None            # set on the video's last chunk
    error: BadVideoError | None = None     # set instead when the video is bad


@dataclass
class VideoTask:
    video_id: str
    path: Path | None                       # None: no file for this id (reported as bad)
    count: int | None = None                # frames spread over the video instead of fps


_DONE = object()


def decoded(tasks: Sequence[VideoTask], *, fps: float, transform: Callable, chunk: int,
            depth: int = 4, missing_source: str | Path | None = None) -> Iterator[Chunk]:
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for task in tasks:
                if task.path is None:
                    error = BadVideoError(missing_source, "no video file for this video id "
                                                          "(named by the captions)", key=task.video_id)
                    if not put(Chunk(task.video_id, [], error=error)):
                        return
                    continue
                info = Sampled(task.path)
                frames: list = []
                try:
                    for frame in sample_frames(task.path, fps=fps, count=task.count,
                                               transform=transform, info=info):
                        frames.append(frame)
                        if len(frames) >= chunk:
                            if not put(Chunk(task.video_id, frames)):
                                return
                            frames = []
                except BadVideoError as exc:
                    if not put(Chunk(task.video_id, [], error=exc)):
                        return
                    continue
                if not put(Chunk(task.video_id, frames, info=info)):
                    return
            put(_DONE)
        except BaseException as exc:        # a bug: hand it to the caller
            put(exc)

    thread = threading.Thread(target=produce, name="features-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)
