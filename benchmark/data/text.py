"""Caption files, cap_id parsing and keyed HDF5 feature lookups (docs/methods.md §1.1, §1.5).

* Caption file: one query per line, ``"<cap_id> <text>"`` split on the first space.
* ``video_id_of(cap_id) = cap_id.split('#', 1)[0]``; the split's video list is the unique
  video ids in order of first appearance.
* RoBERTa query file: key = cap_id -> (L, d_q), or (1, L, d_q) which is squeezed (DL-DKD++).
* CLIP text file (teacher): key = cap_id -> (1, 512); when the cap_id is absent the key with
  ``"#enc#"`` replaced by ``"#"`` is tried (ref: DL-DKD++ data_provider.py; the reference skips
  the fallback for Charades, prvr-bench always tries it, which only makes more files readable).
* CLIP video file (teacher): key = video_id -> (T, 512).

Every failed lookup raises :class:`DataError` naming the file and the key.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import h5py
import numpy as np

from .errors import DataError


def video_id_of(cap_id: str) -> str:
    """The video of a query: everything before the first ``#`` (ref: every data_provider.py)."""
    return cap_id.split("#", 1)[0]


@dataclass(frozen=True)
class Captions:
    """One caption file. ``cap_ids`` and ``texts`` are in file order."""

    path: Path
    cap_ids: list[str]
    texts: list[str]

    def video_order(self) -> tuple[list[str], np.ndarray]:
        """Unique video ids in first-appearance order and each query's index into them.

        Shapes: returns (video_ids, query_video (Nq,) int64).
        """
        position: dict[str, int] = {}
        query_video = np.fromiter(
            (position.setdefault(video_id_of(c), len(position)) for c in self.cap_ids),
            dtype=np.int64, count=len(self.cap_ids))
        return list(position), query_video


def read_captions(path: str | Path) -> Captions:
    """Parse an MS-SL caption file; malformed or duplicated lines raise :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "caption file not found")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text ({exc})") from None
    if lines and lines[-1] == "":
        lines.pop()                      # the newline that ends the last line
    cap_ids: list[str] = []
    texts: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        # ref: line.strip().split(' ', 1)
        fields = line.strip().split(" ", 1)
        if len(fields) != 2 or not fields[0]:
            raise DataError(path, f"expected '<cap_id> <text>', got {line!r}", key=number)
        cap_id, text = fields
        if not video_id_of(cap_id):
            raise DataError(path, f"cap_id {cap_id!r} has an empty video id", key=number)
        if cap_id in seen:
            raise DataError(path, f"cap_id {cap_id!r} appears twice", key=number)
        seen.add(cap_id)
        cap_ids.append(cap_id)
        texts.append(text)
    if not cap_ids:
        raise DataError(path, "caption file holds no queries")
    return Captions(path, cap_ids, texts)


class KeyedArrays:
    """Read-only HDF5 file of one float array per key, opened on first use.

    ``squeeze_leading`` drops a leading axis of size 1 ((1, L, d) -> (L, d)); ``ndim`` is the
    rank required after that. ``requirement`` names who asked for the file, for the error
    message when it is missing.
    """

    def __init__(self, path: str | Path, *, ndim: int, squeeze_leading: bool = False,
                 requirement: str | None = None, what: str = "feature file") -> None:
        self.path = Path(path)
        self.ndim = ndim
        self.squeeze_leading = squeeze_leading
        if not self.path.is_file():
            asked = f" (needed by requirement {requirement!r})" if requirement else ""
            raise DataError(self.path, f"{what} not found{asked}")
        self._file: h5py.File | None = None

    @property
    def file(self) -> h5py.File:
        if self._file is None:
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                raise DataError(self.path, f"cannot open as HDF5 ({exc})") from None
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self):              # h5py handles do not pickle; reopen after a fork/spawn
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def resolve(self, key: str) -> str:
        """The stored key for ``key`` (subclasses add fallbacks)."""
        if key not in self.file:
            raise DataError(self.path, "key missing", key=key)
        return key

    def _dataset(self, key: str) -> h5py.Dataset:
        """The stored array of ``key``; a group (or other non-array entry) is a DataError."""
        dataset = self.file[self.resolve(key)]
        if not isinstance(dataset, h5py.Dataset):
            raise DataError(self.path, "entry is a group, not an array", key=key)
        return dataset

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape after squeezing, validated, without reading the data."""
        dataset = self._dataset(key)
        shape = tuple(dataset.shape)
        if self.squeeze_leading and len(shape) == self.ndim + 1 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) != self.ndim:
            raise DataError(self.path, f"array has shape {tuple(dataset.shape)}, expected "
                                       f"{self.ndim} axes", key=key)
        if 0 in shape:
            raise DataError(self.path, f"array is empty (shape {tuple(dataset.shape)})", key=key)
        return shape

    def read(self, key: str, max_rows: int | None = None) -> np.ndarray:
        """The array (first ``max_rows`` rows only when given) as float32."""
        self.shape(key)
        dataset = self._dataset(key)
        squeeze = self.squeeze_leading and dataset.ndim == self.ndim + 1
        rows = slice(None) if max_rows is None else slice(0, max_rows)
        data = dataset[0, rows] if squeeze else dataset[rows]
        return np.asarray(data, dtype=np.float32)


class QueryTokens(KeyedArrays):
    """RoBERTa token features: cap_id -> (L, d_q); (1, L, d_q) is squeezed."""

    def read_rows(self, key: str, max_rows: int) -> np.ndarray:
        """The first ``max_rows`` token rows of a key already validated with ``shape``.

        One HDF5 lookup per call (the hot path of lazy query loading). Shapes: (≤max_rows, d_q).
        """
        dataset = cast(h5py.Dataset, self.file[key])       # an array: ``shape`` checked it
        data = dataset[0, :max_rows] if dataset.ndim == 3 else dataset[:max_rows]
        return np.asarray(data, dtype=np.float32)

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, ndim=2, squeeze_leading=True, what="query feature file")


class TeacherText(KeyedArrays):
    """CLIP sentence features: cap_id -> (1, d_t), with the ``#enc#`` -> ``#`` key fallback."""

    def __init__(self, path: str | Path, requirement: str = "teacher") -> None:
        super().__init__(path, ndim=2, requirement=requirement, what="teacher text feature file")

    def resolve(self, key: str) -> str:
        if key in self.file:
            return key
        fallback = key.replace("#enc#", "#")   # ref: DL-DKD++ data_provider.py
        if fallback in self.file:
            return fallback
        raise DataError(self.path, f"key missing (also tried {fallback!r})", key=key)

    def vector(self, key: str) -> np.ndarray:
        """Shapes: (d_t,) raw, not normalised (docs/methods.md §1.3 step 4)."""
        shape = self.shape(key)
        if shape[0] != 1:
            raise DataError(self.path, f"expected one sentence vector (1, d), got {shape}", key=key)
        return self.read(key)[0]


class TeacherVideo(KeyedArrays):
    """CLIP frame features: video_id -> (T, d_t)."""

    def __init__(self, path: str | Path, requirement: str = "teacher") -> None:
        super().__init__(path, ndim=2, requirement=requirement, what="teacher video feature file")
