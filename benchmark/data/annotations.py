"""Moments tables: per-query moment spans and video durations, for the M/V breakdown.

A moments table is JSON lines, one query per line, with at least::

    {"cap_id": "<video_id>#enc#<k>", "ts": [start, end], "duration": T}

(seconds; the ``derived/*_prvr_test_moments.jsonl`` files of docs/datasets.md §5.6 have this
form plus extra fields, which are ignored). A name ending in ``.gz`` is gzip'd.

M/V (docs/datasets.md §1): swap a reversed span, clip it to [0, T], divide its length by T and
round to 6 decimals, because stored times carry float noise and many values sit on bin edges.

Converters rebuild a table from the upstream annotations (docs/datasets.md §5, §7):

* TVR ``tvr_*_release.jsonl``: records grouped by ``vid_name`` in file order; k is the record's
  position among its video's records; videos in first-appearance order.
* ActivityNet Captions ``{train,val}.json``: k indexes ``timestamps`` of ``data[video_id]``; the
  natural order is the JSON key order, sentences in array order.
* Charades-STA ``charades_sta_*.txt`` (``VID s e##sentence``) with durations from the Charades
  csv column ``length``; grouped by video in file order.

``select(order)`` restricts and reorders a table to the cap_ids of a caption file or a
``*denseval.gt.jsonl`` file (e.g. the 4,430-video PRVR ActivityNet test list).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import DataError

MV_DECIMALS = 6          # docs/datasets.md §1 precision rule
BUILTIN_COLLECTIONS = ("tvr", "activitynet", "charades")


def builtin_name(collection: str) -> str:
    return f"{collection}_test_moments.jsonl.gz"


def moment_video_ratio(ts: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """M/V = ``max(0, min(e, T) - max(s, 0)) / T`` after swapping ``e < s``, rounded to 6 decimals.

    Shapes: ts (N, 2) seconds, duration (N,) seconds -> (N,) float64 in [0, 1].
    """
    ts = np.asarray(ts, dtype=np.float64).reshape(-1, 2)
    duration = np.asarray(duration, dtype=np.float64).reshape(-1)
    start, end = ts.min(axis=1), ts.max(axis=1)                          # swap reversed spans
    inside = np.minimum(end, duration) - np.maximum(start, 0.0)          # (N,) clipped length
    return np.round(np.maximum(inside, 0.0) / duration, MV_DECIMALS)


@dataclass(frozen=True)
class Moments:
    """A moments table in row order. Shapes: ts (N, 2), duration (N,), both float64 seconds."""

    cap_ids: list[str]
    ts: np.ndarray
    duration: np.ndarray
    source: str = "<memory>"
    #: upstream query text per row when built by a converter (for cap_id -> moment checks);
    #: never written to a table
    texts: list[str] | None = None

    def __len__(self) -> int:
        return len(self.cap_ids)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for cap_id in self.cap_ids:
            if cap_id in seen:
                raise DataError(self.source, "cap_id appears twice", key=cap_id)
            seen.add(cap_id)
        bad = np.flatnonzero(~(np.isfinite(self.duration) & (self.duration > 0)))
        if bad.size:
            raise DataError(self.source, f"duration {self.duration[bad[0]]!r} is not a positive "
                                         "number", key=self.cap_ids[bad[0]])
        bad = np.flatnonzero(~np.isfinite(self.ts).all(axis=1))
        if bad.size:
            raise DataError(self.source, "ts is not finite", key=self.cap_ids[bad[0]])

    def mv(self) -> np.ndarray:
        """Shapes: (N,) float64, 6 decimals."""
        return moment_video_ratio(self.ts, self.duration)

    def select(self, cap_ids: list[str], order_source: str | None = None) -> "Moments":
        """The rows of ``cap_ids`` in that order; an id not in the table raises, naming it."""
        row = {c: i for i, c in enumerate(self.cap_ids)}
        try:
            index = np.fromiter((row[c] for c in cap_ids), dtype=np.int64, count=len(cap_ids))
        except KeyError as exc:
            where = f" (listed in {order_source})" if order_source else ""
            raise DataError(self.source, f"no moment for this cap_id{where}",
                            key=exc.args[0]) from None
        texts = None if self.texts is None else [self.texts[i] for i in index.tolist()]
        return Moments(list(cap_ids), self.ts[index], self.duration[index], self.source, texts)


def _as_float(value, path, key, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(path, f"field {field!r} must be a number, got {value!r}", key=key)
    return float(value)


def _span(value, path, key, field: str = "ts") -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise DataError(path, f"field {field!r} must be [start, end], got {value!r}", key=key)
    return _as_float(value[0], path, key, field), _as_float(value[1], path, key, field)


def _build(rows: list[tuple], source: str) -> Moments:
    """rows: (cap_id, (start, end), duration[, text])."""
    ts = np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, 2)
    duration = np.array([r[2] for r in rows], dtype=np.float64)
    texts = [r[3] for r in rows] if rows and len(rows[0]) > 3 else None
    return Moments([r[0] for r in rows], ts, duration, source, texts)


def json_lines(text: str, source: str):
    """(line number, record) for each non-blank line; a line that is not a JSON object is an
    error naming the file and line."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(source, f"not a JSON object ({exc.msg})", key=number) from None
        if not isinstance(record, dict):
            raise DataError(source, "not a JSON object", key=number)
        yield number, record


def _read_text(path) -> str:
    """Text of a plain or ``.gz`` file; ``path`` may be a Path or an importlib Traversable."""
    name = getattr(path, "name", str(path))
    if not path.is_file():
        raise DataError(path, "file not found")
    data = path.read_bytes()
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("utf-8")


def read_moments(path) -> Moments:
    """Read a moments table (JSON lines, optionally ``.gz``)."""
    source = str(path)
    rows = []
    for number, record in json_lines(_read_text(path), source):
        cap_id = record.get("cap_id")
        if not isinstance(cap_id, str) or not cap_id:
            raise DataError(source, "field 'cap_id' missing or not a string", key=number)
        for field in ("ts", "duration"):
            if field not in record:
                raise DataError(source, f"field {field!r} missing", key=cap_id)
        rows.append((cap_id, _span(record["ts"], source, cap_id),
                     _as_float(record["duration"], source, cap_id, "duration")))
    if not rows:
        raise DataError(source, "moments table holds no rows")
    return _build(rows, source)


def moments_bytes(moments: Moments) -> bytes:
    """The canonical JSON-lines text of a table (cap_id, ts, duration only)."""
    out = io.StringIO()
    for cap_id, (start, end), duration in zip(moments.cap_ids, moments.ts.tolist(),
                                              moments.duration.tolist()):
        out.write(json.dumps({"cap_id": cap_id, "ts": [start, end], "duration": duration}))
        out.write("\n")
    return out.getvalue().encode("utf-8")


def write_moments(moments: Moments, path: str | Path) -> Path:
    """Write a table; a ``.gz`` name is gzip'd with mtime 0 and no file name (same bytes every time)."""
    path = Path(path)
    data = moments_bytes(moments)
    if path.name.endswith(".gz"):
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
            gz.write(data)
        data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def builtin_moments(collection: str) -> Moments | None:
    """The shipped table of a real test split (tvr, activitynet, charades), else None."""
    if collection not in BUILTIN_COLLECTIONS:
        return None
    resource = resources.files("benchmark.data").joinpath("builtin", builtin_name(collection))
    if not resource.is_file():
        return None
    return read_moments(resource)


def read_order(path: str | Path) -> list[str]:
    """cap_ids in order from a caption file (first token per line) or a JSON-lines file
    (``query_id`` or ``cap_id`` per row, e.g. ``*denseval.gt.jsonl``)."""
    path = Path(path)
    text = _read_text(path)
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        ids = []
        for number, record in json_lines(text, str(path)):
            cap_id = record.get("query_id", record.get("cap_id"))
            if not isinstance(cap_id, str):
                raise DataError(path, "row has no 'query_id' or 'cap_id' string", key=number)
            ids.append(cap_id)
    else:
        ids = [line.split(" ", 1)[0] for line in text.splitlines() if line.strip()]
    if not ids:
        raise DataError(path, "order file lists no cap_ids")
    return ids


def _cap_id(video_id: str, k: int) -> str:
    return f"{video_id}#enc#{k}"


def _grouped(records: list[tuple]):
    """(video, span, duration, text) records -> rows grouped by video in first-appearance
    order, k = position among the video's records in input order."""
    by_video: dict[str, list[tuple]] = {}
    for video, *rest in records:
        by_video.setdefault(video, []).append(tuple(rest))
    return [(_cap_id(video, k), *rest)
            for video, items in by_video.items() for k, rest in enumerate(items)]


def tvr_moments(path: str | Path) -> Moments:
    """From ``tvr_{train,val}_release.jsonl`` (docs/datasets.md §5.2)."""
    path = Path(path)
    records = []
    for number, record in json_lines(_read_text(path), str(path)):
        for field in ("vid_name", "ts", "duration"):
            if field not in record:
                raise DataError(path, f"field {field!r} missing", key=number)
        video = record["vid_name"]
        records.append((video, _span(record["ts"], path, video),
                        _as_float(record["duration"], path, video, "duration"),
                        str(record.get("desc", ""))))
    return _build(_grouped(records), str(path))


def activitynet_moments(path: str | Path) -> Moments:
    """From ActivityNet Captions ``{train,val}.json`` (docs/datasets.md §5.3), JSON key order."""
    path = Path(path)
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise DataError(path, "expected an object {video_id: {duration, timestamps, ...}}")
    rows = []
    for video, entry in data.items():
        if not isinstance(entry, dict) or "timestamps" not in entry or "duration" not in entry:
            raise DataError(path, "entry needs 'timestamps' and 'duration'", key=video)
        duration = _as_float(entry["duration"], path, video, "duration")
        sentences = entry.get("sentences") or [""] * len(entry["timestamps"])
        if len(sentences) != len(entry["timestamps"]):
            raise DataError(path, f"{len(sentences)} sentences but {len(entry['timestamps'])} "
                                  "timestamps", key=video)
        for k, (span, text) in enumerate(zip(entry["timestamps"], sentences)):
            rows.append((_cap_id(video, k), _span(span, path, video, "timestamps"), duration,
                         str(text)))
    return _build(rows, str(path))


def charades_durations(path: str | Path) -> dict[str, float]:
    """Video lengths in seconds from the Charades csv (columns ``id`` and ``length``)."""
    path = Path(path)
    reader = csv.DictReader(io.StringIO(_read_text(path)))
    if not reader.fieldnames or "id" not in reader.fieldnames or "length" not in reader.fieldnames:
        raise DataError(path, f"csv needs columns 'id' and 'length', has {reader.fieldnames}")
    lengths = {}
    for row in reader:
        try:
            lengths[row["id"]] = float(row["length"])
        except (TypeError, ValueError):
            raise DataError(path, f"length {row['length']!r} is not a number", key=row["id"]) from None
    return lengths


def charades_moments(path: str | Path, durations: str | Path) -> Moments:
    """From ``charades_sta_*.txt`` plus the Charades csv lengths (docs/datasets.md §5.4)."""
    path = Path(path)
    lengths = charades_durations(durations)
    records = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        head, sep, sentence = line.partition("##")
        fields = head.split()
        if not sep or len(fields) != 3:
            raise DataError(path, f"expected 'VID start end##sentence', got {line!r}", key=number)
        video = fields[0]
        try:
            span = (float(fields[1]), float(fields[2]))
        except ValueError:
            raise DataError(path, f"times are not numbers in {line!r}", key=number) from None
        if video not in lengths:
            raise DataError(durations, "video has no 'length' row", key=video)
        records.append((video, span, lengths[video], sentence))
    return _build(_grouped(records), str(path))


def convert(format: str, input: str | Path, *, durations: str | Path | None = None,
            order: str | Path | None = None) -> Moments:
    """One entry point for the three converters (used by ``python -m benchmark.moments``)."""
    if format == "tvr":
        moments = tvr_moments(input)
    elif format == "activitynet":
        moments = activitynet_moments(input)
    elif format == "charades":
        if durations is None:
            raise DataError(input, "Charades-STA needs --durations (the Charades csv with 'length')")
        moments = charades_moments(input, durations)
    else:
        raise DataError(None, f"unknown moments format {format!r}; expected tvr, activitynet "
                              "or charades")
    if order is not None:
        moments = moments.select(read_order(order), str(order))
    return moments


def split_coverage(moments: Moments, cap_ids: list[str]) -> np.ndarray | None:
    """M/V per query of a split, or None when the table covers none of its cap_ids.

    Partial coverage raises, naming the first cap_id without a moment.

    Shapes: returns (Nq,) float64 or None.
    """
    row = {c: i for i, c in enumerate(moments.cap_ids)}
    index = np.fromiter((row.get(c, -1) for c in cap_ids), dtype=np.int64, count=len(cap_ids))
    missing = index < 0
    if missing.all():
        return None
    if missing.any():
        first = cap_ids[int(np.flatnonzero(missing)[0])]
        raise DataError(moments.source, f"covers {int((~missing).sum())} of {len(cap_ids)} "
                                        "queries of the split; no moment for this cap_id", key=first)
    return moments.mv()[index]
