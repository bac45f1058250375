"""Synthetic generator: layout, determinism, profile statistics and the learnable M/V structure.

Profiles are checked against docs/datasets.md §8 (and against the real annotation tables when
they are present); the generated files are read back both directly (h5py / numpy) and through
``benchmark.data.split.load_split``.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from benchmark.data import synthetic
from benchmark.data.layout import SPLITS, Layout
from benchmark.data.profiles import DURATION_LEVELS, PROFILES, ProfileError, get_profile, split_videos
from benchmark.data.synthetic import GenerationError, generate, plan_collection, quota_counts, sample_mv
from benchmark.generate import main as generate_main

REAL = Path("/work/shared/data/annotations")


def five_bin(mv: np.ndarray) -> np.ndarray:
    """Right-closed 0.2 bins of round(mv, 6) (docs/datasets.md §1); -1 for M/V = 0."""
    m = np.round(mv, 6)
    return np.where(m > 0, np.clip(np.ceil(m * 5 - 1e-9).astype(int) - 1, 0, 4), -1)


# --------------------------------------------------------------------------- sampling helpers

def test_quota_counts_largest_remainder_by_hand():
    # exact 3.5 / 2.1 / 1.4 -> floors 3 / 2 / 1, the one left over goes to the largest remainder
    assert quota_counts([0.5, 0.3, 0.2], 7).tolist() == [4, 2, 1]
    assert quota_counts([1, 1, 1], 4).tolist() == [2, 1, 1]          # tie: lower index first
    assert quota_counts([0.0, 1.0], 5).tolist() == [0, 5]


@pytest.mark.parametrize("name", PROFILES)
def test_sample_mv_quota_is_exact_for_five_bins(name):
    prof = get_profile(name)
    n = 1234
    mv = sample_mv(prof, n, np.random.default_rng(0))
    counts = np.bincount(five_bin(mv), minlength=5)
    assert np.abs(counts - n * prof.mv_bin5_shares).max() <= 1.0
    assert mv.min() > 0 and mv.max() <= 1.0


def test_unknown_profile_and_scale_are_named():
    with pytest.raises(ProfileError, match="'msrvtt'"):
        get_profile("msrvtt")
    with pytest.raises(ProfileError, match="'huge'"):
        split_videos(get_profile("tvr"), "huge")


# --------------------------------------------------------------------------- layout

def check_layout(root: Path, profile: str) -> dict:
    """Read every file of the collection with plain h5py / numpy and check the MS-SL layout."""
    prof = get_profile(profile)
    lay = Layout.resolve(root, profile)
    assert lay.visual_feature == prof.visual_feature
    marker = json.loads(lay.synthetic_marker.read_text())
    assert marker["profile"] == profile and marker["generator"] == "prvr-bench synthetic"
    caps: dict[str, list[str]] = {}
    videos: dict[str, list[str]] = {}
    for split in SPLITS:
        lines = lay.caption_file(split).read_text(encoding="utf-8").splitlines()
        cap_ids = [line.split(" ", 1)[0] for line in lines]
        assert all(len(line.split(" ", 1)) == 2 and line.split(" ", 1)[1].strip() for line in lines)
        vids = [c.split("#", 1)[0] for c in cap_ids]
        order = list(dict.fromkeys(vids))
        # contiguous lines per video, k = 0, 1, ... in order (docs/datasets.md §5.1)
        expected = [f"{v}#enc#{k}" for v in order for k in range(vids.count(v))]
        assert cap_ids == expected
        assert len(order) == marker["splits"][split]["videos"]
        assert len(cap_ids) == marker["splits"][split]["queries"]
        caps[split], videos[split] = cap_ids, order
    assert not set(videos["train"]) & set(videos["val"])
    assert not set(videos["val"]) & set(videos["test"])
    assert not set(videos["train"]) & set(videos["test"])
    all_caps = [c for s in SPLITS for c in caps[s]]
    all_videos = [v for s in SPLITS for v in videos[s]]

    with h5py.File(lay.query_features, "r") as f:
        assert sorted(f.keys()) == sorted(all_caps)
        for cid in all_caps[:: max(1, len(all_caps) // 50)]:
            arr = f[cid][...]
            assert arr.dtype == np.float32 and arr.ndim == 2 and arr.shape[1] == prof.query_dim
            assert arr.shape[0] >= 3 and np.isfinite(arr).all()
    with h5py.File(lay.teacher_query_features, "r") as f:
        assert sorted(f.keys()) == sorted(all_caps)
        arr = f[all_caps[0]][...]
        assert arr.shape == (1, prof.teacher_dim) and arr.dtype == np.float32
        assert abs(np.linalg.norm(arr) - 1.0) > 0.1                  # raw, not L2-normalised

    shape = lay.bigfile_dir.joinpath("shape.txt").read_text().split()
    n_rows, dim = int(shape[0]), int(shape[1])
    assert dim == prof.video_dim
    ids = lay.bigfile_dir.joinpath("id.txt").read_text(encoding="iso-8859-1").split()
    assert len(ids) == n_rows == marker["splits"]["train"]["frames"] + \
        marker["splits"]["val"]["frames"] + marker["splits"]["test"]["frames"]
    feats = np.fromfile(lay.bigfile_dir / "feature.bin", dtype=np.float32)
    assert feats.size == n_rows * dim and np.isfinite(feats).all()
    v2f = ast.literal_eval(lay.bigfile_dir.joinpath("video2frames.txt").read_text(encoding="iso-8859-1"))
    assert list(v2f) == all_videos
    assert [fid for v in all_videos for fid in v2f[v]] == ids
    assert all(v2f[v] == [f"{v}_{i}" for i in range(len(v2f[v]))] for v in all_videos[:20])
    with h5py.File(lay.teacher_video_features, "r") as f:
        assert sorted(f.keys()) == sorted(all_videos)
        for v in all_videos[:: max(1, len(all_videos) // 30)]:
            assert f[v].shape == (len(v2f[v]), prof.teacher_dim) and f[v].dtype == np.float32

    rows = [json.loads(line) for line in lay.moments.read_text().splitlines()]
    assert [r["cap_id"] for r in rows] == all_caps
    assert all(r["video_id"] == r["cap_id"].split("#", 1)[0] for r in rows)
    assert all(set(r) == {"cap_id", "video_id", "ts", "duration"} for r in rows)
    return {"marker": marker, "rows": rows, "v2f": v2f, "feats": feats.reshape(n_rows, dim),
            "ids": ids, "caps": caps, "videos": videos}


def test_tiny_tvr_layout_parses(tiny_root):
    got = check_layout(tiny_root, "tvr")
    assert got["marker"]["scale"] == "tiny" and got["marker"]["seed"] == 0
    assert ({s: got["marker"]["splits"][s]["videos"] for s in SPLITS}
            == split_videos(get_profile("tvr"), "tiny"))
    rows = got["rows"]
    ts = np.array([r["ts"] for r in rows])
    dur = np.array([r["duration"] for r in rows])
    assert (ts[:, 0] >= 0).all() and (ts[:, 1] <= dur).all() and (ts[:, 1] > ts[:, 0]).all()
    # the cap_id shape and ~1 feature / 1.5 s of the TVR profile
    assert all("_seg0" in v and "_clip_" in v for v in got["videos"]["test"])
    frames = np.array([len(got["v2f"][v]) for v in got["videos"]["train"]])
    durations = {r["video_id"]: r["duration"] for r in rows}
    rate = frames / np.array([durations[v] for v in got["videos"]["train"]])
    assert np.allclose(rate, 1 / 1.5, atol=0.02)


@pytest.mark.parametrize("profile", ["activitynet", "charades"])
def test_tiny_other_profiles_parse(tiny_root_for, profile):
    got = check_layout(tiny_root_for(profile), profile)
    qpv = [int(c.rsplit("#", 1)[1]) for c in got["caps"]["train"]]
    assert max(qpv) >= 1                                    # videos with several queries


def test_streaming_in_small_chunks_keeps_the_layout(tmp_path, monkeypatch):
    """Several frame and query chunks per split (the path ``full`` takes) still line up."""
    monkeypatch.setattr(synthetic, "FRAME_CHUNK", 300)
    monkeypatch.setattr(synthetic, "QUERY_CHUNK", 23)
    generate("activitynet", "tiny", 2, tmp_path)
    got = check_layout(tmp_path, "activitynet")
    # teacher frames are aligned to the student frames of the same video
    lay = Layout.resolve(tmp_path, "activitynet")
    with h5py.File(lay.teacher_video_features, "r") as f:
        counts = {v: f[v].shape[0] for v in f}
    assert all(counts[v] == len(got["v2f"][v]) for v in got["v2f"])


def test_load_split_reads_the_collection(tiny_root):
    from benchmark.data.split import load_split

    plan = plan_collection("tvr", "tiny", 0).splits["test"]
    sp = load_split(tiny_root, "tvr", "test", requires=frozenset({"teacher", "clips"}))
    assert sp.synthetic and sp.synthetic_info["profile"] == "tvr"
    assert sp.cap_ids == plan.cap_ids and sp.video_ids == plan.video_ids
    assert sp.num_videos == 16 and sp.num_queries == 80
    np.testing.assert_array_equal(sp.query_video, plan.query_video)
    np.testing.assert_allclose(sp.mv, plan.mv, atol=1e-6)
    assert (sp.dims.query, sp.dims.video, sp.dims.teacher) == (768, 3072, 512)
    vb = sp.video_batch(np.arange(3))
    assert vb.frames.shape[0] == 3 and vb.frames.shape[2] == 3072
    assert vb.clips.shape == (3, 32, 3072)
    qb = sp.query_batch(np.arange(5), teacher=True)
    assert qb.tokens.shape[0] == 5 and qb.tokens.shape[1] <= 30 and qb.teacher.shape == (5, 512)


# --------------------------------------------------------------------------- determinism

def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = _file_bytes(generate("charades", "tiny", 3, tmp_path / "a"))
    b = _file_bytes(generate("charades", "tiny", 3, tmp_path / "b"))
    c = _file_bytes(generate("charades", "tiny", 4, tmp_path / "c"))
    assert len(a) == 12 and a.keys() == b.keys() == c.keys()
    for name in a:
        assert a[name] == b[name], name
        assert a[name] != c[name], name


# --------------------------------------------------------------------------- profile statistics

@pytest.mark.parametrize("scale", ["small", "full"])
@pytest.mark.parametrize("name", PROFILES)
def test_plan_statistics_follow_the_profile(name, scale):
    prof = get_profile(name)
    plan = plan_collection(name, scale, 0)
    for split, sp in plan.splits.items():
        train = split == "train"
        assert sp.num_videos == split_videos(prof, scale)[split]
        # queries per video: whole distribution (docs/datasets.md §4.1)
        pmf = dict(prof.queries_per_video_train if train else prof.queries_per_video)
        qpv = sp.queries_per_video
        assert set(np.unique(qpv)) <= set(pmf)
        for value, share in pmf.items():
            assert abs(np.mean(qpv == value) - share) <= 1.0 / sp.num_videos + 1e-9
        # M/V five bins within 2 points (quota), 0.1 bins within 2 points, exact-1 share
        bins = five_bin(sp.mv)
        shares5 = np.bincount(bins[bins >= 0], minlength=5) / sp.num_queries
        assert np.abs(shares5 - prof.mv_bin5_shares).max() < 0.02, (split, shares5)
        m = np.round(sp.mv, 6)
        shares10 = np.bincount(np.clip(np.ceil(m * 10 - 1e-9).astype(int) - 1, 0, 9),
                               minlength=10) / sp.num_queries
        assert np.abs(shares10 - prof.mv_bin10_shares).max() < 0.02
        assert abs(np.mean(m == 1.0) - prof.mv_one_share) < 0.01
        if name == "charades":
            assert m.max() <= 0.51                    # upper two bins stay empty (§8)
        # durations through the quantile knots (§4.2)
        knots = prof.duration_knots_train if train else prof.duration_knots
        q = np.quantile(sp.durations, DURATION_LEVELS[1:-1])
        assert np.allclose(q, knots[1:-1], rtol=0.04, atol=1.0), (split, q, knots)
        assert knots[0] <= sp.durations.min() and sp.durations.max() <= knots[-1]
        real_mean = {"tvr": (76.2, 75.7), "activitynet": (117.3, 117.8),
                     "charades": (30.9, 29.5)}[name][0 if train else 1]       # §4.2
        assert abs(sp.durations.mean() / real_mean - 1) < 0.04, (split, sp.durations.mean())
        # word counts (§4.8): mean, median, p5/p95 and the rare > 30-word queries
        words = dict(prof.words)
        mean = sum(w * p for w, p in words.items())
        assert abs(sp.words.mean() - mean) < 0.1
        assert set(np.unique(sp.words)) <= set(words)
        over_30 = sum(p for w, p in words.items() if w > 30)
        assert abs(np.mean(sp.words > 30) - over_30) <= 1.0 / sp.num_queries + 1e-9
        assert abs(np.mean(sp.words <= 10) - sum(p for w, p in words.items() if w <= 10)) \
            <= 1.0 / sp.num_queries + 1e-9
        assert (sp.tokens >= sp.words + 2).all()
        # moments inside the video, at least one frame each
        assert (sp.ts[:, 0] >= 0).all() and (sp.ts[:, 1] <= sp.durations[sp.query_video] + 1e-9).all()
        assert (sp.frame_end > sp.frame_start).all()
        assert (sp.frame_end <= sp.num_frames[sp.query_video]).all()
    if scale == "full":
        test = plan.splits["test"]
        med = {"tvr": 11, "activitynet": 12, "charades": 6}[name]
        assert np.median(test.words) == med
        p5, p95 = np.quantile(test.words, [0.05, 0.95])
        assert (p5, p95) == {"tvr": (8, 20), "activitynet": (6, 25), "charades": (4, 10)}[name]
        if name != "charades":
            assert test.words.max() > 30


def test_profile_tables_match_the_real_test_splits():
    """The hard-coded bin counts are those of the real derived moments tables (§5.6, §7)."""
    for name in PROFILES:
        path = REAL / name / "derived" / f"{name}_prvr_test_moments.jsonl"
        if not path.exists():
            pytest.skip(f"real annotations absent: {path}")
        mv = np.array([json.loads(line)["mv"] for line in path.read_text().splitlines()])
        m = np.round(mv, 6)
        counts = np.bincount(np.clip(np.ceil(m * 10 - 1e-9).astype(int) - 1, 0, 9), minlength=10)
        prof = get_profile(name)
        assert counts.tolist() == list(prof.mv_bin10_counts)
        assert int((m == 1.0).sum()) == prof.mv_one_count


# --------------------------------------------------------------------------- learnable structure

def _read_teacher(root: Path, profile: str, split: str):
    """Teacher text (Nq, d_t), frames (F, d_t), frames per video (Nv,), query_video, M/V."""
    lay = Layout.resolve(root, profile)
    lines = lay.caption_file(split).read_text().splitlines()
    cap_ids = [line.split(" ", 1)[0] for line in lines]
    vids = list(dict.fromkeys(c.split("#", 1)[0] for c in cap_ids))
    index = {v: i for i, v in enumerate(vids)}
    query_video = np.array([index[c.split("#", 1)[0]] for c in cap_ids])
    with h5py.File(lay.teacher_query_features) as f:
        text = np.concatenate([f[c][...] for c in cap_ids])                  # (Nq, d_t)
    with h5py.File(lay.teacher_video_features) as f:
        frames = [f[v][...] for v in vids]
    lengths = np.array([len(g) for g in frames])
    moments = {json.loads(r)["cap_id"]: json.loads(r) for r in lay.moments.read_text().splitlines()}
    mv = np.array([(moments[c]["ts"][1] - moments[c]["ts"][0]) / moments[c]["duration"]
                   for c in cap_ids])
    return text, np.concatenate(frames), lengths, query_video, np.round(mv, 6)


def _max_and_mean_scores(text: np.ndarray, frames: np.ndarray, lengths: np.ndarray):
    """Training-free teacher scores max_t cos(c_q, G_vt) and cos(c_q, mean_t G_vt).

    Shapes: text (Nq, d_t), frames (F, d_t), lengths (Nv,) -> (Nq, Nv), (Nq, Nv).
    """
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    per_frame = unit(text) @ unit(frames).T                                   # (Nq, F)
    s_max = np.maximum.reduceat(per_frame, starts, axis=1)                    # (Nq, Nv)
    s_mean = unit(text) @ unit(np.add.reduceat(frames, starts, axis=0) / lengths[:, None]).T
    return s_max, s_mean


def _numpy_ranks(scores: np.ndarray, query_video: np.ndarray) -> np.ndarray:
    """Oracle: 1 + number of other videos scoring at least the true video (pessimistic ties)."""
    gt = scores[np.arange(len(query_video)), query_video]
    return 1 + (scores >= gt[:, None]).sum(axis=1) - 1


def _recall(rank: np.ndarray, k: int) -> float:
    return 100.0 * float(np.mean(rank <= k))


def test_teacher_features_in_memory_equal_the_files(tiny_root):
    plan = plan_collection("tvr", "tiny", 0)
    for split in SPLITS:
        text, frames, lengths, qv, mv = _read_teacher(tiny_root, "tvr", split)
        mem_text, mem_frames = synthetic.teacher_features(plan, split)
        np.testing.assert_array_equal(mem_text, text)
        np.testing.assert_array_equal(mem_frames, frames)
        np.testing.assert_array_equal(lengths, plan.splits[split].num_frames)
        np.testing.assert_allclose(mv, plan.splits[split].mv, atol=1e-6)


def test_teacher_zero_shot_and_mean_pool_mv_gap():
    """Small TVR test split (200 videos, 1,000 queries), teacher features as written."""
    from benchmark.evaluate import evaluate

    plan = plan_collection("tvr", "small", 0)
    sp = plan.splits["test"]
    text, frames = synthetic.teacher_features(plan, "test")
    s_max, s_mean = _max_and_mean_scores(text, frames, sp.num_frames)
    qv, mv = sp.query_video, sp.mv
    chance = 100.0 * (1 + 5 + 10 + 100) / sp.num_videos
    rank_max, rank_mean = _numpy_ranks(s_max, qv), _numpy_ranks(s_mean, qv)
    sumr_np = sum(_recall(rank_max, k) for k in (1, 5, 10, 100))
    res = evaluate({"max": s_max, "mean": s_mean}, qv, mv=mv, synthetic=True)
    # the real evaluator agrees with the numpy oracle
    np.testing.assert_array_equal(res["max"].rank, rank_max)
    np.testing.assert_array_equal(res["mean"].rank, rank_mean)
    teacher = res.metrics("max")["SumR"]
    assert teacher == pytest.approx(sumr_np)
    # (b) well above chance (58 here), well below perfect: room for a trained student
    assert teacher > 2 * chance and 120 <= teacher <= 250, teacher
    # (a) mean-pool suffers at low M/V, max-pool much less
    low, high = mv <= 0.2, mv > 0.2
    mean_low, mean_high = _recall(rank_mean[low], 10), _recall(rank_mean[high], 10)
    max_low, max_high = _recall(rank_max[low], 10), _recall(rank_max[high], 10)
    # mean-pool keeps under half its upper-bin R@10 on (0, 0.2]; max-pool keeps over 2/3 of it
    assert mean_low < 0.5 * mean_high and mean_high - mean_low > 15, (mean_low, mean_high)
    assert max_low > 0.67 * max_high, (max_low, max_high)
    assert max_low > mean_low + 20
    by_bin = res.by_mv(key="mean")
    first = by_bin["0.0-0.2"]["R10"]
    assert all(first < b["R10"] for label, b in by_bin.items() if label != "0.0-0.2")


@pytest.mark.parametrize("name", ["activitynet", "charades"])
def test_teacher_structure_other_profiles(name):
    plan = plan_collection(name, "small", 0)
    sp = plan.splits["test"]
    text, frames = synthetic.teacher_features(plan, "test")
    s_max, s_mean = _max_and_mean_scores(text, frames, sp.num_frames)
    rank_max, rank_mean = _numpy_ranks(s_max, sp.query_video), _numpy_ranks(s_mean, sp.query_video)
    teacher = sum(_recall(rank_max, k) for k in (1, 5, 10, 100))
    assert 120 <= teacher <= 280, teacher
    low = sp.mv <= 0.2
    # Charades' M/V spans only 0.03-0.51, so its low bin is closer to the others
    ratio = {"activitynet": 0.6, "charades": 0.8}[name]
    assert _recall(rank_mean[low], 10) < ratio * _recall(rank_mean[~low], 10)
    assert _recall(rank_max[low], 10) > _recall(rank_mean[low], 10) + 20


# --------------------------------------------------------------------------- anomalies and CLI

def test_anomalies_are_injected_into_annotations_only(tmp_path):
    generate("charades", "tiny", 0, tmp_path / "clean")
    generate("charades", "tiny", 0, tmp_path / "odd", anomalies=True)
    clean, odd = Layout.resolve(tmp_path / "clean", "charades"), Layout.resolve(tmp_path / "odd", "charades")
    rows = [json.loads(r) for r in odd.moments.read_text().splitlines()]
    ts = np.array([r["ts"] for r in rows])
    dur = np.array([r["duration"] for r in rows])
    assert (ts[:, 1] > dur).any()                              # overruns past T (§5.5)
    assert (ts[:, 1] < ts[:, 0]).sum() >= 1                   # a swapped span
    assert (ts[:, 1] == ts[:, 0]).sum() >= 1                  # a zero-length span
    info = json.loads(odd.synthetic_marker.read_text())
    assert info["anomalies"] is True and info["splits"]["train"]["anomalies"]["swapped"] == 1
    assert (clean.bigfile_dir / "feature.bin").read_bytes() == (odd.bigfile_dir / "feature.bin").read_bytes()

    generate("activitynet", "tiny", 0, tmp_path / "an", anomalies=True)
    text = Layout.resolve(tmp_path / "an", "activitynet").moments.read_text()
    durations = [json.loads(r)["duration"] for r in text.splitlines()]
    assert any(len(repr(d).split(".")[1]) > 6 for d in durations)   # e.g. 90.71000000000001


def test_cli_writes_and_refuses_to_overwrite(tmp_path, capsys):
    args = ["--profile", "charades", "--scale", "tiny", "--seed", "5", "--out", str(tmp_path)]
    assert generate_main(args) == 0
    assert "SYNTHETIC charades" in capsys.readouterr().out
    before = (tmp_path / "charades" / "SYNTHETIC").read_text()
    assert generate_main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert generate_main(args[:-3] + ["6", "--out", str(tmp_path), "--overwrite"]) == 0
    after = json.loads((tmp_path / "charades" / "SYNTHETIC").read_text())
    assert after["seed"] == 6 and before != json.dumps(after)
    assert [p.name for p in tmp_path.iterdir()] == ["charades"]     # no temp dirs left
    with pytest.raises(GenerationError, match="already exists"):
        generate("charades", "tiny", 6, tmp_path)


# --------------------------------------------------------------------------- diagnostic factors

#: sha256 over (relative path, bytes) of every file of tiny tvr seed 0, generated by the code
#: before the diagnostic factors existed (commit ad001ae). Off factors must keep these bytes.
UNCHANGED_TINY_TVR_DIGEST = "b28e209983e9b1ce4d11cda04ceab96c5d4d626fdaa6ee25e5530b36120ac0af"


def _digest(root: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, data in _file_bytes(root).items():
        h.update(name.encode())
        h.update(data)
    return h.hexdigest()


def test_off_factors_reproduce_the_unchanged_profile_byte_for_byte(tmp_path):
    explicit = synthetic.DiagnosticFactors(query_phrases=1, phrase_bank=5, video_stretch=1.0,
                                           moment_parts=1, teacher_time_noise=0.0)
    assert explicit.off
    default = generate("tvr", "tiny", 0, tmp_path / "default")
    off = generate("tvr", "tiny", 0, tmp_path / "off", factors=explicit)
    assert _digest(default) == _digest(off) == UNCHANGED_TINY_TVR_DIGEST
    assert "factors" not in json.loads(Layout.resolve(tmp_path / "off", "tvr").synthetic_marker.read_text())


def test_query_phrase_factor_changes_only_the_query_tokens_and_is_recorded(tmp_path):
    on = synthetic.DiagnosticFactors(query_phrases=3)
    a = _file_bytes(generate("tvr", "tiny", 0, tmp_path / "a"))
    b = _file_bytes(generate("tvr", "tiny", 0, tmp_path / "b", factors=on))
    changed = {n for n in a if a[n] != b[n]}
    assert changed == {"SYNTHETIC", "TextData/roberta_tvr_query_feat.hdf5"}, changed
    marker = json.loads(b["SYNTHETIC"])
    assert marker["factors"] == {"query_phrases": 3, "phrase_bank": 16, "video_stretch": 1.0,
                                 "moment_parts": 1, "teacher_time_noise": 0.0}


def test_phrase_layout_puts_the_event_in_exactly_one_phrase():
    tokens = np.array([3, 4, 7, 12, 30])
    phrase, relevant, source = synthetic.phrase_layout(tokens, 3, 16, np.random.default_rng(0))
    query = np.repeat(np.arange(tokens.size), tokens)
    for q, n in enumerate(tokens):
        ph, src = phrase[query == q], source[query == q]
        assert ph[0] == ph[-1] == -1 and src[0] == src[-1] == -1          # <s>, </s>
        inner = ph[1:-1]
        count = min(3, n - 2)
        assert sorted(set(inner.tolist())) == list(range(count))
        assert (np.diff(inner) >= 0).all()                                # contiguous phrases
        assert 0 <= relevant[q] < count
        own = inner == relevant[q]
        assert (src[1:-1][own] == -1).all() and (src[1:-1][~own] >= 0).all()
    # each inner token of a 30-token query: 28 tokens in phrases of 9, 9, 10
    assert np.bincount(phrase[query == 4][1:-1]).tolist() == [10, 9, 9]


def test_video_stretch_makes_moments_short_inside_long_videos():
    base = plan_collection("tvr", "small", 0).splits["test"]
    long = plan_collection("tvr", "small", 0, synthetic.DiagnosticFactors(video_stretch=3.0)).splits["test"]
    assert np.median(long.durations) == pytest.approx(3 * np.median(base.durations), rel=0.01)
    assert long.num_frames.mean() > 2.8 * base.num_frames.mean()
    assert np.mean(long.mv) == pytest.approx(np.mean(base.mv) / 3, rel=0.05)
    moment = lambda sp: (sp.ts[:, 1] - sp.ts[:, 0]).mean()               # noqa: E731
    assert moment(long) == pytest.approx(moment(base), rel=0.05)         # same seconds


def _moment_alignment(parts: int):
    """Mean cos(h_t, z_q) over moment frames, and cos(moment mean of h, z_q), test split."""
    plan = plan_collection("tvr", "tiny", 0, synthetic.DiagnosticFactors(moment_parts=parts))
    sp, cfg = plan.splits["test"], synthetic.SignalConfig()
    model = synthetic.LatentModel.draw(plan.profile, 0, cfg)
    lat = synthetic.draw_latents(sp, model, cfg, plan.profile, 0, plan.factors)
    offset = np.concatenate([[0], np.cumsum(sp.num_frames)])
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)      # noqa: E731
    per_frame, pooled = [], []
    for q in np.flatnonzero(sp.frame_end - sp.frame_start >= 4):
        start = offset[sp.query_video[q]]
        h = lat.frames[start + sp.frame_start[q]: start + sp.frame_end[q]]
        per_frame.append((unit(h) @ lat.query[q]).mean())
        pooled.append(unit(h.mean(0)) @ lat.query[q])
    return float(np.mean(per_frame)), float(np.mean(pooled))


def test_moment_parts_make_single_frames_weak_and_local_windows_whole():
    frame1, pooled1 = _moment_alignment(1)
    frame4, pooled4 = _moment_alignment(4)
    assert frame4 < 0.75 * frame1                 # one frame shows a quarter of the event
    # neighbouring frames add up to the event: pooling gains ≈ 1.29× with parts, ≈ 1.06× without
    assert pooled4 / frame4 > 1.15 * pooled1 / frame1


def _teacher_roughness(sigma: float) -> tuple[float, np.ndarray]:
    """Mean |cos(c_q, G_t+1) − cos(c_q, G_t)| over each test query's positive video."""
    plan = plan_collection("tvr", "tiny", 0, synthetic.DiagnosticFactors(teacher_time_noise=sigma))
    sp = plan.splits["test"]
    text, frames = synthetic.teacher_features(plan, "test")
    offset = np.concatenate([[0], np.cumsum(sp.num_frames)])
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)      # noqa: E731
    jumps = [np.abs(np.diff(unit(frames[offset[v]: offset[v + 1]]) @ unit(text[q]))).mean()
             for q, v in enumerate(sp.query_video) if sp.num_frames[v] > 1]
    return float(np.mean(jumps)), text


def test_teacher_time_noise_raises_the_teachers_temporal_jitter():
    rough = [_teacher_roughness(s) for s in (0.0, 1.0, 3.0)]
    assert rough[0][0] < rough[1][0] < rough[2][0]
    assert rough[2][0] > 1.5 * rough[0][0]
    np.testing.assert_array_equal(rough[0][1], rough[2][1])               # text side untouched


def test_cli_factor_flags_reach_the_marker(tmp_path):
    assert generate_main(["--profile", "charades", "--scale", "tiny", "--out", str(tmp_path),
                          "--teacher-time-noise", "0.5", "--moment-parts", "2"]) == 0
    marker = json.loads(Layout.resolve(tmp_path, "charades").synthetic_marker.read_text())
    assert marker["factors"]["teacher_time_noise"] == 0.5 and marker["factors"]["moment_parts"] == 2
    assert generate_main(["--profile", "charades", "--scale", "tiny", "--out", str(tmp_path / "x"),
                          "--video-stretch", "0.5"]) == 2
