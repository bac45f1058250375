"""Exact resume: ``last.ckpt``, the state a killed run continues from (docs/architecture.md §5).

After every epoch the loop writes ``<run dir>/last.ckpt`` atomically (temp file, then rename;
``benchmark.training.checkpoint.write_payload``). It holds everything the rest of the run
depends on, so that a run killed at any moment and resumed ends with the same numbers, bit for
bit on CPU, as a run that was never stopped:

* ``model`` and ``optimizer`` state dicts (BertAdam's per-tensor step counts are the LR
  schedule, its moments the update);
* ``rng``: python, numpy, torch (and CUDA) and the shuffle generator (``benchmark.seeding``);
* ``loop``: epochs finished, the global step, the early-stop counter, the best validation
  SumR, its epoch and its per-query ranks (the record's ``val`` is a view of them), the
  epoch and validation times (the record's means cover every epoch), whether the run stopped
  early, and the tracker's run id (a resumed CLI run continues the same MLflow run);
* ``config_hash``: a resume under any other setting that changes the weights is refused.

The best weights stay in ``best.pt``. A run directory with ``record.json`` is finished and is
not resumed. Reading the file consumes no RNG; neither does writing it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.evaluate import EvalResult, KeyRanks
from benchmark.seeding import restore_rng_state, rng_state
from benchmark.training.checkpoint import CheckpointError, check_config_hash, read_payload, write_payload

LAST_CHECKPOINT = "last.ckpt"
RECORD_NAME = "record.json"
FORMAT = "prvr-bench last.ckpt v1"
_SECTIONS = ("model", "optimizer", "rng", "loop")


class ResumeError(CheckpointError):
    """A run cannot be resumed: no or a damaged ``last.ckpt``, another config, or a finished
    run. The message names the file and the problem."""


@dataclass
class LoopState:
    """The training loop's own state between two epochs (fresh run: the defaults)."""

    epochs_done: int = 0                  # the next epoch to train (0-based)
    step: int = 0                         # optimiser steps taken
    es_cnt: int = 0                       # validations without strict improvement
    best_sumr: float = -math.inf
    best_epoch: int = -1
    best_val: EvalResult | None = None    # per-query ranks of the best validation
    epoch_times: list[float] = field(default_factory=list)
    eval_times: list[float] = field(default_factory=list)
    stopped_early: bool = False
    run_id: str | None = None             # the tracker's run (None: not tracked)


def _array(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(values, copy=True))     # a writable copy: no torch warning


def _eval_payload(result: EvalResult) -> dict[str, Any]:
    return {"per_key": {key: {"rank": _array(r.rank), "ties": _array(r.ties), "ap": _array(r.ap)}
                        for key, r in result.per_key.items()},
            "query_ids": [str(q) for q in result.query_ids],
            "mv": None if result.mv is None else _array(np.asarray(result.mv, dtype=np.float64)),
            "synthetic": bool(result.synthetic), "relevance_mode": result.relevance_mode}


def _eval_from_payload(d: dict[str, Any]) -> EvalResult:
    per_key = {key: KeyRanks(rank=r["rank"].numpy(), ties=r["ties"].numpy(), ap=r["ap"].numpy())
               for key, r in d["per_key"].items()}
    return EvalResult(per_key=per_key, query_ids=np.asarray(d["query_ids"], dtype=np.str_),
                      mv=None if d["mv"] is None else d["mv"].numpy(),
                      synthetic=d["synthetic"], relevance_mode=d["relevance_mode"])


def save_last(path: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
              generator: torch.Generator, state: LoopState, config_hash: str) -> Path:
    """Write ``last.ckpt`` (module docstring) atomically."""
    loop = {"epochs_done": state.epochs_done, "step": state.step, "es_cnt": state.es_cnt,
            "best_sumr": float(state.best_sumr), "best_epoch": state.best_epoch,
            "best_val": None if state.best_val is None else _eval_payload(state.best_val),
            "epoch_times": [float(t) for t in state.epoch_times],
            "eval_times": [float(t) for t in state.eval_times],
            "stopped_early": bool(state.stopped_early), "run_id": state.run_id}
    return write_payload(path, {
        "format": FORMAT, "config_hash": config_hash,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(), "rng": rng_state(generator), "loop": loop})


def read_last(path: str | Path, *, config_hash: str | None = None,
              mmap: bool = False) -> dict[str, Any]:
    """The payload of a ``last.ckpt`` on the CPU, checked: readable, of this format, complete,
    and (when ``config_hash`` is given) written for that config. ResumeError naming the file
    otherwise. ``mmap``: tensors stay on disk until touched (to look at the loop section)."""
    path = Path(path)
    try:
        payload = read_payload(path, mmap=mmap)
    except CheckpointError as exc:
        raise ResumeError(f"cannot resume: {exc}") from exc
    if payload.get("format") != FORMAT:
        raise ResumeError(f"cannot resume: {path} is not a last.ckpt (format "
                          f"{payload.get('format')!r}, expected {FORMAT!r})")
    missing = [name for name in _SECTIONS if name not in payload]
    if missing:
        raise ResumeError(f"cannot resume: {path} lacks {', '.join(missing)}")
    if config_hash is not None:
        try:
            check_config_hash(payload, path, config_hash)
        except CheckpointError as exc:
            raise ResumeError(f"cannot resume: {exc} (resume with the command that started "
                              "the run)") from exc
    return payload


def load_last(path: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
              generator: torch.Generator, config_hash: str) -> LoopState:
    """Restore ``model``, ``optimizer`` and every RNG from ``last.ckpt``; return the loop's
    state. Call it after everything that seeds or draws (method, optimiser, ``seed_everything``).

    The file is read onto the CPU whatever the device: RNG states must be CPU byte tensors and
    the best ranks become numpy arrays; ``load_state_dict`` copies weights and optimiser
    moments onto the device of the parameters."""
    payload = read_last(path, config_hash=config_hash)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    restore_rng_state(payload["rng"], generator)
    loop = payload["loop"]
    return LoopState(epochs_done=loop["epochs_done"], step=loop["step"], es_cnt=loop["es_cnt"],
                     best_sumr=loop["best_sumr"], best_epoch=loop["best_epoch"],
                     best_val=None if loop["best_val"] is None else _eval_from_payload(loop["best_val"]),
                     epoch_times=list(loop["epoch_times"]), eval_times=list(loop["eval_times"]),
                     stopped_early=loop["stopped_early"], run_id=loop["run_id"])


def check_resumable(run_dir: str | Path, config_hash: str) -> dict[str, Any]:
    """The ``loop`` section of ``run_dir``'s last.ckpt when the run can be resumed under
    ``config_hash``; ResumeError when the folder is missing, the run finished (``record.json``
    exists), or last.ckpt is missing, damaged or another config's."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResumeError(f"cannot resume: run directory {run_dir} does not exist")
    record = run_dir / RECORD_NAME
    if record.is_file():
        raise ResumeError(f"cannot resume: the run in {run_dir} is finished ({record} exists); "
                          "start a new run instead")
    return read_last(run_dir / LAST_CHECKPOINT, config_hash=config_hash, mmap=True)["loop"]


def find_latest_resumable(checkpoints: str | Path, config_hash: str) -> Path:
    """``--resume auto``: of the run directories under ``checkpoints`` whose last.ckpt was
    written for ``config_hash`` and whose run has not finished, the one written last."""
    checkpoints = Path(checkpoints)
    candidates = sorted(checkpoints.glob(f"*/{LAST_CHECKPOINT}"),
                        key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for last in candidates:
        if (last.parent / RECORD_NAME).is_file():
            continue
        try:
            read_last(last, config_hash=config_hash, mmap=True)
        except ResumeError:
            continue
        return last.parent
    raise ResumeError(f"cannot resume: no unfinished run under {checkpoints} has a last.ckpt "
                      f"for config hash {config_hash[:12]}… ({len(candidates)} last.ckpt file(s) "
                      "looked at); pass the run directory to --resume, or start a new run")
