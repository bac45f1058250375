"""MLflow experiment names, run names and tags (docs/architecture.md §7)."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Mapping

_REPO = Path(__file__).resolve().parent.parent


def experiment_name(collection: str, synthetic: bool) -> str:
    """One experiment per collection, real and synthetic apart: "tvr", "tvr-synthetic"."""
    return f"{collection}-synthetic" if synthetic else collection


def run_name(variant: str, collection: str, synthetic: bool, seed: int,
             trial: int | None = None) -> str:
    """``<variant>-<collection>[-synthetic]-s<seed>``, prefixed ``t<trial:03d>-`` in a sweep."""
    name = f"{variant}-{experiment_name(collection, synthetic)}-s{seed}"
    return f"t{trial:03d}-{name}" if trial is not None else name


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit() -> str:
    """HEAD commit of the source tree, or "unknown" (not a checkout, no git)."""
    out = _git("rev-parse", "HEAD")
    return out.strip() if out and out.strip() else "unknown"


def git_dirty() -> str:
    """"true"/"false" whether tracked files differ from HEAD, or "unknown"."""
    out = _git("status", "--porcelain", "--untracked-files=no")
    if out is None:
        return "unknown"
    return "true" if out.strip() else "false"


def run_tags(*, method: str, variant: str, collection: str, synthetic: bool, seed: int,
             extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The standard run tags plus ``extra`` (the registry entry's tags, e.g. reconstruction=true)."""
    tags = {"method": method, "variant": variant, "collection": collection,
            "synthetic": "true" if synthetic else "false", "seed": str(seed),
            "git_commit": git_commit(), "git_dirty": git_dirty()}
    tags.update({k: str(v) for k, v in (extra or {}).items()})
    return tags
