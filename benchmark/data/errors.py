"""The one error type of the data layer: bad input, named by file and key.

Every check in ``benchmark.data`` raises :class:`DataError` (a ``ValueError``) before training
starts, with a message of the form ``"<file>: <key>: <problem>"`` so that the offending file and
entry can be found without a debugger.
"""
from __future__ import annotations

from pathlib import Path

from benchmark.errors import PRVRBenchError


class DataError(PRVRBenchError, ValueError):
    """Bad or inconsistent input data.

    ``path`` is the file (or directory) at fault, ``key`` the entry inside it (a cap_id, video
    id, frame id, line number, field name), ``problem`` a sentence saying what is wrong.
    """

    def __init__(self, path: str | Path | None, problem: str, *, key: object = None) -> None:
        self.path = None if path is None else str(path)
        self.key = key
        self.problem = problem
        parts = []
        if self.path is not None:
            parts.append(self.path)
        if key is not None:
            parts.append(f"key {key!r}" if not isinstance(key, int) else f"line {key}")
        parts.append(problem)
        super().__init__(": ".join(parts))
