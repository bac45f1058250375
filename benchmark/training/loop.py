"""The one training loop (docs/architecture.md §5; docs/methods.md §1.5, §3.5).

``fit`` reads top to bottom: seed; reference optimiser and schedule; per epoch, loop over
video-centric batches (``compute_loss``, finiteness check naming the term, backward, step), log
the epoch means of every returned key under ``train/``, validate, checkpoint when val SumR
strictly improves, run the hooks, stop early after the reference patience; then reload the best
checkpoint, evaluate test, write the artifacts and return the RunRecord.

Selection uses validation SumR of the ``"score"`` key only; test metrics never select anything.
The loop never imports mlflow: it writes through a ``RunTracker``; whoever opened the run closes
it (FINISHED or FAILED), so finished epochs survive a crash.
"""
from __future__ import annotations

import contextlib
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
from torch import Tensor

from benchmark import stores
from benchmark.config import ExperimentConfig, config_hash, config_to_dict, save_config
from benchmark.console import TrainingConsole
from benchmark.data.loaders import steps_per_epoch as count_steps, train_batches
from benchmark.evaluate import EvalResult, evaluate_method
from benchmark.interface import PRVRMethod, Progress
from benchmark.memory import peak_rss_mb, reset_peak_rss
from benchmark.naming import git_commit, run_name
from benchmark.record import RECORD_METRICS, RunRecord, select_metrics
from benchmark.registry import get_method
from benchmark.seeding import seed_everything
from benchmark.tracker import NullTracker, RunTracker
from benchmark.training.checkpoint import load_checkpoint, save_checkpoint
from benchmark.training.optim import build_optimizer

#: Metrics logged per evaluated split and score key (besides the record's eight).
LOGGED_EXTRA = ("tied_queries",)
CHECKPOINT_NAME = "best.pt"


class NonFiniteLossError(FloatingPointError):
    """A term returned by ``compute_loss`` is NaN or infinite; the message names it."""


@dataclass(frozen=True)
class EpochSummary:
    """What a hook sees after each validation: the epoch (0-based) and that epoch's metrics
    (``train/*``, ``val/*`` including ``val/SumR``, ``time/*``, ``sys/*``)."""

    epoch: int
    metrics: dict[str, float]


Hook = Callable[[EpochSummary], None]


def resolve_device(name: str) -> torch.device:
    """"auto" → CUDA when available, else CPU; "cuda" without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available; use --device cpu or auto")
    return torch.device(name)


def split_metrics(prefix: str, result: EvalResult) -> dict[str, float]:
    """``<prefix>/R1`` ... for the "score" key, ``<prefix>/<key>/R1`` ... for secondary keys."""
    out: dict[str, float] = {}
    for key in result.keys:
        metrics = select_metrics(result.metrics(key), LOGGED_EXTRA)
        head = prefix if key == result.primary_key else f"{prefix}/{key}"
        out.update({f"{head}/{name}": value for name, value in metrics.items()})
    return out


def mv_breakdown(result: EvalResult, edges) -> dict[str, dict]:
    """Record form of the test M/V bins: label → metrics + n_queries, or {"absent": reason}."""
    if not result.has_mv:
        return {"absent": "no moments table was loaded for the test split"}
    out = {}
    for label, metrics in result.by_mv(edges=list(edges)).items():
        row = select_metrics(metrics)
        row["n_queries"] = int(metrics["n_queries"])
        out[label] = row
    return out


def _check_finite(out: Mapping[str, Tensor], epoch: int, step: int, method_name: str) -> None:
    """One device sync per step for all terms; on failure name every bad term."""
    flags = torch.stack([torch.isfinite(v.detach()).all() for v in out.values()])   # (K,)
    if bool(flags.all()):
        return
    bad = [name for name, ok in zip(out, flags.tolist()) if not ok]
    raise NonFiniteLossError(f"{method_name}: non-finite loss term(s) {', '.join(map(repr, bad))} "
                             f"at epoch {epoch} (0-based), step {step}")


def _as_tensors(out: Mapping[str, Tensor | float], method_name: str) -> dict[str, Tensor]:
    if "loss" not in out:
        raise ValueError(f"{method_name}: compute_loss must return a 'loss' entry, got {sorted(out)}")
    return {k: v if isinstance(v, Tensor) else torch.as_tensor(float(v)) for k, v in out.items()}


def _finite_only(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


def _write_mv_csv(path: Path, breakdown: Mapping[str, Mapping[str, float]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["bin", "n_queries", *RECORD_METRICS])
        for label, row in breakdown.items():
            writer.writerow([label, row["n_queries"], *(row[m] for m in RECORD_METRICS)])
    return path


def fit(method: PRVRMethod, splits: Mapping[str, object], cfg: ExperimentConfig,
        tracker: RunTracker | None = None, hooks: Iterable[Hook] = (), *,
        run_dir: str | Path | None = None, console: TrainingConsole | None = None) -> RunRecord:
    """Train ``method`` on ``splits["train"]``, select on ``"val"``, report ``"test"``.

    ``splits`` maps "train", "val", "test" to ``SplitData``. ``run_dir`` defaults to
    ``<runs>/checkpoints/<run id or run name + time>/``; it receives best.pt, record.json,
    config.json, ranks_val.npz, ranks_test.npz and (with moments) mv.csv, each also sent to
    ``tracker.log_artifact``. A hook may raise to stop the run; the exception propagates.
    """
    tracker = tracker if tracker is not None else NullTracker()
    entry = get_method(cfg.method_name)
    train, val, test = splits["train"], splits["val"], splits["test"]
    device = resolve_device(cfg.device)
    name = run_name(cfg.method_name, cfg.data.collection, bool(train.synthetic), cfg.seed)
    run_dir = Path(run_dir) if run_dir is not None else stores.checkpoint_dir(
        cfg.tracking.runs_dir, tracker.run_id or f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6}")
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = run_dir / CHECKPOINT_NAME
    chash = config_hash(cfg)

    # -- set-up: seeds, device, reference optimiser over the whole run -------------------------
    generator = seed_everything(cfg.seed)      # drives the batch shuffle only
    reset_peak_rss()                           # peak of this fit (loaded splits included)
    method.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    num_epochs, batch_size = cfg.train.epochs, cfg.train.batch_size
    steps_per_epoch = count_steps(train, batch_size)            # the loader keeps the last batch
    optimizer = build_optimizer(method, cfg.optim, t_total=steps_per_epoch * num_epochs)
    eval_kwargs = dict(query_chunk=cfg.eval.query_chunk, video_chunk=cfg.eval.video_chunk, device=device)

    val_equals_test = val.caption_sha256 == test.caption_sha256
    own_console = console is None
    console = console or TrainingConsole(num_epochs, steps_per_epoch, title=cfg.method_name)
    if val_equals_test:
        console.warn("val and test caption files hash the same: model selection sees the test "
                     "set (tagged val_equals_test=true)")
        tracker.set_tags({"val_equals_test": "true"})

    best_sumr, best_epoch, best_val, es_cnt = -math.inf, -1, None, 0
    epoch_times, eval_times = [], []
    step, epochs_run, stopped_early = 0, 0, False
    anomaly = torch.autograd.detect_anomaly if cfg.train.detect_anomaly else contextlib.nullcontext
    with console if own_console else contextlib.nullcontext():
        for epoch in range(num_epochs):
            # -- train one epoch ---------------------------------------------------------------
            method.train()
            console.start_epoch(epoch)
            started = time.perf_counter()
            sums: dict[str, Tensor] = {}
            batches = 0
            for batch in train_batches(train, batch_size, generator, sort_by=method.batch_sort):
                batch = batch.to(device)
                progress = Progress(epoch=epoch, num_epochs=num_epochs, step=step,
                                    steps_per_epoch=steps_per_epoch)
                with anomaly():
                    out = _as_tensors(method.compute_loss(batch, progress), cfg.method_name)
                    _check_finite(out, epoch, step, cfg.method_name)
                    optimizer.zero_grad(set_to_none=True)
                    out["loss"].backward()
                optimizer.step()
                step += 1
                batches += 1
                for key, value in out.items():           # accumulate on device: no per-step sync
                    value = value.detach().float().mean()
                    sums[key] = sums[key] + value if key in sums else value
                console.advance()
            epoch_times.append(time.perf_counter() - started)
            epochs_run = epoch + 1
            metrics = {f"train/{k}": (v / max(batches, 1)).item() for k, v in sums.items()}
            metrics["train/lr"] = optimizer.current_lr()
            metrics["time/epoch_seconds"] = epoch_times[-1]

            # -- validate, select, checkpoint ------------------------------------------------
            validate = (epoch + 1) % cfg.train.val_every == 0 or epoch + 1 == num_epochs
            if validate:
                started = time.perf_counter()
                val_result = evaluate_method(method, val, **eval_kwargs)
                eval_times.append(time.perf_counter() - started)
                metrics.update(split_metrics("val", val_result))
                metrics["time/eval_seconds"] = eval_times[-1]
                sumr = val_result.metrics()["SumR"]
                if sumr > best_sumr:                     # ref: strict improvement
                    best_sumr, best_epoch, best_val, es_cnt = sumr, epoch, val_result, 0
                    save_checkpoint(checkpoint, method.state_dict(), config_hash=chash,
                                    epoch=epoch, metrics={"val/SumR": sumr})
                else:
                    es_cnt += 1
            metrics["sys/peak_rss_mb"] = peak_rss_mb()
            if device.type == "cuda":
                metrics["sys/cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            tracker.log_metrics(_finite_only(metrics), step=epoch)    # one batched call per epoch
            console.end_epoch(epoch, metrics, best_epoch)
            if validate:
                for hook in hooks:
                    hook(EpochSummary(epoch, dict(metrics)))
            if es_cnt > cfg.train.early_stop_patience:   # ref: stop when es_cnt > max_es_cnt
                stopped_early = True
                break

    # -- reload the selected epoch and report test -----------------------------------------------
    payload = load_checkpoint(checkpoint, config_hash=chash, map_location=device)
    method.load_state_dict(payload["state_dict"])
    started = time.perf_counter()
    test_result = evaluate_method(method, test, **eval_kwargs)
    test_seconds = time.perf_counter() - started
    by_mv = mv_breakdown(test_result, cfg.eval.mv_edges)
    final = split_metrics("test", test_result)
    if "absent" not in by_mv:
        for label, row in by_mv.items():
            final.update({f"test_mv/{label}/{k}": v for k, v in row.items()})
    final["time/test_eval_seconds"] = test_seconds
    final["sys/peak_rss_mb"] = peak_rss_mb()
    cuda_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    if cuda_peak is not None:
        final["sys/cuda_peak_mb"] = cuda_peak
    tracker.log_metrics(_finite_only(final), step=epochs_run)

    record = RunRecord(
        method=entry.base, variant=cfg.method_name, collection=cfg.data.collection,
        synthetic=bool(train.synthetic), seed=cfg.seed, config=config_to_dict(cfg),
        val=select_metrics(best_val.metrics()), test=select_metrics(test_result.metrics()),
        test_by_mv=by_mv,
        secondary={split: {k: select_metrics(r.metrics(k)) for k in r.keys if k != r.primary_key}
                   for split, r in (("val", best_val), ("test", test_result))},
        epoch_seconds=sum(epoch_times) / len(epoch_times),
        eval_seconds=sum(eval_times) / len(eval_times) if eval_times else 0.0,
        peak_rss_mb=peak_rss_mb(), cuda_peak_mb=cuda_peak, best_epoch=best_epoch,
        epochs_run=epochs_run, stopped_early=stopped_early, val_equals_test=val_equals_test,
        git_commit=git_commit(), run_id=tracker.run_id, run_dir=str(run_dir))

    # -- artifacts ---------------------------------------------------------------------------
    artifacts = [record.save(run_dir / "record.json"), save_config(cfg, run_dir / "config.json"),
                 test_result.save(run_dir / "ranks_test.npz"), best_val.save(run_dir / "ranks_val.npz")]
    if "absent" not in by_mv:
        artifacts.append(_write_mv_csv(run_dir / "mv.csv", by_mv))
    for path in artifacts:
        tracker.log_artifact(path)
    console.info(f"{cfg.method_name}: best epoch {best_epoch + 1}, val SumR {best_sumr:.2f}, "
                 f"test SumR {record.test['SumR']:.2f}; outputs in {run_dir}")
    return record
