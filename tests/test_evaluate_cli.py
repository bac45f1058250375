"""``python -m benchmark.evaluate`` and the safe checkpoint reader, on real files only.

Here: the opt-in score matrices of the evaluator come from the very blocks it ranks.
"""
from __future__ import annotations

import numpy as np
import torch

from benchmark.config import load_config
from benchmark.data.split import load_split
from benchmark.evaluate import evaluate, evaluate_method, evaluate_method_with_scores
from benchmark.registry import get_method

# ------------------------------------------------------------------------------------------------
# The scoring path and the shared reference files
# ------------------------------------------------------------------------------------------------

def test_scores_come_from_the_evaluators_own_blocks(tiny_root):
    """Every score key of a multi-key method (ms-sl: score, clip, frame), chunked: the kept
    matrices rank exactly to ``evaluate_method``'s ranks."""
    cfg = load_config("ms-sl", "tvr", data_root=tiny_root, overrides={"method.hidden_size": 16})
    entry = get_method("ms-sl")
    split = load_split(tiny_root, "tvr", "test", requires=entry.cls.requirements(cfg.method))
    torch.manual_seed(0)
    method = entry.cls(cfg.method, split.dims)
    plain = evaluate_method(method, split, query_chunk=7, video_chunk=5)
    result, scores = evaluate_method_with_scores(method, split, query_chunk=7, video_chunk=5)
    assert set(scores) == set(plain.keys) == {"score", "clip", "frame"}
    again = evaluate(scores, split.query_video)
    for key in plain.keys:
        assert scores[key].shape == (split.num_queries, split.num_videos)
        for name in ("rank", "ties", "ap"):
            assert np.array_equal(getattr(result[key], name), getattr(plain[key], name))
            assert np.array_equal(getattr(again[key], name), getattr(plain[key], name))
