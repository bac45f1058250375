"""Checkpoints: atomic save, ``weights_only`` load, config-hash check.

Two kinds of file, written and read by the same two functions (``write_payload`` /
``read_payload``):

* ``best.pt``, the best-epoch checkpoint: the model ``state_dict``, the epoch, the validation
  metrics that selected it and the hash of the config that trained it
  (``benchmark.config.config_hash``) — ``save_checkpoint`` / ``load_checkpoint``;
* ``last.ckpt``, the state a killed run resumes from (``benchmark.training.resume``).

Both hold only tensors, numbers, strings and containers, so ``torch.load(weights_only=True)``
reads them and nothing in them can run code. Loading refuses a checkpoint whose config hash
differs, so weights never leak between runs with different settings.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from benchmark.errors import PRVRBenchError


class CheckpointError(PRVRBenchError, ValueError):
    """A checkpoint is missing, unreadable or belongs to another config."""


def write_payload(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """``torch.save`` to a temporary file in the same directory, then rename over ``path``:
    a reader (or a run killed mid-write) sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(dict(payload), handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_payload(path: str | Path, *, map_location: Any = "cpu",
                 mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (``mmap``: tensors are mapped, read when
    touched); CheckpointError when it is missing, damaged or not a dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"checkpoint {path}: cannot read: {exc}") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path}: holds a {type(payload).__name__}, "
                              "not a prvr-bench checkpoint")
    return payload


def save_checkpoint(path: str | Path, state_dict: Mapping[str, torch.Tensor], *, config_hash: str,
                    epoch: int, metrics: Mapping[str, float]) -> Path:
    """Write a best-epoch checkpoint atomically."""
    return write_payload(path, {"state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
                                "config_hash": config_hash, "epoch": int(epoch),
                                "metrics": {k: float(v) for k, v in metrics.items()}})


def load_checkpoint(path: str | Path, *, config_hash: str, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint (``read_payload``); raise CheckpointError on a hash mismatch."""
    return check_config_hash(read_payload(path, map_location=map_location), path, config_hash)


def check_config_hash(payload: Any, path: str | Path, config_hash: str) -> dict[str, Any]:
    """``payload`` (a read checkpoint) when it was written for ``config_hash``; else
    CheckpointError naming both hashes."""
    found = payload.get("config_hash") if isinstance(payload, dict) else None
    if found != config_hash:
        raise CheckpointError(f"checkpoint {path}: written for config hash {found!r}, "
                              f"this run's config hash is {config_hash!r}; refusing to load")
    return payload
