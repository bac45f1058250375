"""The output files, each written atomically (a temporary file, then ``os.replace``).

* keyed HDF5 (teacher frames, query tokens, CLIP text): one float32 dataset per key;
* BigFile (docs/methods.md §1.1): ``feature.bin`` rows in the order given, frame ids
  ``<video_id>_<k>`` in ``id.txt``, ``shape.txt``, and ``video2frames.txt`` as a dict literal
  that both ``ast.literal_eval`` (prvr-bench) and ``eval`` (the reference code) read.

The four BigFile files are replaced one after another; ``shape.txt`` goes last, so a reader
never sees a new shape with old rows (a kill between two replaces is caught by BigFile's
size check, and the rerun rewrites all four from the shards).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

from .shards import atomic_path, write_text_atomic


def write_keyed_hdf5(path: str | Path, items: Iterable[tuple[str, np.ndarray]]) -> int:
    """One dataset per key; returns how many were written."""
    count = 0
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            for key, array in items:
                handle.create_dataset(key, data=np.asarray(array, dtype=np.float32))
                count += 1
    return count


def frame_ids(video_id: str, n: int) -> list[str]:
    return [f"{video_id}_{k}" for k in range(n)]


def write_bigfile(directory: str | Path, items: Iterable[tuple[str, np.ndarray]]) -> tuple[int, int]:
    """A BigFile directory from ``(video_id, (n, d) features)`` pairs; returns (rows, dim)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ids: list[str] = []
    video2frames: dict[str, list[str]] = {}
    dim: int | None = None
    with atomic_path(directory / "feature.bin") as tmp:
        with open(tmp, "wb") as handle:
            for video_id, rows in items:
                rows = np.ascontiguousarray(rows, dtype=np.float32)
                if dim is None:
                    dim = int(rows.shape[1])
                elif rows.shape[1] != dim:
                    raise ValueError(f"video {video_id!r}: {rows.shape[1]}-d rows after {dim}-d ones")
                names = frame_ids(video_id, rows.shape[0])
                ids.extend(names)
                video2frames[video_id] = names
                handle.write(rows.tobytes())       # native endian, row-major, no header
        if dim is None:
            raise ValueError("no videos to write")
        write_text_atomic(directory / "id.txt", " ".join(ids) + "\n", encoding="iso-8859-1")
        body = ", ".join(f"{video!r}: {names!r}" for video, names in video2frames.items())
        write_text_atomic(directory / "video2frames.txt", "{" + body + "}\n", encoding="iso-8859-1")
    write_text_atomic(directory / "shape.txt", f"{len(ids)} {dim}\n", encoding="ascii")
    return len(ids), dim
