"""The one training loop (docs/architecture.md §5; docs/methods.md §1.5, §3.5).

``fit`` reads top to bottom: seed; reference optimiser and schedule; with ``resume``, restore
all of it from ``last.ckpt``; per epoch, loop over video-centric batches (``compute_loss``,
finiteness check naming the term, backward, step), log the epoch means of every returned key
under ``train/``, validate, checkpoint when val SumR strictly improves, write ``last.ckpt``
(``benchmark.training.resume``), run the hooks, stop early after the reference patience; then
reload the best checkpoint, evaluate test, write the artifacts and return the RunRecord.

Selection uses validation SumR of the ``"score"`` key only; test metrics never select anything.
The loop never imports mlflow: it writes through a ``RunTracker``; whoever opened the run closes
it (FINISHED or FAILED), so finished epochs survive a crash.
"""
from __future__ import annotations

import contextlib
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
from benchmark.data.loaders import steps_per_epoch as count_steps
from benchmark.data.loaders import train_batches
from benchmark.data.split import SplitData
from benchmark.errors import PRVRBenchError
from benchmark.evaluate import EvalResult, evaluate_method
from benchmark.interface import Progress, PRVRMethod
from benchmark.memory import AnonPeak, bound_heap, peak_rss_mb, reset_peak_rss
from benchmark.naming import RunIdentity, Tag, flag
from benchmark.precision import forward_autocast, ieee_float32
from benchmark.record import RunRecord
from benchmark.seeding import seed_everything
from benchmark.tracker import NullTracker, RunTracker
from benchmark.training.checkpoint import load_checkpoint, save_checkpoint
from benchmark.training.optim import build_optimizer
from benchmark.training.resume import LAST_CHECKPOINT, RECORD_NAME, LoopState, load_last, save_last
from benchmark.views import SplitView, split_view

CHECKPOINT_NAME = "best.pt"


class NonFiniteLossError(PRVRBenchError, FloatingPointError):
    """A term returned by ``compute_loss`` is NaN or infinite; the message names it."""


class TrainingError(PRVRBenchError, RuntimeError):
    """The run cannot go on (no device, nothing to select); the message says why."""


@dataclass(frozen=True)
class EpochSummary:
    """What a hook sees after each validation: the epoch (0-based), that epoch's metrics
    (``train/*``, ``val/*`` including ``val/SumR``, ``time/*``, ``sys/*``), and the selection
    state the loop keeps: the best validation SumR so far and its epoch (the checkpoint that
    the test evaluation will use)."""

    epoch: int
    metrics: dict[str, float]
    best_val_sumr: float
    best_epoch: int


Hook = Callable[[EpochSummary], None]


def resolve_device(name: str) -> torch.device:
    """"auto" → CUDA when available, else CPU; "cuda" without CUDA is an error. On CUDA,
    float32 stays IEEE float32 (no TF32; benchmark/precision.py)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' requested but CUDA is not available; use --device cpu or auto")
    device = torch.device(name)
    if device.type == "cuda":
        ieee_float32()
    return device


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
        raise TrainingError(f"{method_name}: compute_loss must return a 'loss' entry, got {sorted(out)}")
    return {k: v if isinstance(v, Tensor) else torch.as_tensor(float(v)) for k, v in out.items()}


def _memory_metrics(anon: AnonPeak) -> dict[str, float]:
    """``sys/peak_anon_mb`` (RssAnon), ``sys/peak_file_mb`` (RssFile: mapped feature pages) and
    ``sys/peak_rss_mb`` (VmHWM, the whole resident set) since fit started; a figure that
    ``/proc`` lacks is left out."""
    figures = {"sys/peak_anon_mb": anon.peak_mb(), "sys/peak_file_mb": anon.file_peak_mb(),
               "sys/peak_rss_mb": peak_rss_mb()}
    return {k: v for k, v in figures.items() if math.isfinite(v)}


def fit(method: PRVRMethod, splits: Mapping[str, SplitData], cfg: ExperimentConfig,
        tracker: RunTracker | None = None, hooks: Iterable[Hook] = (), *,
        identity: RunIdentity | None = None, run_dir: str | Path | None = None,
        console: TrainingConsole | None = None, resume: bool = False) -> RunRecord:
    """Train ``method`` on ``splits["train"]``, select on ``"val"``, report ``"test"``.

    ``splits`` maps "train", "val", "test" to ``SplitData``; ``identity`` names the run (built
    from ``cfg`` and the data when not given). ``run_dir`` defaults to
    ``<runs>/checkpoints/<run id, or run name + time>/``; it receives best.pt, config.json,
    ranks_val.npz, ranks_test.npz and record.json, each also sent to ``tracker.log_artifact``,
    and after every epoch last.ckpt, removed once record.json is written. ``resume=True``
    continues the run in ``run_dir`` from its last.ckpt (ResumeError when it cannot); the
    epochs before it are not logged again.
    Every reported number is a view of those ranks (``benchmark.views``). A hook may raise to
    stop the run; the exception propagates. Memory is reported as the peak anonymous RSS of the
    fit (``sys/peak_anon_mb``; loaded splits included, mapped feature pages not), beside the
    peak file-backed RSS (``sys/peak_file_mb``: mapped feature pages), the peak of the whole
    resident set (``sys/peak_rss_mb``: VmHWM) and, on CUDA, the allocator peak.
    """
    if resume and run_dir is None:
        raise TrainingError(f"{cfg.method_name}: resume needs the run directory to resume from")
    if cfg.data.bound_heap:                  # freed batches and activations leave the RSS
        bound_heap()
    with AnonPeak() as anon:
        return _fit(method, splits, cfg, tracker, hooks, identity, run_dir, console, anon, resume)


def _fit(method: PRVRMethod, splits: Mapping[str, SplitData], cfg: ExperimentConfig,
         tracker: RunTracker | None, hooks: Iterable[Hook], identity: RunIdentity | None,
         run_dir: str | Path | None, console: TrainingConsole | None, anon: AnonPeak,
         resume: bool) -> RunRecord:
    from benchmark.experiment import identify

    tracker = tracker if tracker is not None else NullTracker()
    train, val, test = splits["train"], splits["val"], splits["test"]
    identity = identity if identity is not None else identify(cfg, bool(train.synthetic))
    device = resolve_device(cfg.device)
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6}"
    run_dir = Path(run_dir) if run_dir is not None else stores.checkpoint_dir(
        cfg.tracking.runs_dir, identity.run_dir_name(tracker.run_id, stamp))
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint, last = run_dir / CHECKPOINT_NAME, run_dir / LAST_CHECKPOINT
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
    clock = cfg.train.schedule_clock
    # early-stop patience is schedule time: reference epochs without improvement
    run_clock = Progress(epoch=0, num_epochs=num_epochs, step=0, steps_per_epoch=steps_per_epoch,
                         clock=clock, reference_epochs=cfg.train.reference_epochs)

    def evaluate(split: SplitData) -> EvalResult:
        return evaluate_method(method, split, query_chunk=cfg.eval.query_chunk,
                               video_chunk=cfg.eval.video_chunk, device=device)

    val_equals_test = val.caption_sha256 == test.caption_sha256
    own_console = console is None
    console = console or TrainingConsole(num_epochs, steps_per_epoch, title=cfg.method_name,
                                         what=identity.collection + " (synthetic)" * identity.synthetic)
    if val_equals_test:
        console.warn("val and test caption files hash the same: model selection sees the test "
                     "set (tagged val_equals_test=true)")
        tracker.set_tags({Tag.VAL_EQUALS_TEST: flag(True)})

    # -- resume: weights, optimiser, every RNG and the loop's counters from last.ckpt -----------
    state = LoopState()
    if resume:           # after everything above that seeds or draws
        state = load_last(last, model=method, optimizer=optimizer, generator=generator,
                          config_hash=chash)
        console.info(f"{cfg.method_name}: resuming {run_dir} after epoch {state.epochs_done} "
                     f"of {num_epochs}" + (" (stopped early)" if state.stopped_early else ""))
    else:                # a killed run is resumed from here (--resume RUN_DIR)
        console.info(f"{cfg.method_name}: run directory {run_dir}")
    best_sumr, best_epoch, es_cnt = state.best_sumr, state.best_epoch, state.es_cnt
    best_val: EvalResult | None = state.best_val
    best_val_view: SplitView | None = None if best_val is None else split_view(best_val, "val")
    epoch_times, eval_times = state.epoch_times, state.eval_times
    step, epochs_run, stopped_early = state.step, state.epochs_done, state.stopped_early
    anomaly = torch.autograd.detect_anomaly if cfg.train.detect_anomaly else contextlib.nullcontext
    autocast = forward_autocast(cfg.train.precision, device.type)   # bf16: the forward pass only
    with console if own_console else contextlib.nullcontext():
        for epoch in range(epochs_run, epochs_run if stopped_early else num_epochs):
            # -- train one epoch ---------------------------------------------------------------
            method.train()
            console.start_epoch(epoch)
            started = time.perf_counter()
            sums: dict[str, Tensor] = {}
            batches = 0
            for batch in train_batches(train, batch_size, generator, sort_by=method.batch_sort):
                batch = batch.to(device)
                progress = Progress(epoch=epoch, num_epochs=num_epochs, step=step,
                                    steps_per_epoch=steps_per_epoch, clock=clock,
                                    reference_epochs=cfg.train.reference_epochs)
                with anomaly():
                    with autocast():
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
                console.advance(samples=len(batch.videos), loss=out["loss"].detach())  # read when due
            epoch_times.append(time.perf_counter() - started)
            epochs_run = epoch + 1
            metrics = {f"train/{k}": (v / max(batches, 1)).item() for k, v in sums.items()}
            metrics["train/lr"] = optimizer.current_lr()
            metrics["time/epoch_seconds"] = epoch_times[-1]

            # -- validate, select, checkpoint ------------------------------------------------
            validate = (epoch + 1) % cfg.train.val_every == 0 or epoch + 1 == num_epochs
            if validate:
                started = time.perf_counter()
                val_result = evaluate(val)
                eval_times.append(time.perf_counter() - started)
                val_view = split_view(val_result, "val")
                metrics.update(val_view.flat())
                metrics["time/eval_seconds"] = eval_times[-1]
                sumr = val_view.sumr
                if sumr > best_sumr:                     # ref: strict improvement
                    best_sumr, best_epoch, es_cnt = sumr, epoch, 0
                    best_val, best_val_view = val_result, val_view
                    save_checkpoint(checkpoint, method.state_dict(), config_hash=chash,
                                    epoch=epoch, metrics={"val/SumR": sumr})
                else:
                    es_cnt += 1
            metrics.update(_memory_metrics(anon))
            if device.type == "cuda":
                metrics["sys/cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            tracker.log_metrics(metrics, step=epoch)    # one batched call per epoch
            console.end_epoch(epoch, metrics, best_epoch)
            # ref: stop when es_cnt > max_es_cnt; es_cnt counts validations without improvement
            stopped_early = run_clock.to_schedule_time(es_cnt) > cfg.train.early_stop_patience
            # -- last.ckpt: before the hooks, so a pruned or killed run has this epoch ---------
            save_last(last, model=method, optimizer=optimizer, generator=generator,
                      config_hash=chash, state=LoopState(
                          epochs_done=epochs_run, step=step, es_cnt=es_cnt, best_sumr=best_sumr,
                          best_epoch=best_epoch, best_val=best_val, epoch_times=epoch_times,
                          eval_times=eval_times, stopped_early=stopped_early,
                          run_id=tracker.run_id))
            if validate:
                for hook in hooks:
                    hook(EpochSummary(epoch, dict(metrics), best_sumr, best_epoch))
            if stopped_early:
                break

    # -- reload the selected epoch and report test -----------------------------------------------
    if best_val is None or best_val_view is None:
        raise TrainingError(f"{cfg.method_name}: no validation improved on -inf in "
                            f"{epochs_run} epoch(s); nothing to select")
    payload = load_checkpoint(checkpoint, config_hash=chash, map_location=device)
    if payload["epoch"] != best_epoch:           # e.g. a resume on hardware that drew otherwise
        raise TrainingError(f"{checkpoint}: holds epoch {payload['epoch']}, but the selected "
                            f"epoch is {best_epoch}")
    method.load_state_dict(payload["state_dict"])
    started = time.perf_counter()
    test_result = evaluate(test)
    test_seconds = time.perf_counter() - started
    test_view = split_view(test_result, "test", cfg.eval.mv_edges)
    final = test_view.flat()
    final["time/test_eval_seconds"] = test_seconds
    final.update(_memory_metrics(anon))
    cuda_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    if cuda_peak is not None:
        final["sys/cuda_peak_mb"] = cuda_peak
    tracker.log_metrics(final, step=epochs_run)

    record = RunRecord(
        method=identity.method, variant=identity.variant, collection=identity.collection,
        synthetic=identity.synthetic, seed=identity.seed, config=config_to_dict(cfg),
        val=best_val_view.main, test=test_view.main,
        test_by_mv=None if test_view.by_mv is None else {k: dict(v) for k, v in test_view.by_mv.items()},
        secondary={"val": best_val_view.secondary, "test": test_view.secondary},
        epoch_seconds=sum(epoch_times) / len(epoch_times),
        eval_seconds=sum(eval_times) / len(eval_times) if eval_times else 0.0,
        peak_rss_mb=peak_rss_mb(), peak_anon_mb=anon.peak_mb(), peak_file_mb=anon.file_peak_mb(),
        cuda_peak_mb=cuda_peak, best_epoch=best_epoch,
        epochs_run=epochs_run, stopped_early=stopped_early, val_equals_test=val_equals_test,
        git_commit=identity.git_commit, run_id=tracker.run_id, run_dir=str(run_dir))

    # -- artifacts ---------------------------------------------------------------------------
    # record.json last: its presence marks the run finished (never resumed); last.ckpt (3× the
    # weights: model and Adam moments) is then of no use and goes
    artifacts = [save_config(cfg, run_dir / "config.json"),
                 test_result.save(run_dir / "ranks_test.npz"), best_val.save(run_dir / "ranks_val.npz"),
                 record.save(run_dir / RECORD_NAME)]
    last.unlink(missing_ok=True)
    for path in artifacts:
        tracker.log_artifact(path)
    console.info(f"{cfg.method_name}: best epoch {best_epoch + 1}, val SumR {best_sumr:.2f}, "
                 f"test SumR {record.test['SumR']:.2f}; outputs in {run_dir}")
    return record
