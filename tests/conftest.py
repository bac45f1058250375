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
