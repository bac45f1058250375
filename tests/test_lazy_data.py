"""Bounded data memory (issue 17 items 1-2): the budget never changes a result, the check
manifest skips only what it may, batches are prefetched without touching any RNG, and load
phases are visible in a log."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from data_fixtures import VISUAL, write_toy

from benchmark.config import ConfigError, load_config
from benchmark.console import LoadDisplay
from benchmark.data.errors import DataError
from benchmark.data.loaders import prefetched, train_batches
from benchmark.data.manifest import BLOCK, CheckManifest
from benchmark.data.split import CacheBudget, load_split
from benchmark.evaluate import EvalResult
from benchmark.experiment import load_splits, run_experiment
from benchmark.memory import parse_bytes

# --- the same seed, the same numbers, whatever the budget -------------------------------------

def _run(root, runs, method: str, budget: str):
    cfg = load_config(method, "tvr", data_root=root, overrides={
        "device": "cpu", "tracking.runs_dir": str(runs), "train.epochs": 2,
        "train.batch_size": 16, "seed": 0, "data.memory_budget": budget})
    return cfg, run_experiment(cfg, run_dir=runs / budget)


@pytest.mark.parametrize("method", ["ms-sl", "dl-dkd++"])
def test_lazy_and_partly_cached_runs_equal_the_in_ram_run(tiny_root, tmp_path, method):
    cfg, want = _run(tiny_root, tmp_path, method, "4GiB")
    splits = load_splits(cfg, frozenset(_requires(method)))
    assert all(s.in_memory == {"videos": True, "queries": True} for s in splits.values())
    # half of the train videos' bytes: a cached prefix, the rest prepared per batch, and
    # val/test (loaded after train) prepared per batch entirely
    half = splits["train"]._videos.estimated_bytes() // 2
    for budget in (str(half), "0"):
        _, got = _run(tiny_root, tmp_path, method, budget)
        assert got.val == want.val and got.test == want.test
        assert got.secondary == want.secondary and got.best_epoch == want.best_epoch
        for name in ("ranks_val.npz", "ranks_test.npz"):
            a = EvalResult.load(f"{got.run_dir}/{name}")
            b = EvalResult.load(f"{want.run_dir}/{name}")
            for key in b.keys:
                np.testing.assert_array_equal(a[key].rank, b[key].rank)
                np.testing.assert_array_equal(a[key].ap, b[key].ap)
        best = torch.load(f"{got.run_dir}/best.pt", weights_only=True)["state_dict"]
        ref = torch.load(f"{want.run_dir}/best.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(best[k], ref[k]) for k in ref)


def _requires(method: str) -> set[str]:
    from benchmark.registry import get_method

    cfg = load_config(method, "tvr")
    return set(get_method(method).cls.requirements(cfg.method))


def test_partly_cached_batches_equal_prepared_ones(tiny_root):
    ref = load_split(tiny_root, "tvr", "train", requires=frozenset({"clips"}),
                     memory_budget_bytes=0)
    budget = int(ref._videos.item_bytes()[:3].sum() + ref._queries.item_bytes()[:4].sum())
    # videos first: the budget covers 3 videos; what is left covers no query
    part = load_split(tiny_root, "tvr", "train", requires=frozenset({"clips"}),
                      memory_budget_bytes=budget)
    assert part._videos.cached == 3 and part.in_memory == {"videos": False, "queries": False}
    index = np.array([5, 0, 7, 2, 1])                 # cached and uncached, out of order
    got, want = part.video_batch(index), ref.video_batch(index)
    assert torch.equal(got.frames, want.frames) and torch.equal(got.frame_mask, want.frame_mask)
    assert got.clips is not None and want.clips is not None
    assert torch.equal(got.clips, want.clips)
    queries = np.array([9, 1, 0, 12])
    assert torch.equal(part.query_batch(queries).tokens, ref.query_batch(queries).tokens)


def test_splits_share_one_budget_first_come(tiny_root):
    budget = CacheBudget(10**9)
    train = load_split(tiny_root, "tvr", "train", memory_budget_bytes=budget)
    used = train._videos.estimated_bytes() + train._queries.estimated_bytes()
    assert budget.left == 10**9 - used
    tight = CacheBudget(used + 1)
    load_split(tiny_root, "tvr", "train", memory_budget_bytes=tight)
    val = load_split(tiny_root, "tvr", "val", memory_budget_bytes=tight)
    assert val._videos.cached == 0 and val.in_memory == {"videos": False, "queries": False}


# --- data.memory_budget ---------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("1GiB", 2**30), ("512 MiB", 512 * 2**20), ("1.5GB", 1_500_000_000), ("0", 0), (4096, 4096)])
def test_memory_budget_accepts_bytes_and_units(text, expected):
    assert parse_bytes(text) == expected
    cfg = load_config("mean-pool", "tvr", overrides={"data.memory_budget": text})
    assert cfg.data.memory_budget_bytes == expected


@pytest.mark.parametrize("text", ["lots", "-1GiB", "2 parsecs", "1.5"])
def test_memory_budget_rejects_nonsense(text):
    with pytest.raises(ConfigError, match="data.memory_budget"):
        load_config("mean-pool", "tvr", overrides={"data.memory_budget": text})


# --- the check manifest ---------------------------------------------------------------------

def _load(toy, manifest, phases=None):
    return load_split(toy.root, toy.collection, "train", visual_feature=VISUAL,
                      requires=frozenset({"clips"}), memory_budget_bytes=0,
                      manifest=CheckManifest(manifest),
                      progress=(lambda what, done, total: phases.append(what))
                      if phases is not None else None)


def _poke(path, row: int, value: float, dim: int = 6, keep_mtime: bool = False) -> None:
    stat = path.stat()
    data = np.fromfile(path, dtype=np.float32).reshape(-1, dim)
    data[row, 2] = value
    data.tofile(path)
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _used_row(toy, frame_id="vidE_299") -> int:
    return (toy.bigfile / "id.txt").read_text().split().index(frame_id)


def test_manifest_skips_passed_checks_and_a_changed_file_brings_them_back(tmp_path):
    toy = write_toy(tmp_path / "root")
    manifest = tmp_path / "runs" / "checks.json"
    first: list[str] = []
    _load(toy, manifest, first)
    assert any("checking" in p for p in first) and manifest.is_file()
    second: list[str] = []
    _load(toy, manifest, second)
    assert not any("checking" in p for p in second)            # every value check skipped
    _poke(toy.bigfile / "feature.bin", _used_row(toy), np.nan)
    with pytest.raises(DataError) as err:                       # size equal, mtime changed
        _load(toy, manifest)
    assert "feature.bin" in str(err.value) and "vidE" in str(err.value)


def test_manifest_notices_a_content_change_under_the_same_mtime(tmp_path):
    toy = write_toy(tmp_path / "root")
    manifest = tmp_path / "checks.json"
    _load(toy, manifest)
    path = toy.bigfile / "feature.bin"
    assert path.stat().st_size <= BLOCK              # the toy file is one sampled block
    _poke(path, _used_row(toy), np.inf, keep_mtime=True)
    with pytest.raises(DataError, match="vidE_299"):
        _load(toy, manifest)


def test_manifest_of_another_file_set_does_not_apply(tmp_path):
    toy = write_toy(tmp_path / "root")
    manifest = tmp_path / "checks.json"
    _load(toy, manifest)
    (toy.caption_file("train")).write_text(toy.caption_file("train").read_text())  # new mtime
    phases: list[str] = []
    _load(toy, manifest, phases)
    assert any("checking" in p for p in phases)


# --- prefetching ----------------------------------------------------------------------------

def test_prefetched_batches_and_rng_equal_the_unprefetched(tiny_root):
    split = load_split(tiny_root, "tvr", "train", requires=frozenset({"clips"}))
    runs = []
    for depth in (0, 1, 3):
        generator = torch.Generator().manual_seed(4)
        torch.manual_seed(1)
        batches = [(b.videos.frames, b.queries.tokens, b.query_video)
                   for b in train_batches(split, 7, generator, prefetch=depth)]
        runs.append((batches, generator.get_state(), torch.rand(3)))
    for batches, state, draw in runs[1:]:
        assert torch.equal(state, runs[0][1]) and torch.equal(draw, runs[0][2])
        assert all(torch.equal(x, y) for a, b in zip(batches, runs[0][0]) for x, y in zip(a, b))


def test_prefetch_raises_where_the_item_fails_and_stops_when_closed():
    def make(i: int) -> int:
        if i == 3:
            raise DataError(None, "bad item 3")
        return i * 10

    got = []
    with pytest.raises(DataError, match="bad item 3"):
        for value in prefetched(make, range(6), 2):
            got.append(value)
    assert got == [0, 10, 20]
    early = prefetched(lambda i: i, range(10**6), 2)
    assert next(early) == 0
    early.close()                                  # joins the thread without draining


# --- progress in a log ----------------------------------------------------------------------

def test_load_display_says_each_phase_start_and_end_in_plain_lines():
    stream = io.StringIO()
    with LoadDisplay(stream=stream, force_terminal=False, progress_seconds=3600) as show:
        show("tvr/train: reading captions", 0, 0)
        for done in range(0, 101, 10):
            show("tvr/train videos: checking", done, 100)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("data: tvr/train: reading captions")
    assert "checking 0/100 (0 %)" in lines[1] and "checking 100/100 (100 %)" in lines[2]
    assert len(lines) == 3                          # nothing in between within the interval


def test_run_load_prints_progress_lines(tiny_root, tmp_path, capsys):
    cfg = load_config("ms-sl", "tvr", data_root=tiny_root,
                      overrides={"tracking.runs_dir": str(tmp_path)})
    load_splits(cfg, frozenset({"clips"}))
    err = capsys.readouterr().err
    for split in ("train", "val", "test"):
        assert f"data: tvr/{split} videos: checking and caching" in err
    load_splits(cfg, frozenset({"clips"}))           # the manifest under runs/cache applies
    err = capsys.readouterr().err
    assert "checking" not in err and "data: tvr/train videos: caching" in err


def test_memory_settings_stay_out_of_the_config_hash():
    """A resume may change where data and freed memory live: neither changes a weight."""
    from benchmark.config import config_hash

    base = load_config("dl-dkd++", "tvr")
    moved = load_config("dl-dkd++", "tvr", overrides={"data.memory_budget": "2GiB",
                                                       "data.bound_heap": True})
    assert moved.data.bound_heap and not base.data.bound_heap
    assert config_hash(moved) == config_hash(base)
    other = load_config("dl-dkd++", "tvr", overrides={"data.max_frames": 64})
    assert config_hash(other) != config_hash(base)
