"""Resumable extraction: finished work lands in small atomic shard files, outputs are built
from them at the end, each output file written atomically.

An extraction writes every finished unit (one video, or one batch of captions) as one ``.npz``
shard in a work directory (``<collection>/.features-work/<job>/``). A shard is written to a
temporary name and renamed (``os.replace``) into place, so a shard either exists whole or not
at all: a process killed at any moment leaves only whole shards (and perhaps a stray temporary
file, which the next run deletes). A rerun reads the ids of the existing shards and skips them.
When every unit is done the final files are assembled from the shards, each through a
temporary file and ``os.replace``, and the work directory is removed.

Shard contents, for ids ``i_1..i_n`` and fields ``f``: ``ids`` (n,) str; ``f`` (Σ rows_f, d_f)
float32, the arrays of the n ids back to back; ``f.lengths`` (n,) int64 their row counts.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, cast

import numpy as np

from benchmark.data.errors import DataError

SHARD_SUFFIX = ".npz"
TEMP_MARK = ".tmp-"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed onto ``path`` when the block succeeds, deleted
    when it raises. The caller writes the file at the yielded path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


class ShardStore:
    """The work directory of one extraction job (see the module docstring)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for stray in self.directory.glob(f".*{TEMP_MARK}*"):       # a killed writer's leftovers
            stray.unlink()

    def shards(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir()
                      if p.suffix == SHARD_SUFFIX and not p.name.startswith("."))

    def done_ids(self) -> set[str]:
        """Ids held by the shards already written."""
        done: set[str] = set()
        for shard in self.shards():
            with np.load(shard, allow_pickle=False) as data:
                done.update(data["ids"].tolist())
        return done

    def write(self, ids: Sequence[str], fields: Mapping[str, Sequence[np.ndarray]]) -> Path:
        """One shard holding, for each field, the 2-D array of every id (in ``ids`` order)."""
        existing = self.shards()
        number = int(existing[-1].stem) + 1 if existing else 0
        payload: dict[str, np.ndarray] = {"ids": np.asarray(list(ids), dtype=str)}
        for name, arrays in fields.items():
            if len(arrays) != len(ids):
                raise ValueError(f"field {name!r}: {len(arrays)} arrays for {len(ids)} ids")
            payload[name] = np.concatenate([np.asarray(a, np.float32).reshape(len(a), -1)
                                            for a in arrays]) if arrays else np.zeros((0, 1), np.float32)
            payload[f"{name}.lengths"] = np.array([len(a) for a in arrays], dtype=np.int64)
        target = self.directory / f"{number:08d}{SHARD_SUFFIX}"
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as handle:            # a file object: savez adds no suffix
                np.savez(handle, **cast(dict[str, Any], payload))
        return target

    def iterate(self, fields: Sequence[str]) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """``(id, {field: (rows, d) float32})`` for every id, shard by shard (one shard in
        memory at a time, so assembling a large collection stays small)."""
        for shard in self.shards():
            with np.load(shard, allow_pickle=False) as data:
                missing = [name for name in fields if name not in data]
                if missing:
                    raise DataError(shard, f"shard has no field(s) {missing} (a work directory "
                                           "of another job? delete it to start over)")
                ids = data["ids"].tolist()
                columns = {}
                for name in fields:
                    lengths = data[f"{name}.lengths"]
                    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
                    columns[name] = (data[name], starts.tolist(), lengths.tolist())
            for j, key in enumerate(ids):
                yield key, {name: rows[start[j]:start[j] + n[j]]
                            for name, (rows, start, n) in columns.items()}

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        parent = self.directory.parent
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
