"""Best-epoch checkpoints: atomic save, ``weights_only`` load, config-hash check.

A checkpoint holds the model ``state_dict``, the epoch, the validation metrics that selected it
and the hash of the config that trained it (``benchmark.config.config_hash``). Loading refuses a
checkpoint whose hash differs, so weights never leak between runs with different settings.
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


def save_checkpoint(path: str | Path, state_dict: Mapping[str, torch.Tensor], *, config_hash: str,
                    epoch: int, metrics: Mapping[str, float]) -> Path:
    """Write to a temporary file in the same directory, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
               "config_hash": config_hash, "epoch": int(epoch),
               "metrics": {k: float(v) for k, v in metrics.items()}}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, *, config_hash: str, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; raise CheckpointError on a hash mismatch."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"checkpoint {path}: cannot read: {exc}") from exc
    return check_config_hash(payload, path, config_hash)


def check_config_hash(payload: Any, path: str | Path, config_hash: str) -> dict[str, Any]:
    """``payload`` (a read checkpoint) when it was written for ``config_hash``; else
    CheckpointError naming both hashes."""
    found = payload.get("config_hash") if isinstance(payload, dict) else None
    if found != config_hash:
        raise CheckpointError(f"checkpoint {path}: written for config hash {found!r}, "
                              f"this run's config hash is {config_hash!r}; refusing to load")
    return payload
