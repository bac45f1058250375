"""BigFile reader: the MS-SL frame-feature store (docs/methods.md §1.1), over a ``np.memmap``.

A BigFile directory holds

* ``shape.txt``: one line ``"<N_rows> <dim>"``;
* ``id.txt``: ``N_rows`` frame ids separated by whitespace, ISO-8859-1;
* ``feature.bin``: ``N_rows × dim`` float32, native endian, row-major, no header;
* ``video2frames.txt``: a Python dict literal ``{video_id: [frame_id, ...]}``.

The reference reads ``video2frames.txt`` with ``eval``; prvr-bench parses it with
``ast.literal_eval`` so a data file can never run code. All three descriptions of the store
(shape.txt, the byte size of feature.bin, the number of ids) must agree.

Shapes: ``features`` (N_rows, dim) float32 memmap.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from ..memory import trim_heap
from .errors import DataError

FLOAT32_BYTES = 4


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataError(path, "file not found (BigFile directories need shape.txt, id.txt, "
                              "feature.bin and video2frames.txt)")
    return path


def read_shape(path: Path) -> tuple[int, int]:
    """Parse ``shape.txt``: the first line holds two positive integers."""
    text = _require(path).read_text(encoding="ascii", errors="replace").strip().splitlines()
    fields = text[0].split() if text else []
    try:
        rows, dim = (int(v) for v in fields)
    except ValueError:
        first = text[0] if text else ""
        raise DataError(path, f"first line must be '<N_rows> <dim>', got {first!r}") from None
    if rows < 0 or dim <= 0:
        raise DataError(path, f"invalid shape ({rows}, {dim})")
    return rows, dim


def read_ids(path: Path) -> list[str]:
    """Parse ``id.txt``: whitespace-separated frame ids, ISO-8859-1 (as the reference opens it)."""
    return _require(path).read_text(encoding="iso-8859-1").split()


def read_video2frames(path: Path) -> dict[str, list[str]]:
    """Parse ``video2frames.txt`` as a Python literal (never ``eval``)."""
    text = _require(path).read_text(encoding="iso-8859-1")
    try:
        mapping = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise DataError(path, f"not a Python dict literal ({type(exc).__name__}: {exc})") from None
    if not isinstance(mapping, dict):
        raise DataError(path, f"expected a dict literal, got {type(mapping).__name__}")
    for video, frames in mapping.items():
        if not isinstance(video, str):
            raise DataError(path, "video ids must be strings", key=video)
        if not isinstance(frames, (list, tuple)) or not all(isinstance(f, str) for f in frames):
            raise DataError(path, "value must be a list of frame-id strings", key=video)
    return {video: list(frames) for video, frames in mapping.items()}


class BigFile:
    """One BigFile directory, memory-mapped.

    ``features[row]`` is frame ``frame_id(row)``; ``frame_rows(video_id)`` gives the rows of a
    video in ``video2frames`` order. Only the three small text files are read eagerly, and they
    are kept in compact form: one row array per video (a frame id missing from ``id.txt`` is
    remembered and raised when that video is asked for). The parsed strings (one per frame,
    about 0.9 GB of Python objects for full TVR) are dropped once indexed; ``frame_id`` reads
    ``id.txt`` again (error messages only).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise DataError(self.directory, "BigFile directory not found")
        self.shape_file = self.directory / "shape.txt"
        self.id_file = self.directory / "id.txt"
        self.feature_file = self.directory / "feature.bin"
        self.video2frames_file = self.directory / "video2frames.txt"

        self.num_rows, self.dim = read_shape(self.shape_file)
        ids = read_ids(self.id_file)
        if len(ids) != self.num_rows:
            raise DataError(self.id_file, f"holds {len(ids)} ids but {self.shape_file.name} "
                                          f"says {self.num_rows} rows")
        expected = self.num_rows * self.dim * FLOAT32_BYTES
        actual = _require(self.feature_file).stat().st_size
        if actual != expected:
            raise DataError(self.feature_file, f"has {actual} bytes but {self.shape_file.name} "
                                               f"({self.num_rows} x {self.dim} float32) needs {expected}")
        row_of = {frame: row for row, frame in enumerate(ids)}
        if len(row_of) != len(ids):
            seen: set[str] = set()
            duplicate = next(f for f in ids if f in seen or seen.add(f))
            raise DataError(self.id_file, "frame id listed twice", key=duplicate)
        mapping = read_video2frames(self.video2frames_file)
        lengths = np.fromiter((len(f) for f in mapping.values()), np.int64, len(mapping))
        flat = np.fromiter((row_of.get(f, -1) for frames in mapping.values() for f in frames),
                           np.int64, int(lengths.sum()))                     # (Σn,) -1: missing
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        bad = np.flatnonzero(flat < 0)
        owners = np.searchsorted(offsets, bad, side="right") - 1
        names = "\0".join(mapping)                  # one string: outlives the parsed objects
        missing: dict[int, str] = {}                 # video position -> first frame id not in id.txt
        if bad.size:                                 # error path: only the videos concerned
            values = list(mapping.values())
            for owner, first in zip(*np.unique(owners, return_index=True)):
                missing[int(owner)] = values[owner][int(bad[first] - offsets[owner])]
        # the parsed strings are freed before the lasting index is built, so that no lasting
        # object pins their memory (small objects share arenas)
        del ids, row_of, mapping
        self._video_index = ({v: i for i, v in enumerate(names.split("\0"))}
                             if lengths.size else {})
        self._flat, self._offsets, self._lengths = flat, offsets, lengths
        self._missing = missing
        trim_heap()
        # A zero-row store cannot be memory-mapped; keep an empty array instead.
        self.features = (np.memmap(self.feature_file, dtype=np.float32, mode="r",
                                   shape=(self.num_rows, self.dim))
                         if self.num_rows else np.zeros((0, self.dim), np.float32))

    def frame_id(self, row: int) -> str:
        """The id of frame ``row`` (reads id.txt again: for error messages)."""
        return read_ids(self.id_file)[row]

    def frame_rows(self, video_id: str) -> np.ndarray:
        """Rows of ``video_id``'s frames in ``video2frames`` order.

        Shapes: returns (n,) int64, n ≥ 1.
        """
        position = self._video_index.get(video_id)
        if position is None:
            raise DataError(self.video2frames_file, "video has no entry", key=video_id)
        if not self._lengths[position]:
            raise DataError(self.video2frames_file, "video has zero frames", key=video_id)
        if position in self._missing:
            frame = self._missing[position]
            raise DataError(self.id_file, f"frame id {frame!r} of video {video_id!r} "
                                          f"(from {self.video2frames_file.name}) is missing",
                            key=frame)
        start = self._offsets[position]
        return self._flat[start:start + self._lengths[position]]

    def read(self, video_id: str) -> np.ndarray:
        """Raw frame features of one video, copied into RAM. Shapes: (n, dim) float32."""
        return np.asarray(self.features[self.frame_rows(video_id)])


_OPEN: dict[tuple, BigFile] = {}


def open_bigfile(directory: str | Path) -> BigFile:
    """A ``BigFile`` shared by every split of this process that reads the same, unchanged
    directory (the splits of a collection share one store: parsing its index once saves
    ~10 s per split on full TVR). Keyed by the path and the size and mtime of its files."""
    directory = Path(directory).resolve()
    names = ("shape.txt", "id.txt", "feature.bin", "video2frames.txt")
    try:
        stats = tuple((s.st_size, s.st_mtime_ns) for s in ((directory / n).stat() for n in names))
    except OSError:
        return BigFile(directory)                 # raises the named error
    key = (str(directory), stats)
    if key not in _OPEN:
        _OPEN.clear()                            # one store at a time: a changed file replaces it
        _OPEN[key] = BigFile(directory)
    return _OPEN[key]
