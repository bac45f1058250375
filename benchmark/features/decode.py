"""Frame sampling from video files with PyAV (FFmpeg bindings).

Time grid: with a step ``s = 1 / fps`` the k-th sampled frame is the frame on screen at
``t_k = (k + 0.5) · s`` seconds from the first frame, for every ``t_k`` before the end of the
video (last frame time plus one frame duration); a video shorter than half a step still gives
one frame. The default ``fps = 1/1.5`` puts one frame in the middle of each 1.5 s segment, the
step of TVR's I3D features (docs/methods.md §1.1), so feature k describes [1.5k, 1.5k + 1.5) s.
With ``count=n`` instead, the n times are spread the same way over the whole duration, one in
the middle of each of n equal segments (used to match an existing student's frame count).

Frames are decoded in one sequential pass; only the sampled ones are converted to RGB, and
they are yielded as they come, so memory does not grow with the video's length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import av
from av.error import FFmpegError
from PIL import Image

from benchmark.data.errors import DataError

#: One feature per 1.5 s, the step of TVR's I3D features.
DEFAULT_FPS = 1 / 1.5
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ts")


class BadVideoError(DataError):
    """A video file that cannot be opened or decoded, or holds no frames."""


@dataclass
class Sampled:
    """What one decoding pass found. ``duration`` (seconds) is known after the last frame."""

    path: Path
    frames: int = 0
    duration: float = math.nan
    times: list[float] = field(default_factory=list)


def _duration_hint(container, stream) -> float | None:
    """The container's or the stream's stated duration in seconds, when it states one."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000            # AV_TIME_BASE
    return None


def sample_frames(path: str | Path, *, fps: float | None = DEFAULT_FPS, count: int | None = None,
                  transform: Callable[[Image.Image], object] = lambda image: image,
                  info: Sampled | None = None) -> Iterator[object]:
    """Yield ``transform(frame)`` for each sampled frame of ``path`` (RGB PIL images in).

    Exactly one of ``fps`` and ``count`` is used (``count`` wins when given). ``info``, when
    passed, is filled in: frame times and, once the generator is exhausted, the duration.
    Any failure to open or decode raises :class:`BadVideoError` naming the file.
    """
    path = Path(path)
    info = info if info is not None else Sampled(path)
    info.path = path
    try:
        container = av.open(str(path))
    except (FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise BadVideoError(path, f"cannot open video ({type(exc).__name__}: {exc})") from None
    with container:
        if not container.streams.video:
            raise BadVideoError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        frame_seconds = 1 / float(rate) if rate else 0.0
        if count is not None:
            if count < 1:
                raise ValueError(f"count must be positive, got {count}")
            total = _duration_hint(container, stream)
            if total is None or not total > 0:
                raise BadVideoError(path, "states no duration; cannot spread a fixed number of "
                                          "frames over it")
            step = total / count
        elif fps is not None and fps > 0:
            step = 1 / fps
        else:
            raise ValueError(f"fps must be positive, got {fps}")

        def target(k: int) -> float:
            return (k + 0.5) * step

        k = 0
        origin: float | None = None
        previous = None                 # (frame, time) on screen before the current one
        converted: tuple[int, object] | None = None   # cache: same frame for several times
        last_time = 0.0

        def take(frame, index: int) -> object:
            nonlocal converted
            if converted is None or converted[0] != index:
                converted = (index, transform(frame.to_image()))
            return converted[1]

        index = -1
        try:
            for frame in container.decode(stream):
                index += 1
                t = frame.time if frame.time is not None else index * frame_seconds
                if origin is None:
                    origin = t
                t -= origin
                last_time = t
                while (count is None or k < count) and target(k) < t:
                    shown, shown_index = (previous if previous is not None else (frame, index))
                    info.times.append(target(k))
                    yield take(shown, shown_index)
                    k += 1
                previous = (frame, index)
        except FFmpegError as exc:
            raise BadVideoError(path, f"decoding failed after {index + 1} frames "
                                      f"({type(exc).__name__}: {exc})") from None
        if previous is None:
            raise BadVideoError(path, "holds no decodable video frames")
        end = last_time + frame_seconds
        while (k < count) if count is not None else (target(k) < end or k == 0):
            info.times.append(target(k))
            yield take(*previous)
            k += 1
        info.frames = index + 1
        info.duration = end


def find_videos(source: str | Path) -> dict[str, Path]:
    """Video id (file stem) -> path, from a directory (files with a video suffix, not
    recursive) or a list file (one path per line, or ``video_id path``; relative paths are
    taken from the list file's directory). Two files with one id is an error."""
    source = Path(source)
    found: dict[str, Path] = {}

    def add(video_id: str, path: Path, where: object) -> None:
        if video_id in found:
            raise DataError(source, f"video id {video_id!r} names two files: {found[video_id]} "
                                    f"and {path}", key=where)
        found[video_id] = path

    if source.is_dir():
        for path in sorted(source.iterdir()):
            if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
                add(path.stem, path, path.name)
        if not found:
            raise DataError(source, f"no video files ({', '.join(VIDEO_SUFFIXES)}) in directory")
        return found
    if not source.is_file():
        raise DataError(source, "video directory or list file not found")
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        whole = Path(line) if Path(line).is_absolute() else source.parent / line
        fields = line.split(None, 1)
        if whole.is_file() or len(fields) == 1:          # a path (spaces allowed)
            add(whole.stem, whole, number)
        else:                                            # "video_id path"
            path = Path(fields[1]) if Path(fields[1]).is_absolute() else source.parent / fields[1]
            add(fields[0], path, number)
    if not found:
        raise DataError(source, "video list names no files")
    return found
