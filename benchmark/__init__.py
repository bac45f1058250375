"""prvr-bench core: config, registry, data, evaluator, training loop, tracking, CLIs.

The public API is imported lazily so that ``import benchmark`` stays cheap for the CLIs:

    load_config, create_method, list_methods, get_method, load_split, fit, run_experiment,
    evaluate_method

``evaluate`` (scores → ranks) is reached as ``benchmark.evaluate.evaluate``: the package cannot
also export a function named like its submodule, which replaces the attribute once imported.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:                      # the lazy API, visible to type checkers
    from benchmark.config import load_config
    from benchmark.data.split import load_split
    from benchmark.evaluate import evaluate_method
    from benchmark.experiment import run_experiment
    from benchmark.registry import get_method, list_methods
    from benchmark.training.loop import fit

_API = {
    "load_config": "benchmark.config",
    "list_methods": "benchmark.registry",
    "get_method": "benchmark.registry",
    "load_split": "benchmark.data.split",
    "fit": "benchmark.training.loop",
    "run_experiment": "benchmark.experiment",
    "evaluate_method": "benchmark.evaluate",
}

__all__ = [  # the lazy names of _API and create_method, written out for static tools
    "create_method", "evaluate_method", "fit", "get_method", "list_methods",
    "load_config", "load_split", "run_experiment",
]


def create_method(name: str, dims, config=None):
    """Build a registered method (or variant) by name for the given FeatureDims."""
    from benchmark.registry import get_method

    entry = get_method(name)
    return entry.cls(config if config is not None else entry.default_config, dims)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
