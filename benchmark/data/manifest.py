"""A manifest of value checks that passed, so that a second load of unchanged data skips them.

``load_split`` scans every feature value a split uses for NaN/Inf (reading the whole
collection: 21 GB for full TVR). A passed scan is recorded here under a name
(``tvr/train/videos``) with a fingerprint of every file it depends on; a later load whose
files all still match skips that scan. Any change to a file (size, mtime or a sampled block)
invalidates the entry, and the scan runs again.

The fingerprint of a file is its size, its mtime (ns) and a BLAKE2b digest of ``SAMPLES``
blocks of ``BLOCK`` bytes at evenly spaced offsets (the first and the last block included):
cheap on a 20 GB file, and it notices a file rewritten in place within the mtime resolution.

The manifest is one JSON file, written atomically (temporary file, then rename); a concurrent
writer may drop another's new entry, which only costs a re-check. Structural checks (files,
keys, shapes, lengths) are never cached: they are cheap and run on every load.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

FORMAT = "prvr-bench.check-manifest/1"
SAMPLES = 8
BLOCK = 64 * 2**10


def fingerprint(path: Path) -> list:
    """[size, mtime_ns, digest of SAMPLES sampled blocks] of one file."""
    stat = path.stat()
    digest = hashlib.blake2b(digest_size=16)
    last = max(stat.st_size - BLOCK, 0)
    with open(path, "rb") as handle:
        for k in range(SAMPLES):
            handle.seek(last * k // (SAMPLES - 1))
            digest.update(handle.read(BLOCK))
    return [stat.st_size, stat.st_mtime_ns, digest.hexdigest()]


class CheckManifest:
    """Passed value checks, by name, with the fingerprints of their input files.

    ``path=None`` keeps nothing: every check runs (what a bare ``load_split`` does)."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, dict[str, list]] = {}
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                data = {}
            if isinstance(data, dict) and data.get("format") == FORMAT:
                self._entries = dict(data.get("checks", {}))

    def _prints(self, files: list[Path]) -> dict[str, list]:
        return {str(Path(f).resolve()): fingerprint(Path(f)) for f in files}

    def passed(self, name: str, files: list[Path]) -> bool:
        """True when check ``name`` passed before on exactly these, unchanged, files."""
        if self.path is None or name not in self._entries:
            return False
        try:
            return self._entries[name] == self._prints(files)
        except OSError:
            return False

    def record(self, name: str, files: list[Path]) -> None:
        """Remember that check ``name`` passed on ``files`` as they are now (merged into the file
        on disk, so entries written by other processes meanwhile are kept)."""
        if self.path is None:
            return
        self._entries[name] = self._prints(files)
        on_disk = CheckManifest(self.path)._entries
        on_disk.update(self._entries)
        self._entries = on_disk
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".manifest-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump({"format": FORMAT, "checks": self._entries}, handle, indent=1,
                          sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
