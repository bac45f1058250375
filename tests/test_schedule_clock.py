"""The schedule clock (``train.schedule_clock``; benchmark.interface.Progress).

* "epoch" (the default) reproduces the numbers from before the clock existed: the losses and
  metrics of short runs on the tiny TVR collection are pinned in
  ``tests/golden/epoch_clock_tiny_tvr.json``, made at commit ad001ae by
  ``tests/golden/make_epoch_clock_golden.py`` (one intra-op thread, as here).
* "progress" makes a run of any length traverse the whole reference curve: the last step reads
  every schedule at t = E_ref, and MS-SL's hard negatives start at 20 % of the run.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmark.config import config_hash, load_config, with_overrides
from benchmark.experiment import prepare
from benchmark.interface import Progress
from benchmark.schedules import Schedule
from benchmark.training.loop import fit
from methods.dl_dkd import DLDKDConfig
from methods.ms_sl import MSSLConfig

GOLDEN = Path(__file__).parent / "golden" / "epoch_clock_tiny_tvr.json"
COMMON = {"train.epochs": 2, "train.batch_size": 16, "seed": 0, "device": "cpu"}
GOLDEN_RUNS = {"mean-pool": {}, "ms-sl": {"method.hard_negative_start_epoch": 1},
               "dl-dkd": {}, "dl-dkd++": {}}


def _train(root: Path, tmp_path: Path, method: str, overrides: dict):
    """Train for real; return (record, per-epoch hook metrics, [(progress, outputs)] per step)."""
    cfg = load_config(method, "tvr", data_root=root,
                      overrides={**COMMON, **overrides, "tracking.runs_dir": str(tmp_path)})
    prepared = prepare(cfg)
    model = prepared.method
    steps: list[tuple[Progress, dict[str, float]]] = []
    compute_loss = model.compute_loss

    def recording(batch, progress):             # the real loss, with what it was called with
        out = compute_loss(batch, progress)
        steps.append((progress, {k: float(v.detach()) for k, v in out.items() if v.numel() == 1}))
        return out

    model.compute_loss = recording  # type: ignore[method-assign]
    epochs: list[dict[str, float]] = []
    record = fit(model, prepared.splits, cfg, hooks=[lambda s: epochs.append(dict(s.metrics))],
                 identity=prepared.identity, run_dir=tmp_path / "run")
    return cfg, record, epochs, steps


# -- epoch clock: today's numbers ------------------------------------------------------------

@pytest.mark.parametrize("method", list(GOLDEN_RUNS))
def test_epoch_clock_reproduces_the_numbers_from_before_the_clock(tiny_root, tmp_path, method):
    # the file was made with one intra-op thread; another count sums in another order
    assert torch.get_num_threads() == 1, "an earlier test left torch with more threads"
    want = json.loads(GOLDEN.read_text())[method]
    cfg, record, epochs, _ = _train(tiny_root, tmp_path, method, GOLDEN_RUNS[method])
    assert cfg.train.schedule_clock == "epoch"
    assert len(epochs) == len(want["epochs"])
    for got_epoch, want_epoch in zip(epochs, want["epochs"]):
        for key, value in want_epoch.items():
            # losses: float sums whose last bits may depend on the CPU's kernels (bit-identical
            # on the machine that made the file); every other number exactly
            tol = 1e-6 if key.startswith("train/loss") else 0.0
            assert got_epoch[key] == pytest.approx(value, rel=tol, abs=0.0), key
    assert record.val == want["val"]
    assert record.test == want["test"]


def test_epoch_clock_reads_the_epoch_on_every_step(tiny_root, tmp_path):
    _, _, _, steps = _train(tiny_root, tmp_path, "dl-dkd++", {})
    assert {(p.epoch, p.time, p.span) for p, _ in steps} == {(0, 0.0, 2), (1, 1.0, 2)}


# -- progress clock ---------------------------------------------------------------------------

def test_progress_clock_last_step_reads_every_schedule_at_e_ref(tiny_root, tmp_path):
    cfg, _, _, steps = _train(tiny_root, tmp_path, "dl-dkd++", {"train.schedule_clock": "progress"})
    e_ref = cfg.train.reference_epochs
    assert e_ref == 120                               # the dl-dkd++ recipe, not the 2-epoch budget
    method = cfg.method
    assert isinstance(method, DLDKDConfig)
    first, last = steps[0], steps[-1]
    assert first[0].time == 0.0 and last[0].time == float(e_ref)
    # per step, not per epoch: every step reads a later time than the one before
    times = [p.time for p, _ in steps]
    assert all(b > a for a, b in zip(times, times[1:]))
    # the values the loss used are the schedules at t = E_ref
    assert last[1]["alpha"] == pytest.approx(method.alpha(last[0]), abs=1e-7)
    assert last[1]["alpha"] == pytest.approx(0.0, abs=1e-3)        # α has decayed to ≈ 0
    assert last[1]["beta"] == pytest.approx(0.5, abs=1e-7)         # β sits at its floor 0.5
    assert last[1]["kd_weight"] == pytest.approx(0.1 * 0.95 ** e_ref, rel=1e-5)
    assert first[1]["alpha"] == pytest.approx(method.alpha(first[0]), abs=1e-7)
    assert first[1]["alpha"] == pytest.approx(0.8 * 800 / 801, abs=1e-7)   # α0·σ(0), σ(0) = 800/801
    assert first[1]["kd_weight"] == pytest.approx(0.1, rel=1e-6)


def test_progress_clock_starts_ms_sl_hard_negatives_at_20_percent(tiny_root, tmp_path):
    cfg, _, _, steps = _train(tiny_root, tmp_path, "ms-sl",
                              {"train.schedule_clock": "progress", "train.epochs": 6,
                               "train.early_stop_patience": 1000})
    assert isinstance(cfg.method, MSSLConfig)
    assert cfg.train.reference_epochs == 100 and cfg.method.hard_negative_start_epoch == 20
    last = len(steps) - 1
    assert last == steps[0][0].num_epochs * steps[0][0].steps_per_epoch - 1 >= 9
    hard = [out["hard_negatives"] == 1.0 for _, out in steps]
    assert hard == [step / last >= 0.2 for step in range(len(steps))]
    assert 0 < hard.index(True) < len(steps) - 1


def test_progress_clock_stops_at_the_first_validation_without_improvement(tiny_root, tmp_path):
    """6 run epochs of MS-SL's 100: each is ≈ 16.7 reference epochs, beyond the reference
    patience of 10, so one validation without improvement ends the run (on the epoch clock
    it would take 11)."""
    _, record, epochs, _ = _train(tiny_root, tmp_path, "ms-sl",
                                  {"train.schedule_clock": "progress", "train.epochs": 6})
    best = -math.inf
    for i, metrics in enumerate(epochs):
        if metrics["val/SumR"] <= best:                  # no improvement: the run ends here
            assert i == len(epochs) - 1 and record.stopped_early
            break
        best = metrics["val/SumR"]
    else:
        pytest.fail("every epoch improved: this seed no longer exercises early stopping")


def test_progress_clock_patience_is_in_reference_epochs():
    p = Progress(epoch=0, num_epochs=4, step=0, steps_per_epoch=10, clock="progress",
                 reference_epochs=120)
    assert p.to_schedule_time(1) == 30.0               # one run epoch = 30 reference epochs
    e = Progress(epoch=0, num_epochs=4, step=0, steps_per_epoch=10)
    assert e.to_schedule_time(1) == 1.0


def test_progress_time_maps_first_and_last_step_to_0_and_e_ref():
    def at(step: int) -> Progress:
        return Progress(epoch=step // 10, num_epochs=4, step=step, steps_per_epoch=10,
                        clock="progress", reference_epochs=120)
    assert at(0).time == 0.0 and at(39).time == 120.0
    assert at(13).time == pytest.approx(13 / 39 * 120)
    assert at(13).span == 120
    s = Schedule(kind="cosine", start=1.0, floor=0.0)
    assert s(at(39)) == pytest.approx(0.0, abs=1e-12)    # run-relative kinds end on their floor
    assert math.isclose(s(at(0)), 1.0)


def test_unknown_clock_and_bad_reference_epochs_are_errors():
    with pytest.raises(ValueError, match="clock must be one of"):
        Progress(epoch=0, num_epochs=1, step=0, steps_per_epoch=1, clock="wall")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="train.schedule_clock.*expected one of 'epoch', 'progress'"):
        load_config("dl-dkd++", "tvr", overrides={"train.schedule_clock": "wall"})
    with pytest.raises(ValueError, match="train.reference_epochs must be >= 1"):
        load_config("dl-dkd++", "tvr", overrides={"train.reference_epochs": 0})


# -- config -----------------------------------------------------------------------------------

def test_reference_epochs_is_the_recipe_and_survives_the_budget():
    assert load_config("dl-dkd++", "tvr").train.reference_epochs == 120
    assert load_config("ms-sl", "tvr").train.reference_epochs == 100
    short = load_config("dl-dkd++", "tvr", overrides={"train.epochs": 4})
    assert (short.train.epochs, short.train.reference_epochs) == (4, 120)
    mine = load_config("dl-dkd++", "tvr", overrides={"train.reference_epochs": 60})
    assert mine.train.reference_epochs == 60


def test_config_hash_ignores_the_clock_fields_only_on_the_epoch_clock():
    cfg = load_config("dl-dkd++", "tvr")
    assert config_hash(cfg) == config_hash(with_overrides(cfg, {"train.reference_epochs": 7}))
    prog = with_overrides(cfg, {"train.schedule_clock": "progress"})
    assert config_hash(prog) != config_hash(cfg)
    assert config_hash(prog) != config_hash(with_overrides(prog, {"train.reference_epochs": 7}))
