"""The text inputs of ``from-videos``: caption files, splits, moment spans; id checks.

* Captions: the MS-SL caption format, ``<cap_id> <caption>`` per line, cap_id = ``video#k``
  (``video#enc#k`` works too: the video id is everything before the first ``#``).
* Splits: three caption files (train, val, test), or one file split by video with
  ``--split-ratio TRAIN,VAL,TEST`` (seeded shuffle of the videos; a VAL of 0 makes the val file
  a copy of the test file, which the training run then reports as val = test).
* Moments: ``<cap_id> <start> <end> [<duration>]`` per line (seconds, whitespace-separated,
  ``#`` comments); a missing duration is the decoded video's length.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from benchmark.data.errors import DataError
from benchmark.data.layout import SPLITS
from benchmark.data.text import read_captions, video_id_of


@dataclass
class SplitCaptions:
    """One split's queries in file order."""

    cap_ids: list[str]
    texts: list[str]

    def video_ids(self) -> list[str]:
        return list(dict.fromkeys(video_id_of(c) for c in self.cap_ids))

    def without(self, videos: set[str]) -> "SplitCaptions":
        keep = [i for i, c in enumerate(self.cap_ids) if video_id_of(c) not in videos]
        return SplitCaptions([self.cap_ids[i] for i in keep], [self.texts[i] for i in keep])

    def text(self) -> str:
        return "".join(f"{c} {t}\n" for c, t in zip(self.cap_ids, self.texts))


def check_key(source: object, key: str, what: str) -> None:
    """Ids become HDF5 keys, BigFile frame ids (whitespace-separated, ISO-8859-1) and dict keys."""
    if not key or "/" in key or any(ch.isspace() for ch in key) or key in (".", ".."):
        raise DataError(str(source), f"{what} {key!r} cannot be stored (empty, or holds '/' or "
                                     "whitespace)", key=key)
    try:
        key.encode("iso-8859-1")
    except UnicodeEncodeError:
        raise DataError(str(source), f"{what} {key!r} is not ISO-8859-1 (BigFile id.txt "
                                     "encoding)", key=key) from None


def parse_ratio(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(v) for v in text.replace(":", ",").split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(not p >= 0 for p in parts) or parts[0] <= 0 or parts[2] <= 0:
        raise DataError(None, f"--split-ratio {text!r}: expected TRAIN,VAL,TEST with TRAIN and "
                              "TEST > 0, VAL ≥ 0 (e.g. 0.8,0.1,0.1)")
    total = sum(parts)
    return parts[0] / total, parts[1] / total, parts[2] / total


def split_by_ratio(path: str | Path, ratio: tuple[float, float, float], seed: int
                   ) -> dict[str, SplitCaptions]:
    """Split one caption file by video: a seeded permutation of the videos (first-appearance
    order), the first share to train, then val, then test; captions keep file order."""
    captions = read_captions(path)
    videos, query_video = captions.video_order()
    order = np.random.default_rng(seed).permutation(len(videos))
    n_val = int(round(ratio[1] * len(videos)))
    n_test = max(int(round(ratio[2] * len(videos))), 1)
    n_train = len(videos) - n_val - n_test
    if n_train < 1 or (ratio[1] > 0 and n_val < 1):
        raise DataError(path, f"{len(videos)} videos cannot fill the splits {ratio} with at "
                              "least one video each")
    split_of = np.empty(len(videos), dtype=np.int64)
    split_of[order[:n_train]] = 0
    split_of[order[n_train:n_train + n_val]] = 1
    split_of[order[n_train + n_val:]] = 2
    out = {}
    for number, split in enumerate(SPLITS):
        rows = np.flatnonzero(split_of[query_video] == number).tolist()
        out[split] = SplitCaptions([captions.cap_ids[i] for i in rows], [captions.texts[i] for i in rows])
    if n_val == 0:
        out["val"] = SplitCaptions(list(out["test"].cap_ids), list(out["test"].texts))
    return out


def read_splits(files: Mapping[str, str | Path]) -> dict[str, SplitCaptions]:
    """Caption files per split; a cap_id in two splits is an error."""
    out: dict[str, SplitCaptions] = {}
    owner: dict[str, str] = {}
    for split in SPLITS:
        captions = read_captions(files[split])
        for cap_id in captions.cap_ids:
            if cap_id in owner and not (split == "val" and owner[cap_id] == "test"):
                raise DataError(files[split], f"cap_id also in the {owner[cap_id]} split",
                                key=cap_id)
            owner.setdefault(cap_id, split)
        out[split] = SplitCaptions(list(captions.cap_ids), list(captions.texts))
    return out


def check_splits(splits: dict[str, SplitCaptions], source: object) -> None:
    for split in splits.values():
        for cap_id in split.cap_ids:
            check_key(source, cap_id, "cap_id")
            check_key(source, video_id_of(cap_id), "video id")


def read_moment_spans(path: str | Path) -> dict[str, tuple[float, float, float | None]]:
    """cap_id -> (start, end, duration or None)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "moments file not found")
    spans: dict[str, tuple[float, float, float | None]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.lstrip().startswith("#"):        # a comment line (cap_ids hold '#' themselves)
            continue
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (3, 4):
            raise DataError(path, f"expected '<cap_id> <start> <end> [<duration>]', got {line!r}",
                            key=number)
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise DataError(path, f"start/end/duration must be numbers, got {line!r}", key=number) from None
        if fields[0] in spans:
            raise DataError(path, f"cap_id {fields[0]!r} appears twice", key=number)
        spans[fields[0]] = (values[0], values[1], values[2] if len(values) == 3 else None)
    if not spans:
        raise DataError(path, "moments file holds no rows")
    return spans
