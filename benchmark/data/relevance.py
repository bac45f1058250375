"""Dense relevance labels: several positive videos per query (multi-positive evaluation).

Input: JSON lines with ``query_id`` (a cap_id) and ``gt_video_ids`` (list of video ids), the
format of ``*denseval.gt.jsonl`` (docs/datasets.md §5.6). The first id is the query's own
video; later ids are extra positives. These labels are *not* the standard PRVR protocol, which
has exactly one positive per query (docs/methods.md §1.5).

Attaching to a split: a file that lists none of the split's queries belongs to another split
and gives ``None``. Otherwise every listed query and video must belong to the split (an
unknown id raises, naming the file and the id), every list must contain the query's own
video, and queries the file does not list (TVR's file keeps only type-v queries) keep their
own video as the single positive.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .annotations import json_lines
from .errors import DataError


def read_relevance(path: str | Path) -> dict[str, list[str]]:
    """``query_id -> gt_video_ids`` in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "relevance file not found")
    labels: dict[str, list[str]] = {}
    for number, row in json_lines(path.read_text(encoding="utf-8"), str(path)):
        query = row.get("query_id")
        videos = row.get("gt_video_ids")
        if not isinstance(query, str):
            raise DataError(path, "row needs a string 'query_id'", key=number)
        if not isinstance(videos, list) or not videos or not all(isinstance(v, str) for v in videos):
            raise DataError(path, "'gt_video_ids' must be a non-empty list of strings", key=query)
        if query in labels:
            raise DataError(path, "query listed twice", key=query)
        labels[query] = videos
    if not labels:
        raise DataError(path, "relevance file holds no rows")
    return labels


def relevance_for_split(path: str | Path, cap_ids: list[str], video_ids: list[str],
                        query_video: np.ndarray) -> list[np.ndarray] | None:
    """Per-query arrays of positive video indices, or None when the file covers no query.

    Shapes: query_video (Nq,) int64 -> Nq arrays (k_i,) int64, own video included.
    """
    labels = read_relevance(path)
    query_row = {c: i for i, c in enumerate(cap_ids)}
    if not any(q in query_row for q in labels):
        return None
    video_index = {v: i for i, v in enumerate(video_ids)}
    relevance = [np.array([own], dtype=np.int64) for own in query_video.tolist()]
    for query, videos in labels.items():
        row = query_row.get(query)
        if row is None:
            raise DataError(path, "query is not in the split's caption file", key=query)
        try:
            index = list(dict.fromkeys(video_index[v] for v in videos))   # unique, file order
        except KeyError as exc:
            raise DataError(path, f"video {exc.args[0]!r} of this query is not in the split",
                            key=query) from None
        own = int(query_video[row])
        if own not in index:
            raise DataError(path, f"gt_video_ids lacks the query's own video {video_ids[own]!r}",
                            key=query)
        relevance[row] = np.array(index, dtype=np.int64)
    return relevance
