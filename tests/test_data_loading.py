"""load_split and the training loader on hand-written MS-SL-layout collections."""
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from data_fixtures import (
    VISUAL,
    ref_average_to_fixed_length,
    ref_l2,
    ref_uniform_sampling,
    write_moments_file,
    write_toy,
)

from benchmark.data.annotations import builtin_moments
from benchmark.data.loaders import collate, epoch_order, steps_per_epoch, train_batches
from benchmark.data.relevance import read_relevance, relevance_for_split
from benchmark.data.split import load_split
from benchmark.data.text import Captions

ALL = frozenset({"clips", "teacher", "teacher_length"})
ANNOTATIONS = Path("/work/shared/data/annotations")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy(tmp_path_factory.mktemp("toy") / "root",
                     teacher_lengths={"vidA": 9, "vidB": 70, "vidC": 40, "vidE": 200})


def load(toy, split="train", **kw):
    return load_split(toy.root, toy.collection, split, visual_feature=VISUAL, **kw)


def test_ids_order_and_counts(toy):
    s = load(toy)
    assert s.cap_ids == [c for c, _ in toy.captions["train"]]
    assert s.video_ids == ["vidA", "vidB", "vidC", "vidD", "vidE"]
    assert s.query_video.tolist() == [0, 0, 1, 1, 1, 2, 3, 3, 4, 4, 4, 4]
    assert s.query_video.dtype == np.int64
    assert (s.num_queries, s.num_videos) == (12, 5)
    assert s.caption_counts.tolist() == [2, 3, 1, 2, 4]
    assert s.frame_counts.tolist() == [5, 128, 40, 1, 128]
    assert (s.dims.query, s.dims.video, s.dims.teacher) == (8, 6, None)
    assert s.synthetic is False and s.synthetic_info is None
    assert s.mv is None and s.relevance is None
    assert s.caption_sha256 == hashlib.sha256(toy.caption_file("train").read_bytes()).hexdigest()


@pytest.mark.parametrize("budget", [4 << 30, 0], ids=["in-memory", "lazy"])
def test_video_batch_matches_oracle(toy, budget):
    s = load(toy, requires=frozenset({"clips"}), memory_budget_bytes=budget)
    assert s.in_memory == {"videos": budget > 0, "queries": budget > 0}
    index = np.array([3, 1, 0])
    batch = s.video_batch(index)
    assert batch.frames.shape == (3, 128, 6) and batch.clips.shape == (3, 32, 6)
    assert batch.teacher_frames is None
    for row, v in enumerate(index):
        raw = toy.frames[s.video_ids[v]]
        expected = ref_l2(ref_uniform_sampling(raw, 128))
        n = len(expected)
        np.testing.assert_allclose(batch.frames[row, :n].numpy(), expected, atol=1e-6)
        assert batch.frames[row, n:].abs().sum() == 0                      # zero padding
        assert batch.frame_mask[row].tolist() == [1.0] * n + [0.0] * (128 - n)
        np.testing.assert_allclose(batch.clips[row].numpy(),
                                   ref_l2(ref_average_to_fixed_length(raw, 32)), atol=1e-6)
    assert batch.frame_mask.dtype == torch.float32


def test_video_batch_pads_to_longest_in_batch(toy):
    s = load(toy)
    batch = s.video_batch(np.array([0, 3]))
    assert batch.frames.shape == (2, 5, 6)
    assert batch.frame_mask.tolist() == [[1.0] * 5, [1.0] + [0.0] * 4]
    assert batch.clips is None


@pytest.mark.parametrize("budget", [4 << 30, 0], ids=["in-memory", "lazy"])
def test_query_batch_matches_oracle(toy, budget):
    s = load(toy, memory_budget_bytes=budget)
    index = np.array([5, 0, 8])
    batch = s.query_batch(index)
    lengths = [min(len(toy.tokens[s.cap_ids[i]]), 30) for i in index]
    assert batch.tokens.shape == (3, max(lengths), 8)
    assert batch.teacher is None
    for row, i in enumerate(index):
        raw = toy.tokens[s.cap_ids[i]]
        n = lengths[row]
        np.testing.assert_allclose(batch.tokens[row, :n].numpy(), ref_l2(raw)[:30], atol=1e-6)
        assert batch.tokens[row, n:].abs().sum() == 0
        assert batch.mask[row].sum().item() == n


def test_roberta_leading_axis_is_squeezed(tmp_path):
    toy = write_toy(tmp_path / "r", roberta_leading_axis=True, teacher=False)
    s = load(toy)
    batch = s.query_batch(np.array([0]))
    raw = toy.tokens[s.cap_ids[0]]
    np.testing.assert_allclose(batch.tokens[0, :min(len(raw), 30)].numpy(), ref_l2(raw)[:30],
                               atol=1e-6)


def test_teacher_shorter_than_student_is_an_error(toy):
    # vidB has 140 student frames (128 after sampling) but only 70 teacher frames; without
    # "teacher_length" the reference would crash on the shape (docs/methods.md §1.3 step 5).
    with pytest.raises(ValueError) as err:
        load(toy, requires=frozenset({"teacher"}))
    assert "vidB" in str(err.value) and toy.clip_video.name in str(err.value)


@pytest.mark.parametrize("budget", [4 << 30, 0], ids=["in-memory", "lazy"])
def test_teacher_length_resampling(toy, budget):
    s = load(toy, requires=frozenset({"teacher", "teacher_length"}), memory_budget_bytes=budget)
    # student lengths: min(n, T_teacher) then ≤128: A 5 (T 9), B 70, C 40, D 1, E 128 (T 200)
    assert s.frame_counts.tolist() == [5, 70, 40, 1, 128]
    batch = s.video_batch(np.arange(5), teacher=True)
    for v, video in enumerate(s.video_ids):
        raw, teacher = toy.frames[video], toy.teacher_frames[video]
        student = ref_l2(ref_uniform_sampling(ref_uniform_sampling(raw, len(teacher)), 128))
        n = len(student)
        np.testing.assert_allclose(batch.frames[v, :n].numpy(), student, atol=1e-6)
        expected_teacher = ref_uniform_sampling(ref_uniform_sampling(teacher, 128), n)  # no L2
        np.testing.assert_allclose(batch.teacher_frames[v, :n].numpy(), expected_teacher, atol=1e-6)
        assert batch.teacher_frames[v, n:].abs().sum() == 0
    queries = s.query_batch(np.array([1, 0]), teacher=True)
    np.testing.assert_array_equal(queries.teacher.numpy(),
                                  np.stack([toy.teacher_text[s.cap_ids[1]], toy.teacher_text[s.cap_ids[0]]]))
    # without asking, no teacher tensors
    assert s.query_batch(np.array([0])).teacher is None
    assert s.video_batch(np.array([0])).teacher_frames is None


@pytest.mark.parametrize("budget", [4 << 30, 0], ids=["in-memory", "lazy"])
def test_longer_teacher_first_n_or_binned(tmp_path, budget):
    # hand-made teacher: 6 frames whose values are their indices, student 4 frames
    toy = write_toy(tmp_path / "r", splits={"train": {"vidA": (4, 1), "vidB": (3, 1)}},
                    teacher_lengths={"vidA": 6})
    with h5py.File(toy.clip_video, "a") as h5:
        del h5["vidA"]
        h5["vidA"] = np.repeat(np.arange(6, dtype=np.float32)[:, None], 4, axis=1)
    expected = {
        # ICCV collate: the first 4 teacher frames
        "first_n": [0.0, 1.0, 2.0, 3.0],
        # §1.3 step 1 binning 6 -> 4: bounds round(k·6/4) = 0, 2, 3, 4, 6 -> 5 (ties to even,
        # clipped to n - 1): mean(0, 1), 2, 3, 4; the last frame is never averaged in
        "bin": [0.5, 2.0, 3.0, 4.0],
    }
    for rule, requires in (("first_n", {"teacher", "teacher_first_n"}), ("bin", {"teacher"})):
        s = load(toy, requires=frozenset(requires), memory_budget_bytes=budget)
        batch = s.video_batch(np.array([0, 1]), teacher=True)
        assert batch.teacher_frames.shape == (2, 4, 4)
        np.testing.assert_array_equal(batch.teacher_frames[0, :, 0].numpy(), expected[rule])
        assert (batch.teacher_frames[0] == batch.teacher_frames[0, :, :1]).all()
        # equal lengths: both rules keep the teacher as it is
        np.testing.assert_array_equal(batch.teacher_frames[1, :3].numpy(), toy.teacher_frames["vidB"])
    # without "teacher" there is nothing to align: the rule has no effect
    plain = load(toy, requires=frozenset({"teacher_first_n"}))
    assert plain.video_batch(np.array([0])).teacher_frames is None


def test_teacher_text_hash_key_fallback(tmp_path):
    toy = write_toy(tmp_path / "r", clip_text_hash_keys=True)
    s = load(toy, split="test", requires=frozenset({"teacher"}))
    got = s.query_batch(np.arange(s.num_queries), teacher=True).teacher.numpy()
    np.testing.assert_array_equal(got, np.stack([toy.teacher_text[c] for c in s.cap_ids]))


def test_teacher_not_opened_without_requirement(toy, tmp_path):
    copy = toy.copy(tmp_path / "c")
    copy.clip_video.unlink()
    copy.clip_text.unlink()
    assert load(copy, requires=frozenset({"clips"})).num_videos == 5


def test_moments_resolution(toy, tmp_path):
    copy = toy.copy(tmp_path / "c")
    rows = [(c, 1.0, 3.0, 10.0) for c, _ in copy.captions["test"]]
    rows[0] = (rows[0][0], 4.0, 0.5, 10.0)          # reversed span -> swapped
    rows[1] = (rows[1][0], -1.0, 12.0, 10.0)        # clipped to the video
    explicit = write_moments_file(tmp_path / "m.jsonl", rows)
    s = load(copy, "test", moments=explicit)
    assert s.mv.tolist() == [0.35, 1.0, 0.2, 0.2, 0.2, 0.2]
    assert s.mv.dtype == np.float64
    # a table covering none of train's queries leaves train without M/V
    assert load(copy, "train", moments=explicit).mv is None
    # the layout's own table is used when no path is given
    write_moments_file(copy.text_dir / "toy_moments.jsonl",
                       [(c, 0.0, 1.0, 3.0) for c, _ in copy.captions["val"]])
    assert load(copy, "val").mv.tolist() == [0.333333] * 3
    # explicit path wins over the layout file
    assert load(copy, "test", moments=explicit).mv[0] == 0.35


def test_builtin_moments_only_for_real_known_collections(tmp_path):
    table = builtin_moments("charades")
    videos = list(dict.fromkeys(c.split("#", 1)[0] for c in table.cap_ids))[:2]
    counts = {v: sum(1 for c in table.cap_ids if c.startswith(v + "#")) for v in videos}
    toy = write_toy(tmp_path / "real", collection="charades", teacher=False,
                    splits={"test": {v: (4, counts[v]) for v in videos}, "train": {"ZZZZZ": (3, 1)}})
    s = load_split(toy.root, "charades", "test", visual_feature=VISUAL)
    expected = table.select(s.cap_ids).mv()
    np.testing.assert_array_equal(s.mv, expected)
    assert load_split(toy.root, "charades", "train", visual_feature=VISUAL).mv is None
    # the same collection marked synthetic must not pick up the real table
    (toy.dir / "SYNTHETIC").write_text(json.dumps({"profile": "charades", "seed": 0}))
    s = load_split(toy.root, "charades", "test", visual_feature=VISUAL)
    assert s.mv is None and s.synthetic is True
    assert s.synthetic_info == {"profile": "charades", "seed": 0}


def test_relevance_labels(toy, tmp_path):
    path = tmp_path / "gt.jsonl"
    rows = [{"query_id": "vidH#enc#0", "caption": "x", "gt_video_ids": ["vidH", "vidJ"]},
            {"query_id": "vidJ#enc#0", "caption": "y", "gt_video_ids": ["vidJ"]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = load(toy, "test", relevance=path)
    assert [r.tolist() for r in s.relevance] == [[0, 2], [0], [0], [1], [1], [2]]
    assert load(toy, "train", relevance=path).relevance is None


def test_loader_batches(toy):
    s = load(toy, requires=frozenset({"clips"}))
    generator = torch.Generator().manual_seed(3)
    batches = list(train_batches(s, 2, generator, sort_by="frames"))
    assert len(batches) == steps_per_epoch(s, 2) == 3
    seen = []
    for batch in batches:
        frames = batch.videos.frame_mask.sum(1)
        assert torch.all(frames[:-1] >= frames[1:])                        # descending frames
        labels = batch.query_video
        assert labels.dtype == torch.int64
        assert torch.all(labels[1:] >= labels[:-1])                        # contiguous, in order
        counts = torch.bincount(labels, minlength=len(frames))
        assert batch.queries.tokens.shape[0] == counts.sum()
        assert batch.videos.clips.shape == (len(frames), 32, 6)
        # each query's tokens belong to its own video's captions
        for q in range(len(labels)):
            n = int(batch.queries.mask[q].sum())
            tok = batch.queries.tokens[q, :n].numpy()
            match = [c for c in s.cap_ids
                     if len(ref_l2(toy.tokens[c])[:30]) == n
                     and np.allclose(ref_l2(toy.tokens[c])[:30], tok, atol=1e-6)]
            assert len(match) == 1
            own = s.video_ids.index(match[0].split("#")[0])
            own_frames = s.video_batch(np.array([own])).frames[0]
            n_frames = int(frames[labels[q]])
            assert own_frames.shape[0] == n_frames
            assert torch.equal(batch.videos.frames[labels[q], :n_frames], own_frames)
            seen.append(match[0])
        assert batch.queries.teacher is None and batch.videos.teacher_frames is None
    assert sorted(seen) == sorted(s.cap_ids)                               # every query once


def test_loader_query_video_labels_point_at_own_video(toy):
    s = load(toy)
    for videos in epoch_order(s, 3, torch.Generator().manual_seed(1), "captions"):
        batch = collate(s, videos)
        query_index, _ = s.queries_of(videos)
        assert (s.query_video[query_index] == videos[batch.query_video.numpy()]).all()
        assert np.all(np.diff(s.caption_counts[videos]) <= 0)               # descending captions


@pytest.mark.parametrize("sort_by", ["captions", "frames"])
def test_loader_sort_is_stable(tmp_path, sort_by):
    # 60 videos with many ties: an unstable sort (introsort above 16 items) would reorder them
    rng = np.random.default_rng(0)
    videos = {f"v{i:02d}": (int(rng.integers(1, 4)), int(rng.integers(1, 3))) for i in range(60)}
    toy = write_toy(tmp_path / "r", splits={"train": videos}, d_q=2, d_v=2, teacher=False)
    s = load(toy)
    permutation = torch.randperm(60, generator=torch.Generator().manual_seed(4)).numpy()
    (batch,) = epoch_order(s, 60, torch.Generator().manual_seed(4), sort_by)
    key = s.caption_counts if sort_by == "captions" else s.frame_counts
    expected = sorted(permutation.tolist(), key=lambda v: key[v], reverse=True)  # Python stable sort
    assert batch.tolist() == expected


def test_loader_is_deterministic_given_seed(toy):
    s = load(toy)

    def order(seed):
        return [b.tolist() for b in epoch_order(s, 2, torch.Generator().manual_seed(seed), "frames")]

    assert order(5) == order(5)
    assert any(order(5) != order(seed) for seed in range(6, 12))
    a = [b.queries.tokens for b in train_batches(s, 2, torch.Generator().manual_seed(9))]
    b = [b.queries.tokens for b in train_batches(s, 2, torch.Generator().manual_seed(9))]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_loader_teacher_fields(toy):
    s = load(toy, requires=frozenset({"teacher", "teacher_length"}))
    for batch in train_batches(s, 2, torch.Generator().manual_seed(0), sort_by="captions"):
        assert batch.queries.teacher.shape == (len(batch.query_video), 4)
        t = batch.videos.teacher_frames
        assert t.shape[:2] == batch.videos.frames.shape[:2] and t.shape[2] == 4
        assert (t.abs().sum(-1)[batch.videos.frame_mask == 0] == 0).all()


def test_steps_per_epoch():
    class Fake:
        num_videos = 257
    assert steps_per_epoch(Fake, 128) == 3
    with pytest.raises(ValueError, match="batch_size must be positive"):
        steps_per_epoch(Fake, 0)


def test_loads_generated_tiny_collection(tiny_root):
    s = load_split(tiny_root, "tvr", "train", requires=ALL)
    assert s.synthetic is True
    assert s.mv is not None and s.mv.shape == (s.num_queries,)   # the generator writes moments
    assert ((s.mv >= 0) & (s.mv <= 1)).all()
    assert s.dims.teacher is not None
    batch = next(train_batches(s, 4, torch.Generator().manual_seed(0)))
    assert batch.videos.frames.shape[0] == min(4, s.num_videos)
    assert batch.videos.frames.shape[2] == s.dims.video


@pytest.mark.skipif(not ANNOTATIONS.is_dir(), reason="shared annotation files are absent")
@pytest.mark.parametrize("collection,gt,listed", [
    ("tvr", "tvr/tvrdenseval_v.gt.jsonl", 8097),
    ("activitynet", "activitynet/activitynetdenseval.gt.jsonl", 15753),
    ("charades", "charades/charadesdenseval.gt.jsonl", 3720)])
def test_real_dense_labels_attach_to_the_real_test_queries(collection, gt, listed):
    cap_ids = builtin_moments(collection).cap_ids
    video_ids, query_video = Captions(None, cap_ids, [""] * len(cap_ids)).video_order()
    relevance = relevance_for_split(ANNOTATIONS / gt, cap_ids, video_ids, query_video)
    labels = read_relevance(ANNOTATIONS / gt)
    assert len(labels) == listed and len(relevance) == len(cap_ids)
    for i in np.random.default_rng(0).choice(len(cap_ids), 200, replace=False):
        expected = labels.get(cap_ids[i], [video_ids[query_video[i]]])
        assert [video_ids[v] for v in relevance[i]] == list(dict.fromkeys(expected))
        assert query_video[i] in relevance[i]
