"""Shared fixtures: generated synthetic collections (docs/style.md §5, "tiny synthetic fixtures").

``tiny_root`` is the data root of the ``tiny`` TVR profile (seed 0), generated once per test
run; the collection is ``tiny_root / "tvr"``. ``tiny_root_for(profile)`` does the same for any
profile (tvr, activitynet, charades), each generated at most once. Treat both as read-only:
a test that damages files must copy the collection first (``shutil.copytree``).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.data.synthetic import generate


@pytest.fixture(scope="session")
def tiny_root_for(tmp_path_factory):
    cache: dict[str, Path] = {}

    def make(profile: str = "tvr") -> Path:
        if profile not in cache:
            root = tmp_path_factory.mktemp(f"tiny-{profile}")
            generate(profile, "tiny", 0, root)
            cache[profile] = root
        return cache[profile]

    return make


@pytest.fixture(scope="session")
def tiny_root(tiny_root_for) -> Path:
    return tiny_root_for("tvr")


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """The tests' tensors are tiny: one intra-op thread avoids thread start-up costs and
    oversubscribing a 2-core machine (measured: test_kdc_net 202 s with 2 threads vs 16 s with
    one on a loaded machine). Sweep workers set their own thread budget."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
