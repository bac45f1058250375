"""Bad-input catalogue: each damaged copy raises one DataError naming the file and the key."""
import ast
import json

import h5py
import numpy as np
import pytest
from data_fixtures import VISUAL, write_moments_file, write_toy

from benchmark.data.errors import DataError
from benchmark.data.split import load_split


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_toy(tmp_path_factory.mktemp("pristine") / "root")


@pytest.fixture
def toy(pristine, tmp_path):
    return pristine.copy(tmp_path / "copy")


def load(toy, split="train", **kw):
    return load_split(toy.root, toy.collection, split, visual_feature=VISUAL, **kw)


def fails(toy, *needles, split="train", **kw):
    with pytest.raises(DataError) as err:
        load(toy, split, **kw)
    message = str(err.value)
    for needle in needles:
        assert str(needle) in message, f"{needle!r} not in {message!r}"
    return message


def frame_row(toy, frame_id):
    return (toy.bigfile / "id.txt").read_text().split().index(frame_id)


def poke_row(toy, row, value):
    data = np.fromfile(toy.bigfile / "feature.bin", dtype=np.float32).reshape(-1, 6)
    data[row, 2] = value
    data.tofile(toy.bigfile / "feature.bin")


def test_pristine_copy_loads(toy):
    assert load(toy, requires=frozenset({"clips"})).num_videos == 5


# --- BigFile ---------------------------------------------------------------------------------

def test_truncated_feature_bin(toy):
    path = toy.bigfile / "feature.bin"
    path.write_bytes(path.read_bytes()[:-8])
    fails(toy, path, "bytes", "shape.txt")


def test_shape_disagrees_with_ids(toy):
    ids = toy.bigfile / "id.txt"
    ids.write_text(" ".join(ids.read_text().split()[:-1]))
    fails(toy, ids, "ids")


def test_bad_shape_line(toy):
    (toy.bigfile / "shape.txt").write_text("lots of rows\n")
    fails(toy, toy.bigfile / "shape.txt", "<N_rows> <dim>")


def test_missing_bigfile_piece(toy):
    (toy.bigfile / "video2frames.txt").unlink()
    fails(toy, toy.bigfile / "video2frames.txt", "not found")


def test_missing_bigfile_directory(toy):
    with pytest.raises(DataError) as err:
        load_split(toy.root, toy.collection, "train", visual_feature="other")
    assert str(toy.dir / "FeatureData" / "other") in str(err.value)
    assert "not found" in str(err.value)


def test_frame_id_missing_from_id_txt(toy):
    ids = toy.bigfile / "id.txt"
    ids.write_text(ids.read_text().replace("vidC_7", "vidX_7"))
    fails(toy, ids, "vidC_7", "vidC")


def test_video_missing_from_video2frames(toy):
    path = toy.bigfile / "video2frames.txt"
    mapping = ast.literal_eval(path.read_text())
    del mapping["vidD"]
    path.write_text(repr(mapping))
    fails(toy, path, "vidD", "no entry")


def test_zero_frame_video(toy):
    path = toy.bigfile / "video2frames.txt"
    mapping = ast.literal_eval(path.read_text())
    mapping["vidA"] = []
    path.write_text(repr(mapping))
    fails(toy, path, "vidA", "zero frames")


def test_video2frames_is_never_executed(toy, tmp_path):
    marker = tmp_path / "pwned"
    path = toy.bigfile / "video2frames.txt"
    path.write_text(f"__import__('pathlib').Path({str(marker)!r}).touch()")
    fails(toy, path, "dict literal")
    assert not marker.exists()


@pytest.mark.parametrize("budget", [4 << 30, 0], ids=["in-memory", "lazy"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_in_used_frame(toy, budget, value):
    poke_row(toy, frame_row(toy, "vidE_299"), value)     # the very last frame (never averaged)
    fails(toy, toy.bigfile / "feature.bin", "vidE", "vidE_299", memory_budget_bytes=budget)


def test_nan_in_other_split_is_not_used(toy):
    poke_row(toy, frame_row(toy, "vidH_0"), np.nan)      # a test-split video
    assert load(toy, "train").num_videos == 5
    fails(toy, "vidH_0", "vidH", split="test")


# --- query features --------------------------------------------------------------------------

def test_cap_id_without_roberta_feature(toy):
    with h5py.File(toy.roberta, "a") as h5:
        del h5["vidB#enc#1"]
    fails(toy, toy.roberta, "vidB#enc#1", "missing")


def test_missing_roberta_file(toy):
    toy.roberta.unlink()
    fails(toy, toy.roberta, "not found")


def test_query_token_dims_inconsistent(toy):
    with h5py.File(toy.roberta, "a") as h5:
        del h5["vidE#enc#2"]
        h5["vidE#enc#2"] = np.zeros((4, 9), np.float32)
    fails(toy, toy.roberta, "vidE#enc#2", "9")


def test_query_array_rank(toy):
    with h5py.File(toy.roberta, "a") as h5:
        del h5["vidA#enc#0"]
        h5["vidA#enc#0"] = np.zeros((2, 3, 8), np.float32)
    fails(toy, toy.roberta, "vidA#enc#0", "axes")


def test_nan_in_used_token(toy):
    key = "vidC#enc#0"
    with h5py.File(toy.roberta, "a") as h5:
        x = h5[key][...]
        x[min(len(x), 30) - 1, 0] = np.nan
        del h5[key]
        h5[key] = x
    fails(toy, toy.roberta, key, "NaN")


def test_nan_beyond_truncation_is_unused(tmp_path):
    toy = write_toy(tmp_path / "r", token_lengths=(35, 35), teacher=False)
    key = "vidA#enc#1"
    with h5py.File(toy.roberta, "a") as h5:
        x = h5[key][...]
        x[32, 0] = np.nan                                # token 33 is cut by max_query_tokens=30
        del h5[key]
        h5[key] = x
    assert load(toy).num_queries == 12
    fails(toy, key, max_query_tokens=33)


# --- caption files ---------------------------------------------------------------------------

def test_missing_caption_file(toy):
    toy.caption_file("val").unlink()
    fails(toy, toy.caption_file("val"), "not found", split="val")


def test_caption_line_without_text(toy):
    path = toy.caption_file("train")
    lines = path.read_text().splitlines()
    lines[3] = "vidB#enc#1"
    path.write_text("\n".join(lines) + "\n")
    fails(toy, path, "line 4", "<cap_id> <text>")


def test_duplicate_cap_id(toy):
    path = toy.caption_file("train")
    path.write_text(path.read_text() + "vidA#enc#0 again\n")
    fails(toy, path, "vidA#enc#0", "twice")


def test_unknown_requirement(toy):
    fails(toy, "unknown requirement", "clipz", requires=frozenset({"clipz"}))


# --- teacher ---------------------------------------------------------------------------------

def test_missing_teacher_video_file(toy):
    toy.clip_video.unlink()
    fails(toy, toy.clip_video, "'teacher'", "not found", requires=frozenset({"teacher"}))


def test_missing_teacher_file_names_teacher_length(toy):
    toy.clip_video.unlink()
    fails(toy, toy.clip_video, "'teacher_length'", requires=frozenset({"teacher_length"}))


def test_missing_teacher_text_file(toy):
    toy.clip_text.unlink()
    fails(toy, toy.clip_text, "'teacher'", requires=frozenset({"teacher"}))


def test_teacher_video_key_missing(toy):
    with h5py.File(toy.clip_video, "a") as h5:
        del h5["vidC"]
    fails(toy, toy.clip_video, "vidC", requires=frozenset({"teacher"}))


def test_teacher_text_vs_video_dim(toy):
    with h5py.File(toy.clip_text, "a") as h5:
        for key in list(h5):
            x = h5[key][...]
            del h5[key]
            h5[key] = np.concatenate([x, x], axis=1)
    fails(toy, toy.clip_text, toy.clip_video, "differs", requires=frozenset({"teacher"}))


def test_teacher_text_dims_inconsistent(toy):
    with h5py.File(toy.clip_text, "a") as h5:
        del h5["vidD#enc#1"]
        h5["vidD#enc#1"] = np.zeros((1, 7), np.float32)
    fails(toy, toy.clip_text, "vidD#enc#1", requires=frozenset({"teacher"}))


def test_nan_in_teacher_frames(toy):
    with h5py.File(toy.clip_video, "a") as h5:
        x = h5["vidE"][...]
        x[-1, 1] = np.inf
        del h5["vidE"]
        h5["vidE"] = x
    fails(toy, toy.clip_video, "vidE", "NaN or Inf", requires=frozenset({"teacher"}))


def test_nan_in_teacher_text(toy):
    with h5py.File(toy.clip_text, "a") as h5:
        h5["vidB#enc#2"][0, 0] = np.nan
    fails(toy, toy.clip_text, "vidB#enc#2", requires=frozenset({"teacher"}))


def test_teacher_shorter_than_student(tmp_path):
    toy = write_toy(tmp_path / "r", teacher_lengths={"vidC": 39})
    fails(toy, toy.clip_video, "vidC", "shorter", requires=frozenset({"teacher"}))
    # with teacher_length the student is first resampled to 39 frames, which aligns
    assert load(toy, requires=frozenset({"teacher", "teacher_length"})).frame_counts[2] == 39


# --- moments and relevance -------------------------------------------------------------------

def test_partial_moments(toy, tmp_path):
    rows = [(c, 0.0, 1.0, 5.0) for c, _ in toy.captions["train"]]
    del rows[4]
    path = write_moments_file(tmp_path / "m.jsonl", rows)
    fails(toy, path, toy.captions["train"][4][0], "covers 11 of 12", moments=path)


def test_partial_moments_in_layout_file(toy):
    rows = [(c, 0.0, 1.0, 5.0) for c, _ in toy.captions["test"][:-1]]
    write_moments_file(toy.text_dir / "toy_moments.jsonl", rows)
    fails(toy, "toy_moments.jsonl", toy.captions["test"][-1][0], split="test")


def test_moments_bad_rows(toy, tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"cap_id": "vidA#enc#0", "ts": [0, 1]}) + "\n")
    fails(toy, path, "vidA#enc#0", "'duration' missing", moments=path)
    write_moments_file(path, [("vidA#enc#0", 0, 1, 0.0)])
    fails(toy, path, "vidA#enc#0", "positive", moments=path)
    path.write_text("{not json\n")
    fails(toy, path, "line 1", moments=path)


def _relevance(tmp_path, rows):
    path = tmp_path / "gt.jsonl"
    path.write_text("".join(json.dumps({"query_id": q, "gt_video_ids": v}) + "\n" for q, v in rows))
    return path


def test_relevance_unknown_query(toy, tmp_path):
    path = _relevance(tmp_path, [("vidH#enc#0", ["vidH"]), ("vidQ#enc#0", ["vidH"])])
    fails(toy, path, "vidQ#enc#0", split="test", relevance=path)


def test_relevance_unknown_video(toy, tmp_path):
    path = _relevance(tmp_path, [("vidH#enc#0", ["vidH", "vidZ"])])
    fails(toy, path, "vidH#enc#0", "vidZ", split="test", relevance=path)


def test_relevance_without_own_video(toy, tmp_path):
    path = _relevance(tmp_path, [("vidH#enc#0", ["vidI"])])
    fails(toy, path, "vidH#enc#0", "own video", split="test", relevance=path)


def test_query_file_is_not_hdf5(toy):
    toy.roberta.write_bytes(b"not an hdf5 file at all")
    fails(toy, toy.roberta, "HDF5")
